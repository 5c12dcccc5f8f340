"""An over-long answer is dropped and counted before training, for a model without ``filter_too_long`` (issue 14, part 3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.runner.lengths import drop_over_long_text
from mmalign_core.types import PreferencePair, SFTExample


class WordModel:
    """A model whose tokens are words, with a length budget."""

    max_length = 2000

    def __init__(self) -> None:
        self.calls = 0

    def answer_tokens(self, text: str) -> list[str]:
        self.calls += 1
        return text.split()


def _pair(i: int, chosen: str) -> PreferencePair:
    return PreferencePair(id=f"p{i}", prompt="Describe the picture.", chosen=chosen, rejected="A short rejected answer.")


def test_over_long_text_is_dropped_and_short_text_never_tokenized() -> None:
    model = WordModel()
    pairs = [_pair(0, "A red square."), _pair(1, "word " * 10_000), _pair(2, "A blue circle."),
             _pair(3, "x" * 50_000)]  # one 50,000-character word: 1 token here, so it fits this model
    kept, dropped = drop_over_long_text(model, pairs)
    assert dropped == ["p1"]
    assert [p.id for p in kept] == ["p0", "p2", "p3"] and kept[1].id == "p2" and [p.id for p in kept[0:2]] == ["p0", "p2"]
    assert model.calls == 2 * 3  # only p1 and p3 are long enough to tokenize: prompt + chosen + rejected each
    sft = [SFTExample(id="s", prompt="Q", response="w " * 3000)]
    assert drop_over_long_text(model, sft)[1] == ["s"]


def test_models_without_a_budget_or_tokenizer_are_left_alone() -> None:
    pairs = [_pair(0, "word " * 10_000)]

    class NoBudget(WordModel):
        max_length = None

    assert drop_over_long_text(NoBudget(), pairs) == (pairs, [])
    assert drop_over_long_text(object(), pairs) == (pairs, [])


@pytest.mark.slow
def test_a_run_with_a_50000_character_answer_trains_and_counts_it(tmp_path: Path, mmalign_cache: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mmalign_tiny")
    pytest.importorskip("mmalign_datasets")
    from mmalign_core.manager import get_plugins
    from mmalign_core.runner.run import run_spec
    from mmalign_core.spec import check_spec
    from mmalign_core.testing import make_image

    rows = []
    for i in range(4):
        make_image(i).save(tmp_path / f"{i}.png")
        chosen = ("The square is red. " * 2700) if i == 2 else f"The square {i} is red."  # ~51,000 characters
        rows.append({"id": f"q{i}", "prompt": "What colour is the square?", "chosen": chosen,
                     "rejected": f"The square {i} is blue.", "images": [f"{i}.png"]})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "name": "long", "seed": 1, "model": {"name": "tiny-llava"},
        "stages": [{"type": "align", "data": {"name": "local", "config": {"path": str(data), "format": "canonical"}},
                    "loss": {"name": "dpo"}, "train": {"steps": 2, "batch_size": 2, "log_every": 1}}],
    }
    validated, problems = check_spec(spec, get_plugins())
    assert validated is not None, problems
    out = run_spec(validated, output_dir=tmp_path / "run")
    manifest = json.loads((out / "manifest.json").read_text())
    data_info = manifest["stages"][0]["data"]
    assert data_info["dropped_too_long"] == 1 and data_info["n_examples"] == 3
    assert "dropped 1 samples longer than the model's max_length: ['q2']" in (out / "run.log").read_text()

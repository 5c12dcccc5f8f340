"""The example third-party plugin (tests/fixtures/plugins/mmalign-example-eval), in-process."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmalign_core.manager import create_plugins
from mmalign_core.protocols import Context

PACKAGE = Path(__file__).resolve().parents[1] / "fixtures" / "plugins" / "mmalign-example-eval"


@pytest.fixture()
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE))
    return create_plugins(("example-eval", "mmalign_example_eval.plugin"))


class FakeModel:
    """Answers with a fixed list of strings and records the requests."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []

    def generate(self, requests, *, max_new_tokens=64, batch_size=16, **kwargs):
        self.requests.extend(requests)
        return self.answers[: len(requests)]


def test_registration_imports_nothing_heavy(example):
    assert example.info("example-eval").status == "ok"
    entry = example.resolve("evaluator", "answer-length")
    assert entry.requires == {"generate"} and entry.plugin == "example-eval"


def test_answer_length_counts_words(example, tmp_path):
    entry = example.resolve("evaluator", "answer-length")
    evaluator = entry.build({"prompts": ["a", "b", "c"], "max_new_tokens": 4})
    model = FakeModel(["two words", "", "one two three four"])
    result = evaluator.evaluate(model, Context(output_dir=tmp_path))
    assert set(result.metrics) == set(entry.metrics)
    assert result.metrics["mean_answer_words"] == pytest.approx(2.0)
    assert result.metrics["empty_answer_rate"] == pytest.approx(1 / 3)
    assert result.n == 3 and result.records[2]["words"] == 4
    image = model.requests[0].images[0].load()
    assert image.size == (32, 32)


def test_scaled_dpo_is_dpo_times_scale(example):
    torch = pytest.importorskip("torch")
    from mmalign_core.protocols import LossInputs, PairLogps

    def logps(chosen, rejected, grad=False):
        c = torch.tensor(chosen, requires_grad=grad)
        r = torch.tensor(rejected, requires_grad=grad)
        ones = torch.ones(len(chosen))
        return PairLogps(chosen=c, rejected=r, chosen_tokens=ones, rejected_tokens=ones)

    policy = logps([-1.0, -2.0], [-3.0, -1.5], grad=True)
    inputs = LossInputs(policy=policy, reference=logps([-1.5, -2.0], [-2.0, -2.0]), pairs=[])
    entry = example.resolve("loss", "scaled-dpo")
    out = entry.build({"beta": 0.5, "scale": 3.0})(inputs)
    margins = [0.5 * ((-1.0 + 1.5) - (-3.0 + 2.0)), 0.5 * ((-2.0 + 2.0) - (-1.5 + 2.0))]
    expected = 3.0 * sum(math.log1p(math.exp(-m)) for m in margins) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    assert policy.chosen.grad is not None and torch.all(policy.chosen.grad < 0)
    assert out.metrics["rewards/accuracy"] == pytest.approx(0.5)

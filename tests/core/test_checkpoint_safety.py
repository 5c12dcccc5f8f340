"""Nothing is unpickled from a run folder: trainer states and reward heads load with ``weights_only=True``."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class _Planted:
    """A pickle that, when unpickled without restrictions, creates a marker file (stands for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 4, "optimizer": {}, "scheduler": {}, "rng": _Planted(marker)}, path)
    # the planted file really runs code when loaded the old way
    torch.save({"step": 4, "rng": _Planted(marker.with_suffix(".control"))}, path.parent / "control.pt")


def test_planted_trainer_state_is_refused_and_not_run(tmp_path: Path) -> None:
    from mmalign_core.errors import RunError
    from mmalign_core.runner.training import TRAINER_STATE, load_trainer_state

    marker = tmp_path / "pwned"
    state = tmp_path / "checkpoints" / "step-0000004" / TRAINER_STATE
    _plant(state, marker)
    torch.load(state.parent / "control.pt", weights_only=False)  # the old call: the code runs
    assert marker.with_suffix(".control").exists()
    with pytest.raises(RunError) as err:
        load_trainer_state(state)
    assert not marker.exists(), "the planted pickle ran"
    assert str(state) in str(err.value) and "refusing" in str(err.value)


def test_trainer_state_round_trips_under_weights_only(tmp_path: Path) -> None:
    """The state mmalign writes (optimizer, schedule, every generator, the logging window) loads under weights_only."""
    from mmalign_core.runner import training

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.99))
    p.grad = torch.ones(3)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    rng = training.rng_state()
    path = tmp_path / training.TRAINER_STATE
    torch.save({"step": 2, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng,
                "log_window": {"sums": {"loss": 1.25}, "counts": {"loss": 2}}}, path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = training.load_trainer_state(path)
    training.set_rng_state(state["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert state["log_window"] == {"sums": {"loss": 1.25}, "counts": {"loss": 2}}
    opt.load_state_dict(state["optimizer"])


def test_planted_reward_head_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("mmalign_online")
    from mmalign_online.reward import load_head_state

    marker = tmp_path / "pwned"
    head = tmp_path / "head.pt"
    torch.save({"weight": _Planted(marker)}, head)
    with pytest.raises(ValueError, match="refusing to load the reward head"):
        load_head_state(head)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(4, 1).state_dict(), good)
    assert set(load_head_state(good)) == {"weight", "bias"}


def test_image_ref_refuses_a_decompression_bomb_cleanly(tmp_path: Path) -> None:
    import struct
    import zlib

    from mmalign_core.errors import MmalignError
    from mmalign_core.types import ImageRef, ImageTooLarge

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 14000, 14000, 1, 0, 0, 0, 0)) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    for ref in (ImageRef(bomb), ImageRef(tmp_path / "bomb.png")):
        with pytest.raises(ImageTooLarge, match="decompression bomb") as err:
            ref.load()
        assert isinstance(err.value, MmalignError)

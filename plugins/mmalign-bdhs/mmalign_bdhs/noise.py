"""Forward-diffusion image noise (paper Eq. 8/9; POVID's ``add_diffusion_noise``).

beta_k = sigmoid(-6 + 12k/1000) * (0.5e-2 - 1e-5) + 1e-5 for k = 0..999 ("paper"), or with the argument
from ``linspace(-6, 6, 1000)`` as the reference code builds it ("linspace"); alpha_bar_N = prod_{k<=N} (1 - beta_k)
(0-based, inclusive); x~ = sqrt(alpha_bar_N) * x + sqrt(1 - alpha_bar_N) * eps on the [0, 1] pixels, before the
processor. ``pixels="clamp"`` clips to [0, 1]; ``"povid_exact"`` converts like torchvision's ``ToPILImage``
(``mul(255).byte()``), so out-of-range values wrap around as in POVID's code.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

STEPS = 1000


@functools.lru_cache(maxsize=4)
def alpha_bar(schedule: str = "linspace") -> np.ndarray:
    """alpha_bar_N for N = 0..999 (float64)."""
    if schedule == "linspace":
        arg = np.linspace(-6.0, 6.0, STEPS)
    elif schedule == "paper":
        arg = -6.0 + 12.0 * np.arange(STEPS) / STEPS
    else:
        raise ValueError(f"unknown noise schedule {schedule!r}")
    # float32 like the reference code's torch tensors
    betas = (1.0 / (1.0 + np.exp(-arg.astype(np.float32)))) * np.float32(0.5e-2 - 1e-5) + np.float32(1e-5)
    return np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32).astype(np.float64)


def noise_coefficients(step: int, schedule: str = "linspace") -> tuple[float, float]:
    """(sqrt(alpha_bar_N), sqrt(1 - alpha_bar_N)): the signal scale and the noise standard deviation at step N."""
    if not 0 <= step < STEPS:
        raise ValueError(f"noise step must be in [0, {STEPS - 1}], got {step}")
    a = float(alpha_bar(schedule)[step])
    return math.sqrt(a), math.sqrt(1.0 - a)


def add_noise(image: Any, step: int, rng: np.random.Generator, *, schedule: str = "linspace", pixels: str = "clamp") -> Any:
    """A noised copy of a PIL image (RGB) at diffusion step ``step``; ``rng`` draws eps."""
    import torch
    from PIL import Image

    signal, std = noise_coefficients(step, schedule)
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    eps = rng.standard_normal(x.shape).astype(np.float32)
    noisy = np.float32(signal) * x + np.float32(std) * eps
    if pixels == "clamp":
        noisy = np.clip(noisy, 0.0, 1.0)
    elif pixels != "povid_exact":
        raise ValueError(f"unknown pixel conversion {pixels!r}")
    # ToPILImage: pic.mul(255).byte() -- truncation, and wrap-around outside [0, 255] when not clamped
    as_bytes = torch.from_numpy(noisy).mul(255).to(torch.int64).remainder(256).to(torch.uint8).numpy()
    return Image.fromarray(as_bytes, mode="RGB")

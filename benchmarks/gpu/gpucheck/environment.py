"""Part ``environment``: package versions (and where each was imported from), the device, attention kernels."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .record import GIB, Recorder
from .sizes import Profile

PACKAGES = ("torch", "transformers", "tokenizers", "huggingface_hub", "accelerate", "peft", "trl", "datasets", "pyarrow",
            "pydantic", "pydantic_core", "pluggy", "safetensors", "numpy", "pillow", "regex", "mmalign", "mmalign-hf")


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = None
            continue
        out[name] = {"version": dist.version, "location": str(dist.locate_file(""))}
    return out


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / GIB, 1),
                    multiprocessors=props.multi_processor_count, count=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def attention_kernels() -> dict[str, Any]:
    """Which attention implementations transformers can load here (the correctness part uses sdpa and eager)."""
    import torch
    import transformers.utils as tu

    out: dict[str, Any] = {"eager": True, "sdpa": hasattr(torch.nn.functional, "scaled_dot_product_attention")}
    for name in ("flash_attn_2", "flash_attn_3"):
        probe = getattr(tu, f"is_{name}_available", None)
        out[name.replace("attn", "attention")] = None if probe is None else bool(probe())
    return out


def imports() -> dict[str, Any]:
    """Each package the check needs, imported: an error here explains a part's failure later."""
    out: dict[str, Any] = {}
    for module in ("pydantic", "pluggy", "transformers", "peft", "accelerate", "datasets", "trl", "mmalign_core", "mmalign_hf",
                   "mmalign_bdhs", "mmalign_losses", "mmalign_shapes", "mmalign_tiny"):
        try:
            __import__(module)
            out[module] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded
            out[module] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def run(profile: Profile, rec: Recorder, scratch: Path) -> None:
    rec.step("python", lambda: {"version": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
                                "cpus": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH", "")})
    found = rec.step("versions", versions) or {}
    dev = rec.step("device", device_info) or {}
    rec.step("attention", attention_kernels)
    imported = rec.step("imports", imports) or {}
    rec.check("imports", all(v == "ok" for v in imported.values()), failed={k: v for k, v in imported.items() if v != "ok"})
    if profile.device.startswith("cuda"):
        rec.check("cuda available", bool(dev.get("cuda_available")), device=dev.get("name"))
    rec.check("trl installed", bool(found.get("trl")), version=(found.get("trl") or {}).get("version"))

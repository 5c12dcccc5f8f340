"""Sizes and time budgets of the GPU check: the real profile (one H200) and the CPU dry run.

Both profiles run the same code; only the numbers below differ. To fit the check into its wall-clock
budget, cut sizes here, never parts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CorrectnessSizes:
    families: tuple[str, ...]  # keys of tests/hf/tiny_families.BUILDERS
    # (attention implementation, dtypes checked with it): one load per entry, in float32 first (the reference),
    # then cast to each further dtype ("float32", "bfloat16").
    runs: tuple[tuple[str, tuple[str, ...]], ...]
    new_tokens: int  # greedy tokens per row for the decoding checks


@dataclass(frozen=True)
class LlavaShape:
    """A LLaVA-1.5 architecture (defaults: llava-1.5-7b, CLIP ViT-L/14 at 336 px, 576 image tokens)."""

    vocab: int = 32064
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    max_positions: int = 4096
    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    image_size: int = 336
    patch: int = 14
    vision_feature_layer: int = -2

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


@dataclass(frozen=True)
class DPOSizes:
    batch: int  # pairs per optimizer step (one micro-batch)
    steps: int  # optimizer steps per arm; pairs/s are timed from the end of step 1
    lora_r: int = 16
    lora_alpha: float = 32.0
    lr: float = 1e-5
    gradient_checkpointing: bool = True


@dataclass(frozen=True)
class SamplingSizes:
    prompts: int  # prompts per call
    samples_per_prompt: tuple[int, ...]  # one measurement per value (total samples = prompts x value)
    new_tokens: int
    repeats: int  # timed calls per path (the best is reported); one untimed warm-up call first


@dataclass(frozen=True)
class FSDPSizes:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int  # BPE target of the tiny-llava tokenizer (the corpus is small: the real vocabulary is smaller)
    batch: int
    steps: int
    checkpoint_every: int
    crash_after: int  # the first launch exits hard right after this step's metrics row (a checkpoint precedes it)
    dtype: str


@dataclass(frozen=True)
class Profile:
    name: str
    device: str  # "cuda" or "cpu"
    dtype: str  # training / sampling dtype of the LLaVA-shaped model
    total_seconds: float  # wall-clock budget of run.sh: installs (measured by run.sh) and every part
    budgets: dict[str, float]  # per part, in seconds (unused time carries over to later parts)
    correctness: CorrectnessSizes
    llava: LlavaShape
    dpo: DPOSizes
    sampling: SamplingSizes
    fsdp: FSDPSizes
    trl_bf16: bool = True  # TRL's own mixed-precision flag (autocast); False on CPU
    notes: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


PARTS: tuple[str, ...] = ("environment", "correctness", "dpo", "sampling", "fsdp")

GPU = Profile(
    name="gpu",
    device="cuda",
    dtype="bfloat16",
    total_seconds=345.0,
    budgets={"environment": 15.0, "correctness": 60.0, "dpo": 140.0, "sampling": 45.0, "fsdp": 70.0},
    correctness=CorrectnessSizes(
        families=("llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "idefics3", "paligemma"),
        runs=(("sdpa", ("float32", "bfloat16")), ("eager", ("float32", "bfloat16"))),
        new_tokens=10,
    ),
    llava=LlavaShape(),
    dpo=DPOSizes(batch=8, steps=8),
    sampling=SamplingSizes(prompts=32, samples_per_prompt=(1,), new_tokens=64, repeats=2),
    fsdp=FSDPSizes(hidden=2048, layers=16, heads=16, kv_heads=16, intermediate=5632, vocab=32000, batch=4, steps=6,
                   checkpoint_every=2, crash_after=3, dtype="bfloat16"),
    notes={"fsdp": "LLaMA-1B-like width (hidden 2048, MLP 5632) with 16 layers: about 0.8B parameters in the language model"},
)

DRY = Profile(
    name="dry-run",
    device="cpu",
    dtype="float32",
    total_seconds=600.0,  # generous: a shared CPU; the dry run checks that the code works, not its speed
    budgets={"environment": 60.0, "correctness": 100.0, "dpo": 120.0, "sampling": 80.0, "fsdp": 160.0},
    correctness=CorrectnessSizes(families=("llava", "idefics3"), runs=(("sdpa", ("float32", "bfloat16")), ("eager", ("float32",))), new_tokens=6),
    llava=LlavaShape(vocab=640, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, max_positions=512,
                     vision_hidden=32, vision_intermediate=64, vision_layers=3, vision_heads=2, image_size=56, patch=14),
    dpo=DPOSizes(batch=2, steps=3, lora_r=4, lora_alpha=8.0, lr=1e-4),
    sampling=SamplingSizes(prompts=4, samples_per_prompt=(1,), new_tokens=4, repeats=1),
    fsdp=FSDPSizes(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512, batch=2, steps=4,
                   checkpoint_every=2, crash_after=3, dtype="float32"),
    trl_bf16=False,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (GPU, DRY)}

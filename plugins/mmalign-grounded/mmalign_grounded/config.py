"""Configs of the image-grounded losses and of their image corruption (no torch import).

h(y | m) = log pi(y | m, x) - log pi_ref(y | m, x) for an answer y under image condition m (m the clean
image, m' its corruption), summed over the answer tokens or averaged (``reduction``).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from mmalign_bdhs.config import SourceRef  # BDHS's validated reference to a static base source (light: pydantic only)
from mmalign_core import ComponentConfig

Reduction = Literal["sum", "mean"]
Variant = Literal["naive", "consistent"]


class CropConfig(ComponentConfig):
    """A random crop keeping a fraction of the image area, resized back to the original size (mDPO's default)."""

    kind: Literal["crop"] = "crop"
    keep_area: float = Field(0.2, gt=0, lt=1, description="Fraction of the image area the crop keeps (mDPO: at most 20%).")
    seed: int = Field(0, description="Seed of the crop positions (with the pair id and image index).")

    def label(self) -> str:
        return f"crop{self.keep_area:g}"


class MaskConfig(ComponentConfig):
    """A random rectangle covering a fraction of the image, painted one grey level."""

    kind: Literal["mask"] = "mask"
    mask_area: float = Field(0.5, gt=0, le=1, description="Fraction of the image area the rectangle covers.")
    fill: int = Field(0, ge=0, le=255, description="Grey level of the rectangle (0 black).")
    seed: int = Field(0, description="Seed of the rectangle positions (with the pair id and image index).")

    def label(self) -> str:
        return f"mask{self.mask_area:g}-{self.fill}"


class NoiseConfig(ComponentConfig):
    """Forward-diffusion noise at one step of BDHS's schedule (CHiP's and POVID's corrupted image)."""

    kind: Literal["noise"] = "noise"
    step: int = Field(500, ge=0, le=999, description="Diffusion step N in [0, 999]: x~ = sqrt(a_N) x + sqrt(1 - a_N) eps.")
    schedule: Literal["linspace", "paper"] = Field("linspace", description="BDHS's beta schedule: 'linspace' (reference code) or 'paper'.")
    seed: int = Field(0, description="Seed of the noise (with the pair id and image index).")

    def label(self) -> str:
        return f"noise{self.step}-{self.schedule}"


CorruptionConfig = Annotated[Union[CropConfig, MaskConfig, NoiseConfig], Field(discriminator="kind")]


class GroundedConfig(ComponentConfig):
    """Settings every image-grounded loss shares."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta of every sigmoid term.")
    reduction: Reduction = Field("sum", description="Token log-probs to a sequence log-prob: 'sum' or per-token 'mean'.")
    corruption: CorruptionConfig = Field(
        default_factory=CropConfig, description="The corrupted image m': {'kind': 'crop'|'mask'|'noise', ...}."
    )


class ContrastConfig(GroundedConfig):
    """An image-contrast loss: the naive one-sided contrast or the consistent (symmetric) one."""

    variant: Variant = Field(
        "naive",
        description=(
            "'naive': c = h(y+|m) - h(y+|m'), whose partition functions Z(m), Z(m') do not cancel; "
            "'consistent': c = [h(y+|m) - h(y+|m')] - [h(y-|m) - h(y-|m')] (SymMPO), where they do; "
            "it also scores the rejected answer under m'."
        ),
    )


class MDPOConfig(ContrastConfig):
    """mDPO (arXiv 2406.11839): DPO + conditional image preference + anchor on the chosen reward."""

    image_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Weight of the conditional term -log s(beta*c).")
    anchor_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Weight of the anchor -log s(beta*h(y+|m) - delta).")
    anchor_delta: float = Field(0.0, allow_inf_nan=False, description="The anchor delta (paper: 0).")


class CHiPConfig(ContrastConfig):
    """CHiP-style (arXiv 2501.16629): response DPO + visual preference of y+ under the clean vs the noised image."""

    corruption: CorruptionConfig = Field(
        default_factory=NoiseConfig, description="The corrupted image m' (default: BDHS's diffusion noise at step 500)."
    )
    visual_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Weight lambda of the visual term -log s(beta*c).")


class TPOConfig(GroundedConfig):
    """TPO-style (arXiv 2412.14487) token-weighted DPO: tokens weighted by how much the image raises their log-prob."""

    reduction: Literal["sum"] = Field("sum", description="Token-level DPO sums weighted token log-ratios ('sum' only).")
    corruption: CorruptionConfig = Field(
        default_factory=NoiseConfig, description="The corrupted image m' the visual anchor is measured against."
    )
    alpha: float = Field(1.0, ge=0, allow_inf_nan=False, description="Scale of the visual anchor a_t in w_t = clamp(1 + alpha*a_t, 0, max_weight); 0 is DPO.")
    max_weight: float = Field(3.0, ge=1, allow_inf_nan=False, description="Upper bound of a token weight.")


class SymMPOConfig(ContrastConfig):
    """SymMPO (arXiv 2506.11712): response DPO + symmetric image contrast + margin consistency."""

    variant: Variant = Field(
        "consistent",
        description="'consistent': the symmetric two-image contrast (SymMPO); 'naive': the one-sided image-contrast DPO it fixes.",
    )
    contrast_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Weight of the image-contrast term -log s(beta*c).")
    consistency_weight: float = Field(
        0.1, ge=0, allow_inf_nan=False,
        description="Weight of the margin-consistency term (beta*[h(y+|m) - h(y-|m)] - beta*[h(y-|m') - h(y+|m')])^2.",
    )


# ------------------------------------------------------------------ Dropout-NTP source
def _default_base() -> dict[str, str]:
    return {"name": "shapes:shapes-pairs"}


class DropoutNTPConfig(ComponentConfig):
    """Dropout next-token prediction (InternVL MPO): rejected = the model's image-blind completion of a truncated chosen answer."""

    base: SourceRef = Field(
        default_factory=_default_base,
        validate_default=True,
        description="The static source giving (image, prompt, chosen answer); its own rejected answers are replaced. Default: shapes-pairs.",
    )
    keep_fraction: float = Field(
        0.5, gt=0, lt=1, description="Fraction of the chosen answer's words kept before the model completes it (MPO: the first half)."
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Most tokens of the completion.")
    batch_size: int = Field(32, ge=1, le=4096, description="Rows per generation batch.")
    n_pairs: Optional[int] = Field(None, ge=1, description="Use only the first N usable base examples (null: all).")
    skip_text_only: bool = Field(True, description="Skip base examples without images; False fails on them.")

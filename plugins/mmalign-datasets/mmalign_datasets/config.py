"""Configuration classes of the dataset loaders (light: pydantic only).

Every loader shares :class:`DatasetConfig` (where the data is, the subsample,
error handling, image checks); each adds the settings of its own layout.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from mmalign_core.config import SpecPath
from mmalign_core import ComponentConfig

OnError = Literal["skip", "fail"]
VerifyImages = Literal["none", "exists", "header", "decode"]

#: The four prompts HA-DPO draws from for its description data (``ha_dpo/models/llava-v1_5/train_dpo.py``).
HADPO_PROMPTS: list[str] = [
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
]


class DatasetConfig(ComponentConfig):
    """Settings common to every loader."""

    path: Optional[SpecPath] = Field(
        None,
        description="Local copy in the published layout: a file (parquet, JSON, JSONL, Arrow) or a folder (parquet shards, "
        "a Hugging Face `save_to_disk` folder). Null: fetch `hub_id` (needs a network, or the files in the Hugging Face cache).",
    )
    hub_id: str = Field("", description="Hugging Face Hub dataset id used when `path` is null.")
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) to pin when `path` is null.")
    split: str = Field(
        "train",
        description="Split to read when the copy holds several (a `DatasetDict` folder, or files named train-*/test-*); ignored otherwise.",
    )
    image_root: Optional[SpecPath] = Field(
        None,
        description="Folder that image paths in the data are resolved against; default: the folder of the data file.",
    )
    n_pairs: Optional[int] = Field(
        None,
        ge=1,
        description="Use a deterministic subsample of this many pairs (the paper's '5k' sets); null: every valid pair. "
        "Subsamples with the same seed are nested: the pairs of a smaller N are among those of a larger N.",
    )
    seed: int = Field(0, description="Seed of the subsample (the paper does not state one; 0 by default).")
    on_error: OnError = Field(
        "skip",
        description="What a bad row does (missing or undecodable image, empty response, chosen == rejected, malformed JSON): "
        "'skip' drops and counts it by reason; 'fail' stops with a message naming the file and row. Pairing-policy skips "
        "(ties, unparsable ratings) are always counted, never fatal.",
    )
    verify_images: VerifyImages = Field(
        "header",
        description="How images are checked while the data is indexed: 'none'; 'exists' (bytes present or file exists); "
        "'header' (also parse the image header: cheap); 'decode' (fully decode every image: slow, but no image can fail later). "
        "Rows that fail are handled per `on_error`.",
    )
    image_placeholder: str = Field(
        "<image>",
        description="Image placeholder removed from prompts (the model's chat template places images); its count is kept in meta.",
    )
    cache_dir: Optional[SpecPath] = Field(
        None,
        description="Where the index (the canonical copy of the data, read row by row) is kept; default: <run cache>/datasets (MMALIGN_CACHE or ~/.cache/mmalign).",
    )
    reindex: bool = Field(
        False,
        description="Rebuild the index even when the cache holds one for these files and settings. Not needed after fixing "
        "missing or bad images: an index whose skipped images have since appeared or changed is rebuilt by itself.",
    )
    max_image_pixels: int = Field(
        25_000_000,
        ge=1,
        le=1_000_000_000,
        description="Largest image accepted, in pixels (width x height, read from the header). A larger one (or a "
        "decompression bomb) is a bad row, 'image_too_large': skipped and counted, or an error under on_error 'fail'. "
        "The default (25 MP, e.g. 5000x5000) bounds the memory one decoded image takes (~75 MB as RGB).",
    )
    allow_outside_images: bool = Field(
        False,
        description="Allow image paths in the data that leave the image folders: absolute paths, or relative ones that "
        "climb out with '..'. By default such a path is a bad row ('image_outside_root') and is never opened.",
    )


class PovidConfig(DatasetConfig):
    """POVID (YiyangAiLab/POVID_preference_data_for_VLLMs): one JSON list; COCO train2014 images not bundled."""

    hub_id: str = Field("YiyangAiLab/POVID_preference_data_for_VLLMs", description="Hugging Face Hub dataset id used when `path` is null.")
    turn: Literal["first", "last", "all"] = Field(
        "first",
        description="Which exchange of multi-turn conversations becomes the pair: the first, the last, or one pair per exchange "
        "whose answers differ.",
    )


class RlhfVConfig(DatasetConfig):
    """RLHF-V (openbmb/RLHF-V-Dataset): parquet with image bytes and a JSON `text` column."""

    hub_id: str = Field("openbmb/RLHF-V-Dataset", description="Hugging Face Hub dataset id used when `path` is null.")


class RlaifVConfig(DatasetConfig):
    """RLAIF-V (openbmb/RLAIF-V-Dataset): parquet shards with image bytes and question/chosen/rejected columns."""

    hub_id: str = Field("openbmb/RLAIF-V-Dataset", description="Hugging Face Hub dataset id used when `path` is null.")


class VLFeedbackConfig(DatasetConfig):
    """VLFeedback (MMInstruction/VLFeedback): prompts with rated completions, paired by a policy."""

    hub_id: str = Field("MMInstruction/VLFeedback", description="Hugging Face Hub dataset id used when `path` is null.")
    pairing: Literal["best-vs-worst", "all-ordered"] = Field(
        "best-vs-worst",
        description="'best-vs-worst': one pair per prompt, highest vs lowest score (the paper); 'all-ordered': every pair of "
        "completions with different scores, higher one chosen (the Silkie code). Ties are skipped and counted.",
    )
    rating: Literal["mean", "helpfulness", "visual_faithfulness", "ethical_considerations"] = Field(
        "mean",
        description="Score of a completion: the mean of its three GPT-4V ratings, or one aspect's rating. A completion whose "
        "rating does not parse as a number is left out and counted.",
    )
    incomplete: Literal["pair-the-rest", "skip-prompt"] = Field(
        "pair-the-rest",
        description="A prompt with a completion whose rating does not parse (e.g. 'N/A') or whose answer is empty: "
        "'pair-the-rest' leaves that completion out and pairs the others (counted under 'left out inside records'); "
        "'skip-prompt' skips the whole prompt (reason 'incomplete_ratings', listed with file and line). Under on_error "
        "'fail' an empty answer stops the run either way, as in every loader.",
    )


class LlavaRlhfConfig(DatasetConfig):
    """LLaVA-RLHF human preferences (zhiqings/LLaVA-Human-Preference-10K): two outputs and the preferred one."""

    hub_id: str = Field("zhiqings/LLaVA-Human-Preference-10K", description="Hugging Face Hub dataset id used when `path` is null.")


class HadpoConfig(DatasetConfig):
    """HA-DPO (juliozhao/hadpo-data): description data (image id -> chosen and rejected lists) over Visual Genome."""

    hub_id: str = Field("juliozhao/hadpo-data", description="Hugging Face Hub dataset id used when `path` is null.")
    model: Literal["llava-v1.5", "instructblip", "minigpt4"] = Field(
        "llava-v1.5", description="Which model's data to read when `path` is the whole release (hadpo/<model>/desc_data.json)."
    )
    pairing: Literal["one", "all"] = Field(
        "one",
        description="'one': one chosen and one rejected description drawn per image (HA-DPO's 'offline' strategy); "
        "'all': every chosen x rejected combination.",
    )
    prompts: list[str] = Field(
        default_factory=lambda: list(HADPO_PROMPTS),
        min_length=1,
        description="Description prompts, one drawn per pair (the data has no question; these are HA-DPO's).",
    )
    sample_seed: int = Field(0, description="Seed of the per-image draws of descriptions and prompts.")


class LocalConfig(DatasetConfig):
    """A local file in the canonical pair format or in TRL's vision preference format."""

    format: Literal["auto", "canonical", "trl"] = Field(
        "auto",
        description="'canonical' (id, prompt, chosen, rejected, images, ...), 'trl' (images, prompt, chosen, rejected; plain "
        "strings or conversational messages), or 'auto' (decided per record from its fields).",
    )

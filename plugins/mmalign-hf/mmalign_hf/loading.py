"""Loading a Hugging Face vision-language checkpoint for the ``hf-vlm`` component."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .config import HFVLMConfig
from .families import FAMILIES, MODEL_TYPES
from .family import HFFamilyModel
from .processors import NO_VIDEO_PROCESSORS, no_video_processor_class

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
NEEDED_FILES = "config.json, the weights (*.safetensors), the tokenizer files and the processor config (processor_config.json or preprocessor_config.json)"


class CheckpointNotFound(FileNotFoundError):
    """The checkpoint is neither a local folder nor reachable on the Hub."""


def _how_to_place(path: str) -> str:
    hub = path if _HUB_ID.match(path) else "<org>/<model>"
    return (f"download it first, e.g. `hf download {hub} --local-dir /models/{hub.split('/')[-1]}` "
            f"(or `huggingface-cli download ...`), and set the model's path to that folder; it must hold {NEEDED_FILES}")


def resolve_source(path: str) -> tuple[str, Path | None]:
    """``(what to pass to from_pretrained, the local folder or None for a Hub id)``; raises clearly when neither."""
    if not path:
        raise CheckpointNotFound(f"hf-vlm: 'path' is empty; set it to a local checkpoint folder or a Hub id ({NEEDED_FILES})")
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            present = sorted(p.name for p in local.iterdir())[:12]
            raise CheckpointNotFound(f"hf-vlm: folder {local} has no config.json (found: {present or 'nothing'}); "
                                     f"a checkpoint folder holds {NEEDED_FILES}")
        return str(local.resolve()), local.resolve()
    if local.exists():
        raise CheckpointNotFound(f"hf-vlm: {local} is a file; 'path' must be a checkpoint folder holding {NEEDED_FILES}")
    if not _HUB_ID.match(path) or path.startswith((".", "/", "~")):
        raise CheckpointNotFound(f"hf-vlm: checkpoint folder {local} does not exist; {_how_to_place(path)}")
    return path, None


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_config(source: str, local: Path | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if local is not None:
            raise
        why = "the Hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)" if _offline() else "it could not be fetched from the Hub"
        raise CheckpointNotFound(f"hf-vlm: {source!r} is not a local folder and {why}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}; {_how_to_place(source)}") from exc


def resolve_family(requested: str, model_type: str) -> str:
    detected = MODEL_TYPES.get(model_type)
    if requested == "auto":
        if detected is None:
            raise ValueError(f"hf-vlm: model_type {model_type!r} is not a supported family (supported model types: "
                             f"{', '.join(sorted(MODEL_TYPES))}); set 'family' explicitly to try the closest one")
        return detected
    if requested not in FAMILIES:
        raise ValueError(f"hf-vlm: unknown family {requested!r} (known: {', '.join(FAMILIES)})")
    if detected is not None and detected != requested:
        import warnings

        warnings.warn(f"hf-vlm: family {requested!r} was requested for a checkpoint of model_type {model_type!r} "
                      f"(detected family {detected!r})", stacklevel=2)
    return requested


def _processor_class_name(local: Path | None) -> str | None:
    if local is None:
        return None
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = local / name
        if f.is_file():
            try:
                value = json.loads(f.read_text()).get("processor_class")
            except (ValueError, OSError):
                continue
            if value:
                return value
    return None


def load_processor(source: str, local: Path | None, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor`` with the PIL image backend; processors with a video slot fall back to their
    video-free variant when no video processor can be built (no usable torchvision)."""
    from transformers import AutoProcessor, ProcessorMixin

    declared = _processor_class_name(local)
    try:
        processor = AutoProcessor.from_pretrained(source, backend="pil", trust_remote_code=trust_remote_code)
    except (OSError, AttributeError, ImportError, ValueError) as exc:
        name = declared if declared in NO_VIDEO_PROCESSORS else None
        if name is None:
            text = str(exc)
            name = next((n for n in NO_VIDEO_PROCESSORS if n.replace("Processor", "").lower() in text.lower()), None)
        if name is None or "video" not in str(exc).lower() and "_extra_content" not in str(exc):
            raise
        processor = no_video_processor_class(name).from_pretrained(source, backend="pil")
    if not isinstance(processor, ProcessorMixin):
        raise TypeError(
            f"hf-vlm: AutoProcessor returned a {type(processor).__name__} for {source}, not a multimodal processor "
            f"(processor_class {declared!r} is unknown to this transformers); the folder needs a processor_config.json "
            "or preprocessor_config.json naming a processor class transformers knows"
        )
    return processor


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_model(source: str, cfg: HFVLMConfig) -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    kwargs["dtype"] = "auto" if cfg.dtype == "auto" else getattr(torch, _DTYPES[cfg.dtype])
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return AutoModelForImageTextToText.from_pretrained(source, **kwargs)


def load_hf_vlm(cfg: HFVLMConfig) -> HFFamilyModel:
    """Load, check and wrap the checkpoint described by ``cfg``."""
    source, local = resolve_source(cfg.path)
    config = load_config(source, local, cfg.trust_remote_code)
    family = resolve_family(cfg.family, getattr(config, "model_type", ""))
    processor = load_processor(source, local, cfg.trust_remote_code)
    model = load_model(source, cfg)
    max_length = cfg.max_length
    if max_length is None:
        text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        max_length = getattr(text_cfg, "max_position_embeddings", None)
    vlm = FAMILIES[family](model, processor, name_or_path=source, max_length=max_length,
                           on_too_long=cfg.on_too_long, source_dir=local)
    if cfg.gradient_checkpointing:
        vlm.enable_gradient_checkpointing()
    return vlm


def make_hf_vlm(cfg: HFVLMConfig) -> HFFamilyModel:
    """Factory registered as ``hf-vlm``."""
    return load_hf_vlm(cfg)

"""Build, save and load the tiny LLaVA.

The model is built deterministically from :class:`TinyLlavaConfig`, written to
a folder with ``save_pretrained`` and loaded back through
``AutoModelForImageTextToText`` / ``AutoProcessor`` -- the same path a real
checkpoint takes -- so tests exercise real loading code.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

from .config import TinyLlavaConfig
from mmalign_core.paths import cache_root

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# Renders string content or a list of {"type": "image"|"text"} blocks. Newlines are
# written as expressions because transformers renders templates with trim_blocks.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{{ '\\n' }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% else %}ASSISTANT: "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)

_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black", "grey", "pink", "brown"]
_SHAPES = ["circle", "square", "triangle", "diamond", "star", "cross", "heart", "hexagon", "ring", "box"]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_GENERAL = (
    "The image shows a small scene with several objects on a plain background. "
    "There is a large object in the centre and a smaller one near the left edge. "
    "Describe the picture in one sentence. What colour is it? How many are there? "
    "Is there a person, a dog, a car, a tree, a table or a cup in the photo? "
    "Yes, there is. No, there is not. It looks blurry. The answer is correct. "
    "Write a caption for a typical scene. Question: Answer: Response 1 Response 2 is better because it "
    "has fewer hallucinated objects and more helpful details."
)


def tokenizer_corpus() -> list[str]:
    """Deterministic training text for the tiny tokenizer: shapes vocabulary plus common English."""
    lines = [_GENERAL]
    for c, s in itertools.product(_COLOURS, _SHAPES):
        lines.append(f"a {c} {s} and a {c} {s}s.")
        lines.append(f"Is there a {c} {s} in the image? Yes. No.")
    for n in _NUMBERS:
        lines.append(f"{n.capitalize()}. There are {n} shapes. How many shapes are in the image?")
    lines.append("Describe the image. Describe a typical scene of shapes.")
    return lines


def _config_key(cfg: TinyLlavaConfig) -> str:
    payload = cfg.model_dump(exclude={"path", "cache_dir", "max_length"})
    payload["_format"] = 2
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    root = str(cache_root())
    return Path(root) / "tiny-llava"


def build_tiny_llava(cfg: TinyLlavaConfig, out_dir: Path) -> Path:
    """Build the model, tokenizer and processor from ``cfg`` and save them to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers import CLIPImageProcessorPil

    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"image_size ({cfg.image_size}) must be a multiple of patch_size ({cfg.patch_size})")
    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    n_image_tokens = (cfg.image_size // cfg.patch_size) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=cfg.vision_hidden_size,
            intermediate_size=cfg.vision_hidden_size * 2,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.image_token_id,
        image_seq_length=n_image_tokens,
        # A 2-layer tower: take the last layer, or it would get no gradients.
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if not (out_dir / "config.json").is_file():
        # transformers writes model files only on rank 0 when a process group is initialised.
        raise RuntimeError(
            "tiny-llava: the model files were not written (this process is not rank 0 of an initialised process "
            "group); build the model on the main process first (mmalign run does) or outside torch.distributed"
        )
    return out_dir


def ensure_built(cfg: TinyLlavaConfig) -> Path:
    """Return a folder holding the model for ``cfg``, building it once (atomically) if needed."""
    if cfg.path:
        path = Path(cfg.path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"tiny-llava: 'path' {path} is not a saved model folder (no config.json)")
        return path
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    target = root / _config_key(cfg)
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build_tiny_llava(cfg, tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny_llava(path: Path, max_length: int | None = None):
    """Load a saved tiny LLaVA folder through the generic Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin

    from mmalign_hf.model import HFVisionLanguageModel

    processor = AutoProcessor.from_pretrained(str(path))
    if not isinstance(processor, ProcessorMixin):
        raise TypeError(f"{path}: AutoProcessor returned {type(processor).__name__}, not a multimodal processor")
    model = AutoModelForImageTextToText.from_pretrained(str(path))
    if max_length is None:
        max_length = model.config.text_config.max_position_embeddings
    return HFVisionLanguageModel(model, processor, name_or_path=str(path), max_length=max_length)


def make_tiny_llava(cfg: TinyLlavaConfig):
    """Factory registered as ``tiny-llava``."""
    path = ensure_built(cfg)
    return load_tiny_llava(path, cfg.max_length)

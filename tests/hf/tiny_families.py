"""Tiny random-weight checkpoints of every family the ``hf-vlm`` component supports.

Each builder writes a folder with ``save_pretrained`` (model, tokenizer,
processor) so tests load it back through the component, i.e. through
``AutoModelForImageTextToText`` / ``AutoProcessor`` like a real checkpoint.
Sizes are the smallest that keep each family's invariants (image-token counts,
mRoPE sections, pixel-shuffle factors) meaningful.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

SEED = 0
IMAGE = 32  # square input side for the fixed-size families
PATCH = 8

# ------------------------------------------------------------------ tokenizer


def _corpus() -> list[str]:
    from mmalign_tiny.model import tokenizer_corpus

    return tokenizer_corpus()


def make_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str, unk: str = "<unk>",
                   add_bos: bool = True, extra: dict[str, str] | None = None, vocab: int = 400):
    """A byte-level BPE tokenizer trained on a small deterministic corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    if bos is not None and add_bos:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bid)])
    kwargs = dict(tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token=unk)
    if bos is not None:
        kwargs["bos_token"] = bos
    if extra:
        kwargs["extra_special_tokens"] = extra
    return PreTrainedTokenizerFast(**kwargs)


def _nl() -> str:
    return "{{ '\\n' }}"


def _content(image: str) -> str:
    """Jinja for a message's content: a string or a list of image/text blocks."""
    return (
        "{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
    )


LLAVA_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: " + _content("<image>" + _nl()) + _nl() +
    "{% else %}ASSISTANT: " + _content("") + "</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)

CHATML_TEMPLATE = (  # Qwen2-VL style
    "{% for m in messages %}<|im_start|>{{ m['role'] }}" + _nl()
    + _content("<|vision_start|><|image_pad|><|vision_end|>") + "<|im_end|>" + _nl() + "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant" + _nl() + "{% endif %}"
)

IDEFICS3_TEMPLATE = (  # SmolVLM style
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    + _content("<image>") + "<end_of_utterance>" + _nl() + "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _llama_text(vocab: int, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=512, **kw)


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=IMAGE, patch_size=PATCH)


def _save(model, processor, out: Path) -> Path:
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _init(cls, config):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return cls(config)


# -------------------------------------------------------------------- LLaVA-1.5


def build_llava(out: Path) -> Path:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                         extra={"image_token": "<image>"})
    ip = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    cfg = LlavaConfig(vision_config=_clip_vision(),
                      text_config=_llama_text(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                              pad_token_id=tok.pad_token_id),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE // PATCH) ** 2,
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    return _save(_init(LlavaForConditionalGeneration, cfg), proc, out)


# ---------------------------------------------------------------- LLaVA-NeXT


def build_llava_next(out: Path) -> Path:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    tok = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                         extra={"image_token": "<image>"})
    pinpoints = [[IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                    image_grid_pinpoints=pinpoints)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    cfg = LlavaNextConfig(vision_config=_clip_vision(),
                          text_config=_llama_text(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                  pad_token_id=tok.pad_token_id),
                          image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                          image_seq_length=(IMAGE // PATCH) ** 2, vision_feature_layer=-1,
                          vision_feature_select_strategy="default")
    return _save(_init(LlavaNextForConditionalGeneration, cfg), proc, out)


# ------------------------------------------------------------ Qwen2-VL / 2.5-VL

QWEN_SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]


def _qwen_parts():
    from transformers import Qwen2VLImageProcessorPil

    tok = make_tokenizer(QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"})
    ip = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64})
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                                                          ("vision_start_token_id", "<|vision_start|>"),
                                                          ("vision_end_token_id", "<|vision_end|>")]}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, bos_token_id=None,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                # head_dim 16: the three mRoPE sections must sum to head_dim / 2
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    return tok, ip, ids, text


def _qwen_processor(cls_name: str, tok, ip):
    from mmalign_hf.processors import no_video_processor_class

    cls = no_video_processor_class(cls_name)
    return cls(image_processor=ip, tokenizer=tok, chat_template=CHATML_TEMPLATE)


def build_qwen2_vl(out: Path) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok, ip, ids, text = _qwen_parts()
    cfg = Qwen2VLConfig(text_config=text, vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                                                             patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2),
                        **ids)
    return _save(_init(Qwen2VLForConditionalGeneration, cfg), _qwen_processor("Qwen2VLProcessor", tok, ip), out)


def build_qwen2_5_vl(out: Path) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok, ip, ids, text = _qwen_parts()
    cfg = Qwen2_5_VLConfig(text_config=text,
                           vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                              patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2,
                                              window_size=32, fullatt_block_indexes=[1]),
                           **ids)
    return _save(_init(Qwen2_5_VLForConditionalGeneration, cfg), _qwen_processor("Qwen2_5_VLProcessor", tok, ip), out)


# ------------------------------------------------------------ Idefics3 / SmolVLM


def build_idefics3(out: Path) -> Path:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    specials = ["<unk>", "<|im_start|>", "<end_of_utterance>", "<pad>", "<image>", "<fake_token_around_image>", "<global-img>"]
    specials += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = make_tokenizer(specials, bos="<|im_start|>", eos="<end_of_utterance>", pad="<pad>", add_bos=False)
    scale = 2
    # Image splitting as in the released checkpoints: up to 2x2 tiles of IMAGE plus the global view.
    ip = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 2 * IMAGE},
                                   max_image_size={"longest_edge": IMAGE})
    seq = (IMAGE // PATCH) ** 2 // scale ** 2
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq, chat_template=IDEFICS3_TEMPLATE)
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE, patch_size=PATCH),
        text_config=_llama_text(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale, pad_token_id=tok.pad_token_id,
    )
    return _save(_init(Idefics3ForConditionalGeneration, cfg), proc, out)


# ----------------------------------------------------------------- PaliGemma


def build_paligemma(out: Path) -> Path:
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil, SiglipVisionConfig

    tok = make_tokenizer(["<unk>", "<bos>", "<eos>", "<pad>", "<image>"], bos="<bos>", eos="<eos>", pad="<pad>",
                         add_bos=False, extra={"image_token": "<image>"})
    n_img = (IMAGE // PATCH) ** 2
    ip = SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    ip.image_seq_length = n_img
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds the <loc>/<seg> tokens to the tokenizer
    vocab = len(tok)
    text = GemmaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=1, head_dim=16, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=IMAGE, patch_size=PATCH, projection_dim=64)
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                          projection_dim=64, hidden_size=64, vocab_size=vocab)
    return _save(_init(PaliGemmaForConditionalGeneration, cfg), proc, out)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "llava": build_llava,
    "llava-next": build_llava_next,
    "qwen2-vl": build_qwen2_vl,
    "qwen2.5-vl": build_qwen2_5_vl,
    "idefics3": build_idefics3,
    "paligemma": build_paligemma,
}

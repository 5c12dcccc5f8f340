"""Loading and load-time checks of ``hf-vlm``: paths, processors, chat templates, image tokens, length budget, options."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmalign_hf.model import SequenceTooLong
from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair, SFTExample
from mmalign_hf.families import ChatTemplateError, ImageTokenMismatch
from mmalign_hf.loading import CheckpointNotFound


def _img(colour, size=(48, 48)) -> ImageRef:
    return ImageRef(Image.new("RGB", size, colour), key=f"{colour}{size}")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _legacy_layout(folder: Path) -> Path:
    """Rewrite a folder the way most Hub checkpoints are laid out: preprocessor_config.json and chat_template.json."""
    proc = json.loads((folder / "processor_config.json").read_text())
    image = proc.pop("image_processor")
    image["processor_class"] = proc["processor_class"]
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    (folder / "processor_config.json").write_text(json.dumps(proc))
    tpl = folder / "chat_template.jinja"
    if tpl.is_file():
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": tpl.read_text()}))
        tpl.unlink()
    return folder


def _entry():
    from mmalign_hf.plugin import mmalign_models

    return mmalign_models()[0]


# ---------------------------------------------------------------------- entry


def test_entry_meets_the_contract() -> None:
    from mmalign_core.testing import check_entry, check_plugin

    plugins = check_plugin("mmalign_hf.plugin", name="hf")
    entry = plugins.resolve("model", "hf-vlm")
    check_entry(entry)
    assert entry.capabilities == {"generate", "train", "lora", "token_logps"}


# ---------------------------------------------------------------------- paths


def test_missing_paths_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match="'path' is empty"):
        _entry().build({})
    with pytest.raises(CheckpointNotFound, match=r"does not exist.*hf download.*config\.json"):
        _entry().build({"path": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_text("x")
    with pytest.raises(CheckpointNotFound, match=r"has no config\.json \(found: \['weights\.bin'\]\)"):
        _entry().build({"path": str(tmp_path / "empty")})


def test_hub_id_offline_names_the_id_and_how_to_place_files(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFound) as err:
        _entry().build({"path": "llava-hf/llava-v1.6-vicuna-7b-hf"})
    text = str(err.value)
    assert "'llava-hf/llava-v1.6-vicuna-7b-hf' is not a local folder" in text and "HF_HUB_OFFLINE" in text
    assert "hf download llava-hf/llava-v1.6-vicuna-7b-hf --local-dir" in text


def test_unsupported_model_type_and_bare_tokenizer_are_refused(family_dir, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(text_only)
    with pytest.raises(ValueError, match="model_type 'llama' is not a supported family"):
        _entry().build({"path": str(text_only)})
    odd = _copy(family_dir("llava"), tmp_path / "odd")
    cfg = json.loads((odd / "processor_config.json").read_text())
    cfg["processor_class"] = "SomeUnknownProcessor"
    (odd / "processor_config.json").write_text(json.dumps(cfg))
    with pytest.raises((TypeError, ValueError), match="SomeUnknownProcessor|not a multimodal processor"):
        _entry().build({"path": str(odd)})


# ---------------------------------------------------------------- processors


@pytest.mark.parametrize("family", ["qwen2-vl", "llava-next"])
def test_hub_style_folder_layout_loads(load_family, family_dir, family, tmp_path: Path) -> None:
    folder = _legacy_layout(_copy(family_dir(family), tmp_path / family))
    m = _entry().build({"path": str(folder)})
    ref = load_family(family)
    pairs = [PreferencePair(id="a", prompt="Describe the image.", chosen="a red circle.", rejected="No.", images=[_img((200, 0, 0))])]
    with torch.no_grad():
        torch.testing.assert_close(m.pair_logps(pairs).chosen, ref.pair_logps(pairs).chosen)
    m.save_pretrained(tmp_path / "out")
    assert _entry().build({"path": str(tmp_path / "out")}).fingerprint() == m.fingerprint()


def test_qwen_processor_without_video_is_used_and_saved_under_its_own_name(load_family, tmp_path: Path) -> None:
    from transformers import AutoProcessor, ProcessorMixin

    m = load_family("qwen2-vl")
    assert type(m.processor).__name__ == "Qwen2VLProcessor" and isinstance(m.processor, ProcessorMixin)
    assert type(m.processor).__module__ == "mmalign_hf.processors"
    with pytest.raises(OSError, match="video processor"):  # what plain transformers does here without torchvision
        AutoProcessor.from_pretrained(m.name_or_path, backend="pil")
    m.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2VLProcessor"
    again = _entry().build({"path": str(tmp_path / "out")})
    assert again.fingerprint() == m.fingerprint()


# ------------------------------------------------------------- chat templates


def test_chat_template_is_checked_at_load(family_dir, tmp_path: Path) -> None:
    broken = _copy(family_dir("llava"), tmp_path / "noprefix")
    # The generation prompt is not what the conversation continues with.
    (broken / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}ASSISTANT >> {% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="not a prefix"):
        _entry().build({"path": str(broken)})
    missing = _copy(family_dir("llava"), tmp_path / "notemplate")
    (missing / "chat_template.jinja").unlink()
    with pytest.raises(ChatTemplateError, match="no chat template"):
        _entry().build({"path": str(missing)})


def test_answer_lead_from_a_llava_hf_style_template(family_dir, tmp_path: Path) -> None:
    """llava-hf templates end the prompt with 'ASSISTANT:' and write ' answer ' after it."""
    folder = _copy(family_dir("llava"), tmp_path / "llava-hf")
    (folder / "chat_template.jinja").write_text(
        "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )
    m = _entry().build({"path": str(folder)})
    assert m.answer_lead == " " and m.eos_token_id == m.tokenizer.eos_token_id
    image = _img((1, 2, 3))
    enc = m.encode(["Describe the image."], [[image]], ["a red circle."])
    ids = enc.inputs["input_ids"][0].tolist()[:-1]  # without the eos the engine appends
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
    full = m.processor.apply_chat_template([user, {"role": "assistant", "content": [{"type": "text", "text": "a red circle."}]}], tokenize=False)
    rendered = m.processor(text=[full], images=[image.load()], return_tensors="pt")["input_ids"][0].tolist()
    assert rendered[: len(ids)] == ids


# ---------------------------------------------------------------- image tokens


def test_processor_model_disagreement_is_caught_at_load(family_dir, tmp_path: Path) -> None:
    folder = _copy(family_dir("llava"), tmp_path / "badpatch")
    cfg = json.loads((folder / "processor_config.json").read_text())
    cfg["num_additional_image_tokens"] = 0  # the processor now writes 15 image tokens; CLIP gives 16 features
    (folder / "processor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ImageTokenMismatch, match=r"15 image tokens .* different number of image features"):
        _entry().build({"path": str(folder)})


@pytest.mark.parametrize("family", ["llava", "qwen2-vl", "idefics3", "paligemma"])
def test_stray_image_placeholders_are_named(load_family, family) -> None:
    m = load_family(family)
    placeholder = m.tokenizer.convert_ids_to_tokens(m.image_token_id)
    bad_prompt = PreferencePair(id="stray", prompt=f"Look {placeholder} here.", chosen="a.", rejected="b.", images=[_img((1, 1, 1))])
    with pytest.raises(ImageTokenMismatch, match=r"sample stray: .*placeholder"):
        m.pair_logps([bad_prompt])
    bad_answer = PreferencePair(id="ans", prompt="Describe.", chosen=f"a {placeholder}", rejected="b.", images=[_img((1, 1, 1))])
    with pytest.raises(ImageTokenMismatch, match="sample ans: the answer contains the vision special token"):
        m.pair_logps([bad_answer])
    with pytest.raises(ImageTokenMismatch, match="sample stray"):
        m.filter_too_long([bad_prompt])


# -------------------------------------------------------------- length budget


@pytest.mark.parametrize("family", ["qwen2-vl", "llava-next"])
def test_filter_too_long_drops_whole_samples_before_batching(load_family, family, tmp_path: Path) -> None:
    m = load_family(family)
    small = PreferencePair(id="small", prompt="Describe.", chosen="a red circle.", rejected="No.", images=[_img((9, 0, 0), (32, 32))])
    path = tmp_path / "big.png"
    Image.new("RGB", (128, 64), (0, 9, 0)).save(path)  # more image tokens: only the size is read
    big = PreferencePair(id="big", prompt="Describe.", chosen="a red circle.", rejected="No.", images=[ImageRef(path)])
    sft = SFTExample(id="sft", prompt="Describe.", response="a blue square.", images=[])
    lengths = m.sequence_lengths([small, big, sft])
    assert lengths[1] > lengths[0] > lengths[2]
    m.max_length = lengths[0]
    kept, dropped = m.filter_too_long([small, big, sft])
    assert dropped == ["big"] and [e.id for e in kept] == ["small", "sft"] and len(kept) == 2
    assert m.last_filter["dropped"] == 1 and m.last_filter["longest"] == lengths[1]
    with torch.no_grad():
        m.pair_logps([kept[0]])  # exactly at the budget: fine
    with pytest.raises(SequenceTooLong, match=rf"sample big has {lengths[1]} tokens .* max_length is {lengths[0]}"):
        m.pair_logps([big])  # unfiltered: refused, never truncated
    m.on_too_long = "fail"
    with pytest.raises(SequenceTooLong, match=rf"1 of 3 samples exceed .*max_length={lengths[0]}.*big \({lengths[1]} tokens\)"):
        m.filter_too_long([small, big, sft])


def test_on_too_long_from_config(load_family) -> None:
    m = load_family("llava", max_length=20, on_too_long="fail")
    assert m.max_length == 20 and m.on_too_long == "fail"
    with pytest.raises(SequenceTooLong, match="max_length=20"):
        m.filter_too_long([SFTExample(id="x", prompt="Describe.", response="a red circle.", images=[_img((1, 1, 1))])])
    assert load_family("llava").max_length == 512  # default: max_position_embeddings


# ----------------------------------------------------------------- options


def test_dtype_attention_and_gradient_checkpointing_options(load_family, tmp_path: Path) -> None:
    from mmalign_core.runner.training import StageData, run_training
    from mmalign_core.spec_models import LoraSettings, TrainSettings
    from mmalign_losses.config import DPOConfig
    from mmalign_losses.dpo import DPOLoss

    m = load_family("qwen2-vl", dtype="bfloat16", attn_implementation="eager", gradient_checkpointing=True)
    assert next(m.model.parameters()).dtype == torch.bfloat16
    assert m.model.config._attn_implementation == "eager"
    assert m.model.model.language_model.gradient_checkpointing
    pairs = [PreferencePair(id=str(i), prompt="Describe.", chosen="a red circle.", rejected="two stars.", images=[_img((i, 0, 0))])
             for i in range(2)]
    run_training(model=m, data=StageData(pairs, "pairs"), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                 loss_requires=frozenset({"reference", "rejected"}),
                 settings=TrainSettings(steps=1, batch_size=2, lr=1e-2, warmup_ratio=0.0, lora=LoraSettings(r=2, alpha=4, dropout=0.0)),
                 stage_name="t", stage_dir=tmp_path, metrics_path=tmp_path / "m.jsonl", seed=0, progress=lambda it, **k: it,
                 log=lambda s: None, on_metrics=lambda *a: None)
    lora_b = [p for n, p in m.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


def test_full_model_output_loads_with_plain_transformers(load_family, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    m = load_family("paligemma")
    with torch.no_grad():
        for p in m.model.model.multi_modal_projector.parameters():
            p.add_(0.01)
    m.save_pretrained(tmp_path / "out")
    plain = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out"))
    proc = AutoProcessor.from_pretrained(str(tmp_path / "out"), backend="pil")
    again = m._clone(plain)
    again.processor = proc
    pairs = [PreferencePair(id="a", prompt="Describe.", chosen="a red circle.", rejected="No.", images=[_img((5, 5, 5))])]
    with torch.no_grad():
        torch.testing.assert_close(again.pair_logps(pairs).chosen, m.pair_logps(pairs).chosen)
    fresh = load_family("paligemma")
    fresh.load_checkpoint(tmp_path / "out")
    assert fresh.fingerprint() == m.fingerprint()
    texts = again.generate([GenerationRequest("Describe.", [_img((5, 5, 5))])], max_new_tokens=3)
    assert len(texts) == 1

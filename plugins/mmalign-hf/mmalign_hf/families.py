"""Per-family adapters over :class:`mmalign_hf.model.HFVisionLanguageModel`.

The generic adapter renders the prompt with the processor's chat template,
appends answer tokens, pads and sums response log-probs. What differs between
families lives here:

======================  ===============================================================
family                  special handling
======================  ===============================================================
llava / llava-next      none beyond the common checks; AnyRes ``image_sizes`` pass through
qwen2-vl / qwen2.5-vl   ``mm_token_type_ids`` rebuilt over prompt+answer for mRoPE;
                        the projector (``visual.merger``) lives inside the vision tower
                        and stays trainable when the tower is frozen
idefics3 (SmolVLM)      nested per-sample image lists; language model is ``text_model``,
                        projector ``connector``
paligemma               no chat template: ``<image>``*n + ``<bos>`` + prompt + ``\\n``
                        built by the processor; ``token_type_ids`` (0 prefix, 1 answer)
                        give the bidirectional prefix; text-only prompts built by hand
======================  ===============================================================

Common to all: the answer lead and the end-of-turn token are read from the chat
template, image-token counts are checked per sample before any forward pass,
generation never emits vision special tokens, and :meth:`filter_too_long` drops
(or fails on) samples that do not fit ``max_length`` before batching.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .model import HFVisionLanguageModel, SequenceTooLong, _Encoded
from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair, SFTExample

LORA_LAYERS = "(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PROBE_ANSWER = "XYZZY answer."


class ImageTokenMismatch(ValueError):
    """The image tokens of a processed prompt do not match what the model will produce for its images."""


class ChatTemplateError(ValueError):
    """The processor's chat template is missing or does not render prompts as a prefix of conversations."""


class _ProbeDone(Exception):
    """Raised from a hook to stop a probe forward pass once the image features are merged."""


@dataclass
class _Prompted:
    ids: list[list[int]]  # unpadded prompt ids per row (image tokens expanded)
    image_inputs: dict[str, Any]  # pixel tensors and their companions, batched as the model wants them
    expected_image_tokens: list[int] | None  # per row, from the images alone (None: unknown)


class _Subset(Sequence):
    """A view of some items of a sequence (keeps lazy data sets lazy)."""

    def __init__(self, items: Sequence[Any], index: list[int]):
        self._items, self._index = items, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._items[j] for j in self._index[i]]
        return self._items[self._index[i]]


def _blank_like(ref: ImageRef, cache: dict) -> Any:
    """A blank image of the same size as ``ref`` (reads only the header of files and bytes)."""
    from PIL import Image

    src = ref.source
    size = None
    try:
        if isinstance(src, (str, Path)):
            with Image.open(src) as im:
                size = im.size
        elif isinstance(src, (bytes, bytearray)):
            with Image.open(io.BytesIO(src)) as im:
                size = im.size
    except Exception:  # noqa: BLE001 - fall back to a full decode, which raises a proper error
        size = None
    if size is None:
        size = ref.load().size
    if size not in cache:
        cache[size] = Image.new("RGB", size, (127, 127, 127))
    return cache[size]


class HFFamilyModel(HFVisionLanguageModel):
    """The generic adapter plus load-time checks, per-sample image-token checks and family hooks.

    Args (beyond :class:`HFVisionLanguageModel`):
        on_too_long: ``"drop"`` or ``"fail"``: what :meth:`filter_too_long` does with over-long samples.
        source_dir: the local folder the checkpoint came from (extra processor files are copied on save).
        check: run the load-time checks (chat template, image-token probe) now.
    """

    family = "generic"
    uses_chat_template = True
    # Last component of module paths (matched on whole components).
    language_model_names: tuple[str, ...] = ("language_model",)
    projector_names: tuple[str, ...] = ("multi_modal_projector",)
    vision_names: tuple[str, ...] = ("vision_tower", "vision_model", "visual")
    nested_images = False

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name_or_path: str = "",
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        on_too_long: str = "drop",
        source_dir: str | Path | None = None,
        check: bool = True,
    ) -> None:
        super().__init__(model, processor, name_or_path=name_or_path, device=device, max_length=max_length)
        if on_too_long not in ("drop", "fail"):
            raise ValueError(f"on_too_long must be 'drop' or 'fail', got {on_too_long!r}")
        self.on_too_long = on_too_long
        self.source_dir = Path(source_dir) if source_dir else None
        self.answer_lead = ""  # text the template puts between the generation prompt and the answer
        self.stop_token_ids = self._stop_token_ids()
        self.vision_token_ids = self._vision_token_ids()
        self.last_filter: dict[str, Any] = {}
        self._row_names: list[str] | None = None
        if check:
            self.check()

    # ----------------------------------------------------------- family hooks
    def _images_arg(self, images: Sequence[Sequence[Any]]) -> Any:
        """The ``images`` argument of the processor for per-row image lists."""
        if self.nested_images:
            return [list(imgs) for imgs in images]
        return [im for imgs in images for im in imgs]

    def _expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
        """Image tokens each row must hold for its images, or None where the family has no formula."""
        sizes = [[(im.height, im.width) for im in imgs] for imgs in images]
        flat = [s for row in sizes for s in row]
        if not flat:
            return [0] * len(images)
        fn = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if fn is None:
            return None
        try:
            per_image = list(fn(image_sizes=[list(s) for s in flat])["num_image_tokens"])
        except Exception:  # noqa: BLE001 - a processor without the formula: the model-side check still runs
            return None
        out, k = [], 0
        for row in sizes:
            out.append(int(sum(per_image[k : k + len(row)])))
            k += len(row)
        return out

    def _token_type_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-token companions of ``input_ids`` the family's forward needs (rebuilt over the whole sequence)."""
        return {}

    # ---------------------------------------------------------------- tokens
    def _vision_token_ids(self) -> list[int]:
        """Special tokens of the vision interface; never generated, never allowed in answers."""
        cfg = self._base_config()
        ids: set[int] = set()
        for key in ("image_token_id", "image_token_index", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            v = getattr(cfg, key, None)
            if isinstance(v, int) and v >= 0:
                ids.add(v)
        for attr in ("image_token", "video_token", "fake_image_token", "global_image_tag", "global_image_token",
                     "vision_start_token", "vision_end_token"):
            tok = getattr(self.processor, attr, None)
            if isinstance(tok, str):
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                    ids.add(tid)
        return sorted(ids)

    def _stop_token_ids(self) -> list[int]:
        ids = []
        gen = getattr(self._base_model(), "generation_config", None)
        for v in (self.eos_token_id, getattr(gen, "eos_token_id", None)):
            for t in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(t, int) and t not in ids:
                    ids.append(t)
        return ids

    def _base_model(self) -> Any:
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def _vision_strings(self) -> list[str]:
        return [s for s in (self.tokenizer.convert_ids_to_tokens(i) for i in self.vision_token_ids) if isinstance(s, str)]

    # ------------------------------------------------------------- encoding
    def _answer_ids(self, text: str, add_eos: bool = True) -> list[int]:
        return super()._answer_ids(self.answer_lead + text, add_eos=add_eos)

    def _process(self, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> _Prompted:
        """Run the processor; ``images`` are PIL images per row."""
        texts = [self.format_prompt(p, len(imgs)) for p, imgs in zip(prompts, images)]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(len(imgs) for imgs in images):
            kwargs["images"] = self._images_arg(images)
        enc = self.processor(**kwargs)
        ids = enc.pop("input_ids")
        mask = enc.pop("attention_mask")
        for key in ("token_type_ids", "mm_token_type_ids", "labels"):  # rebuilt over the full sequence
            enc.pop(key, None)
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        image_inputs = dict(enc)
        return _Prompted(prompt_ids, image_inputs, self._expected_image_tokens(image_inputs, images))

    @contextlib.contextmanager
    def _naming(self, names: Sequence[str]) -> Iterator[None]:
        """Sample names for the rows the next ``_prompt_batch`` processes (error messages only)."""
        saved, self._row_names = self._row_names, [str(n) for n in names]
        try:
            yield
        finally:
            self._row_names = saved

    def _prompt_batch(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]]) -> tuple[list[list[int]], dict[str, Any]]:
        """Every path of the base class (shared-prompt pairs, ``_encode``, generation) comes through here,
        so the per-row image-token check runs before any forward pass."""
        names = self._row_names if self._row_names is not None and len(self._row_names) == len(prompts) else [
            f"row {i}" for i in range(len(prompts))]
        pr = self._process_checked(prompts, [[r.load() for r in imgs] for imgs in images], names)
        return pr.ids, pr.image_inputs

    def _process_checked(self, prompts: Sequence[str], images: Sequence[Sequence[Any]], names: Sequence[str]) -> _Prompted:
        """:meth:`_process` and :meth:`_check_prompts`; a processor error caused by a literal placeholder names the sample."""
        try:
            pr = self._process(prompts, images)
        except ValueError as exc:
            strings = self._vision_strings()
            stray = [(n, [s for s in strings if s in p]) for n, p in zip(names, prompts) if any(s in p for s in strings)]
            if stray:
                raise ImageTokenMismatch(
                    f"sample {stray[0][0]}: the prompt text contains the placeholder(s) {stray[0][1]} literally; remove them "
                    f"(images are placed by the chat template) [{len(stray)} such sample(s) in this batch; processor: {exc}]"
                ) from exc
            raise
        self._check_prompts(pr, names, prompts)
        return pr

    def _check_prompts(self, pr: _Prompted, names: Sequence[str], prompts: Sequence[str]) -> None:
        """Every row holds exactly the image tokens its images need (never a half-cut or stray one)."""
        if self.image_token_id is None:
            return
        for i, row in enumerate(pr.ids):
            have = sum(1 for t in row if t == self.image_token_id)
            want = pr.expected_image_tokens[i] if pr.expected_image_tokens is not None else None
            if want is not None and have != want:
                stray = [s for s in self._vision_strings() if s in prompts[i]]
                hint = (f"the prompt text contains the placeholder(s) {stray} literally; remove them (images are placed by the chat template)"
                        if stray else "the processor and the model disagree on the image size or patching")
                raise ImageTokenMismatch(
                    f"sample {names[i]}: the processed prompt holds {have} image tokens but its images need {want} "
                    f"({self.family} family, {self.name_or_path}); {hint}"
                )

    def _check_answers(self, answers: Sequence[str], names: Sequence[str]) -> None:
        for a, name in zip(answers, names):
            bad = sorted({t for t in self._answer_ids(a, add_eos=False) if t in self.vision_token_ids})
            if bad:
                toks = self.tokenizer.convert_ids_to_tokens(bad)
                raise ImageTokenMismatch(f"sample {name}: the answer contains the vision special token(s) {toks}; "
                                         "remove them from the text (they would break the image-token count)")

    def _check_length(self, n: int, what: str) -> None:
        if self.max_length is not None and n > self.max_length:
            raise SequenceTooLong(
                f"{what} has {n} tokens (image tokens included) but the length budget max_length is {self.max_length}; "
                "image tokens are never truncated: raise max_length, or drop such samples before batching with "
                "filter_too_long (on_too_long: drop)"
            )

    def _encode(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]], answers: Sequence[str],
                ids: Sequence[str] | None = None) -> _Encoded:
        names = [str(ids[i]) if ids else f"row {i}" for i in range(len(prompts))]
        self._check_answers(answers, names)
        with self._naming(names):
            return super()._encode(prompts, images, answers, ids)

    def _pad(self, rows: list[list[int]], resp: list[list[bool]], image_inputs: dict[str, Any]) -> _Encoded:
        enc = super()._pad(rows, resp, image_inputs)
        enc.inputs.update(self._token_type_inputs(enc.inputs["input_ids"], enc.inputs["attention_mask"], enc.response_mask))
        return enc

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True) -> Any:
        for p in pairs:
            answers = [p.chosen] + ([p.rejected, *p.extra_rejected] if with_rejected else [])
            self._check_answers(answers, [p.id] * len(answers))
        with self._naming([p.id for p in pairs]):
            return super().pair_logps(pairs, with_rejected=with_rejected)

    # ------------------------------------------------------------ generation
    def _generation_inputs(self, reqs: Sequence[GenerationRequest]) -> dict[str, Any]:
        with self._naming([f"request {i}" for i in range(len(reqs))]):
            return super()._generation_inputs(reqs)

    def _generation_extra_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._token_type_inputs(input_ids, attention_mask, None)

    def _banned_token_ids(self) -> list[int]:
        return [int(t) for t in self.vision_token_ids]

    def _stop_ids(self) -> list[int]:
        return list(self.stop_token_ids)

    # ------------------------------------------------------- too-long samples
    def sequence_lengths(self, examples: Sequence[PreferencePair | SFTExample], *, chunk_size: int = 32) -> list[int]:
        """Tokens of the longest sequence each example produces (prompt with expanded image tokens + answer + eos).

        Only image sizes are read (file headers), not pixels: the token counts of every supported
        family depend on the size alone. Image-token invariants are checked on the way.
        """
        blanks: dict = {}
        jobs: list[tuple[int, str, list[ImageRef], list[str], str]] = []  # (example, prompt, images, answers, name)
        for k, ex in enumerate(examples):
            if isinstance(ex, PreferencePair):
                answers = [ex.chosen, ex.rejected, *ex.extra_rejected]
                if ex.rejected_images is not None:
                    jobs.append((k, ex.prompt, list(ex.images), [ex.chosen, *ex.extra_rejected], ex.id))
                    jobs.append((k, ex.prompt, list(ex.rejected_images), [ex.rejected], f"{ex.id}/rejected"))
                    continue
            else:
                answers = [ex.response]
            jobs.append((k, ex.prompt, list(ex.images), answers, ex.id))
        lengths = [0] * len(examples)
        for s in range(0, len(jobs), chunk_size):
            chunk = jobs[s : s + chunk_size]
            pr = self._process_checked([j[1] for j in chunk], [[_blank_like(r, blanks) for r in j[2]] for j in chunk],
                                       [str(j[4]) for j in chunk])
            for (k, _, _, answers, name), p_ids in zip(chunk, pr.ids):
                self._check_answers(answers, [str(name)] * len(answers))
                for a in answers:
                    lengths[k] = max(lengths[k], len(p_ids) + len(self._answer_ids(a)))
        return lengths

    def filter_too_long(self, examples: Sequence[PreferencePair | SFTExample]) -> tuple[Sequence[Any], list[str]]:
        """Drop (``on_too_long: drop``) or refuse (``fail``) examples longer than ``max_length``, before batching.

        Returns ``(kept, dropped_ids)``; ``kept`` is a view of ``examples`` in their order. Also raises
        :class:`ImageTokenMismatch` for a sample whose image tokens cannot match its images.
        """
        if self.max_length is None:
            self.last_filter = {"checked": len(examples), "dropped": 0, "max_length": None}
            return examples, []
        lengths = self.sequence_lengths(examples)
        over = [i for i, n in enumerate(lengths) if n > self.max_length]
        if over and self.on_too_long == "fail":
            shown = ", ".join(f"{examples[i].id} ({lengths[i]} tokens)" for i in over[:5])
            more = f" and {len(over) - 5} more" if len(over) > 5 else ""
            raise SequenceTooLong(
                f"{len(over)} of {len(examples)} samples exceed the length budget max_length={self.max_length} "
                f"(image tokens included, never truncated): {shown}{more}; raise max_length or set on_too_long: drop"
            )
        drop = set(over)
        kept = _Subset(examples, [i for i in range(len(examples)) if i not in drop])
        dropped_ids = [str(examples[i].id) for i in over]
        self.last_filter = {"checked": len(examples), "dropped": len(dropped_ids), "max_length": self.max_length,
                            "longest": max(lengths, default=0)}
        return kept, dropped_ids

    # --------------------------------------------------------------- training
    def _module_roots(self, names: tuple[str, ...]) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n and n.rsplit(".", 1)[-1] in names]

    @staticmethod
    def _under(name: str, roots: Sequence[str]) -> bool:
        return any(name == r or name.startswith(r + ".") for r in roots)

    def projector_parameter_names(self) -> list[str]:
        roots = self._module_roots(self.projector_names)
        return [n for n, _ in self.model.named_parameters() if self._under(n, roots)]

    def vision_parameter_names(self) -> list[str]:
        vroots = self._module_roots(self.vision_names)
        proots = self._module_roots(self.projector_names)
        return [n for n, _ in self.model.named_parameters() if self._under(n, vroots) and not self._under(n, proots)]

    def freeze_vision(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the vision tower; the projector is never part of it, even when nested in it."""
        vision = set(self.vision_parameter_names())
        for name, p in self.model.named_parameters():
            if name in vision:
                p.requires_grad_(not frozen)

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        proj_names = set(self.projector_parameter_names())
        proj, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (proj if name in proj_names else rest).append(p)
        groups = []
        if rest:
            groups.append({"params": rest, "lr": lr, "name": "language_model"})
        if proj:
            groups.append({"params": proj, "lr": projector_lr if projector_lr is not None else lr, "name": "projector"})
        return groups

    def default_lora_targets(self) -> str:
        """The LoRA regex matching only the language model's attention and MLP projections."""
        lm = "|".join(re.escape(n) for n in self.language_model_names)
        return rf".*\.(?:{lm})\..*\.{LORA_LAYERS}$"

    def enable_lora(self, r: int, alpha: float, dropout: float, target_modules: str) -> None:
        """LoRA through peft. The default regex of :class:`~mmalign_core.spec_models.LoraSettings` is
        rewritten to this family's language-model module name; the projector is trained in full and
        saved with the adapter (``modules_to_save``)."""
        from mmalign_core.spec_models import LoraSettings

        if target_modules == LoraSettings.model_fields["target_modules"].default:
            target_modules = self.default_lora_targets()
        super().enable_lora(r, alpha, dropout, target_modules)
        vroots = self._module_roots(self.vision_names)
        proots = self._module_roots(self.projector_names)
        in_vision = [n for n, _ in self.model.named_modules()
                     if n.endswith(".lora_A") and self._under(n, vroots) and not self._under(n, proots)]
        if in_vision:
            warnings.warn(f"LoRA target_modules {target_modules!r} put adapters in the vision tower "
                          f"({len(in_vision)} modules, e.g. {in_vision[0]})", stacklevel=2)

    def enable_gradient_checkpointing(self) -> None:
        m = self._base_model()
        kwargs = {"use_reentrant": False}
        if hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers < 5.2x
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        m.config.use_cache = False

    def _clone(self, model: Any) -> "HFFamilyModel":
        other = type(self)(model, self.processor, name_or_path=self.name_or_path, device=self.device,
                           max_length=self.max_length, on_too_long=self.on_too_long, source_dir=self.source_dir, check=False)
        other.answer_lead = self.answer_lead
        other.eos_token_id = self.eos_token_id
        other.stop_token_ids = list(self.stop_token_ids)
        # One processor, so one cache of processed prompts and tokenized answers: the reference then scores
        # exactly the token sequences the policy does (sampled answers are kept as the tokens sampled).
        other._prompt_cache = self._prompt_cache
        other._answer_cache = self._answer_cache
        return other

    def frozen_reference(self) -> Any:
        """Adapters disabled (LoRA: no second copy) or a frozen copy of the same family class (full fine-tuning)."""
        if self.is_peft:
            return super().frozen_reference()
        import copy

        ref_model = copy.deepcopy(self._base_model())
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
        return self._clone(ref_model)

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, path: Path | str) -> None:
        """Model (or adapter) and processor, loadable with plain transformers / peft. Processor files of the
        source folder that this environment could not rebuild (e.g. a video processor's config) are copied."""
        super().save_pretrained(path)
        path = Path(path)
        if self.source_dir is not None and self.source_dir.is_dir():
            for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
                src = self.source_dir / name
                if src.is_file() and not (path / name).exists():
                    shutil.copy2(src, path / name)

    # ---------------------------------------------------------- load checks
    def check(self) -> None:
        """Checks run at load: vision tokens known, chat template sane, image tokens agree with the model."""
        if self.image_token_id is None:
            raise ImageTokenMismatch(f"{self.name_or_path}: config.json names no image token id (image_token_id / image_token_index)")
        proc_id = getattr(self.processor, "image_token_id", None)
        if isinstance(proc_id, int) and proc_id != self.image_token_id:
            raise ImageTokenMismatch(
                f"{self.name_or_path}: the processor's image token id {proc_id} differs from the model's {self.image_token_id}"
            )
        if self.uses_chat_template:
            self._check_chat_template()
        self._probe_image_tokens()

    def _render(self, messages: list[dict[str, Any]], **kw: Any) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, **kw)

    def _check_chat_template(self) -> None:
        if not getattr(self.processor, "chat_template", None) and getattr(self.tokenizer, "chat_template", None):
            self.processor.chat_template = self.tokenizer.chat_template  # older checkpoints keep it with the tokenizer
        if not getattr(self.processor, "chat_template", None):
            raise ChatTemplateError(
                f"{self.name_or_path}: the processor has no chat template; add one (chat_template.jinja or chat_template.json "
                "in the folder) — prompts are rendered through it"
            )
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
        prompt = self._render([user], add_generation_prompt=True)
        full = None
        for content in ([{"type": "text", "text": PROBE_ANSWER}], PROBE_ANSWER):
            try:
                text = self._render([user, {"role": "assistant", "content": content}])
            except Exception:  # noqa: BLE001 - try the other content form
                continue
            if PROBE_ANSWER in text:
                full = text
                break
        if full is None:
            raise ChatTemplateError(f"{self.name_or_path}: the chat template does not render an assistant turn's text")
        if not full.startswith(prompt):
            raise ChatTemplateError(
                f"{self.name_or_path}: the chat template's prompt with the generation prompt is not a prefix of the "
                f"conversation with the answer, so answers cannot be scored after it.\n  prompt: {prompt!r}\n  full:   {full!r}"
            )
        between, _, after = full[len(prompt):].partition(PROBE_ANSWER)
        self.answer_lead = between
        # The end-of-turn token the template writes after the answer, if it is one special token.
        head = after.lstrip(" ")
        specials = sorted(set(self.tokenizer.all_special_tokens) | set(getattr(self.tokenizer, "added_tokens_encoder", {}) or {}),
                          key=len, reverse=True)
        for tok in specials:
            if tok and head.startswith(tok):
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(tid, int) and tid not in self.vision_token_ids:
                    self.eos_token_id = tid
                    if tid not in self.stop_token_ids:
                        self.stop_token_ids.insert(0, tid)
                break

    def _probe_images(self) -> list[Any]:
        from PIL import Image

        return [Image.new("RGB", (64, 48), (120, 40, 200))]

    def _probe_image_tokens(self) -> None:
        """Process a probe prompt and run the model up to its language model: the processor's image
        tokens must match the features the vision tower produces."""
        images = self._probe_images()
        pr = self._process_checked(["Describe the image."], [images], ["<load probe>"])
        n_tok = sum(1 for t in pr.ids[0] if t == self.image_token_id)
        if n_tok == 0:
            raise ImageTokenMismatch(f"{self.name_or_path}: the processed probe prompt holds no image token "
                                     f"(id {self.image_token_id}); the processor does not place images in the prompt")
        ids = torch.tensor([pr.ids[0]])
        attn = torch.ones_like(ids)
        inputs = self._to_device({"input_ids": ids, "attention_mask": attn, **pr.image_inputs,
                                  **self._token_type_inputs(ids, attn, torch.zeros_like(ids, dtype=torch.bool))})
        base = self._base_model()

        def stop(*args: Any, **kwargs: Any) -> None:
            raise _ProbeDone

        handle = base.get_decoder().register_forward_pre_hook(stop, with_kwargs=True)
        was_training = base.training
        base.eval()
        try:
            with torch.no_grad():
                base(**inputs, use_cache=False)
        except _ProbeDone:
            pass
        except ValueError as exc:
            if "do not match" in str(exc):
                raise ImageTokenMismatch(
                    f"{self.name_or_path}: the processor puts {n_tok} image tokens in a prompt for a "
                    f"{images[0].width}x{images[0].height} image, but the model produces a different number of image "
                    f"features ({exc}). Processor and model config disagree (patch size, vision_feature_select_strategy, "
                    "num_additional_image_tokens, image size or image_seq_len)"
                ) from exc
            raise
        finally:
            handle.remove()
            base.train(was_training)
        self.probe_image_tokens = n_tok


# ===================================================================== families


class LlavaModel(HFFamilyModel):
    """LLaVA-1.5 (``LlavaForConditionalGeneration``)."""

    family = "llava"


class LlavaNextModel(HFFamilyModel):
    """LLaVA-NeXT / LLaVA-1.6 (AnyRes: ``image_sizes`` and a variable number of image tokens per image)."""

    family = "llava-next"
    # The tower takes the images' AnyRes crops stacked along dim 0: a pair's images are encoded once.
    SHARED_VISION_MODEL_TYPES = frozenset({"llava_next"})

    def _probe_images(self) -> list[Any]:
        from PIL import Image

        return [Image.new("RGB", (96, 48), (120, 40, 200))]  # wide: exercises the AnyRes grid and unpadding


class Qwen2VLModel(HFFamilyModel):
    """Qwen2-VL: dynamic resolution (``image_grid_thw``) and mRoPE over ``mm_token_type_ids``."""

    family = "qwen2-vl"
    projector_names = ("merger",)
    vision_names = ("visual",)

    def _expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
        grid = image_inputs.get("image_grid_thw")
        if grid is None:
            return [0] * len(images)
        merge = int(getattr(self.processor.image_processor, "merge_size", 2))
        per_image = (grid.prod(-1) // (merge * merge)).tolist()
        out, k = [], 0
        for imgs in images:
            out.append(int(sum(per_image[k : k + len(imgs)])))
            k += len(imgs)
        return out

    def _token_type_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        cfg = self._base_config()
        types = (input_ids == self.image_token_id).long()
        vid = getattr(cfg, "video_token_id", None)
        if vid is not None:
            types = types + 2 * (input_ids == vid).long()
        return {"mm_token_type_ids": types}


class Qwen25VLModel(Qwen2VLModel):
    """Qwen2.5-VL (window attention in the vision tower; otherwise as Qwen2-VL)."""

    family = "qwen2.5-vl"


class Idefics3Model(HFFamilyModel):
    """Idefics3 / SmolVLM: nested per-sample image lists, ``text_model`` and ``connector``."""

    family = "idefics3"
    language_model_names = ("text_model",)
    projector_names = ("connector",)
    vision_names = ("vision_model",)
    nested_images = True

    def _vision_token_ids(self) -> list[int]:
        ids = set(super()._vision_token_ids())
        unk = self.tokenizer.unk_token_id
        for t in getattr(self.processor, "row_col_ids", None) or []:  # <row_i_col_j> tile markers of split images
            if isinstance(t, int) and t != unk:
                ids.add(t)
        return sorted(ids)

    def _expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
        pam = image_inputs.get("pixel_attention_mask")
        if pam is None:
            return [0] * len(images)
        real = pam.flatten(2).any(-1).sum(-1).tolist()  # real (sub-)images per row
        seq = int(getattr(self.processor, "image_seq_len"))
        return [int(n) * seq for n in real]


class PaliGemmaModel(HFFamilyModel):
    """PaliGemma: no chat template; the processor lays out ``<image>``*n ``<bos>`` prompt ``\\n`` and the
    answer follows with ``<eos>``; ``token_type_ids`` mark the bidirectional prefix (0) and the answer (1)."""

    family = "paligemma"
    uses_chat_template = False
    SHARED_VISION_MODEL_TYPES = frozenset({"paligemma"})  # SigLIP takes images stacked along dim 0

    def format_prompt(self, prompt: str, n_images: int) -> str:
        return self.processor.image_token * n_images + prompt

    def _process(self, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> _Prompted:
        with_img = [i for i, imgs in enumerate(images) if imgs]
        ids: list[list[int] | None] = [None] * len(prompts)
        image_inputs: dict[str, Any] = {}
        if with_img:
            enc = self.processor(text=[self.format_prompt(prompts[i], len(images[i])) for i in with_img],
                                 images=[list(images[i]) for i in with_img], return_tensors="pt", padding=True)
            for row, i in enumerate(with_img):
                ids[i] = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            image_inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "token_type_ids", "labels")}
        bos = self.tokenizer.bos_token or ""
        for i in range(len(prompts)):
            if ids[i] is None:  # the processor requires images; this is its text layout without them
                ids[i] = self.tokenizer(bos + prompts[i] + "\n", add_special_tokens=False)["input_ids"]
        seq = int(self.processor.image_seq_length)
        return _Prompted([list(r) for r in ids], image_inputs, [seq * len(imgs) for imgs in images])

    def _token_type_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if response_mask is None:  # generation: the whole prompt is prefix
            return {"token_type_ids": torch.zeros_like(input_ids)}
        # answer and padding are causal (1); the prompt is the bidirectional prefix (0)
        return {"token_type_ids": (response_mask | (attention_mask == 0)).long()}

    def check(self) -> None:
        super().check()
        # The layout above must be the processor's own training layout (prompt + suffix + eos).
        from PIL import Image

        img = Image.new("RGB", (32, 32), (1, 2, 3))
        enc = self.processor(text=[self.format_prompt("Describe the image.", 1)], images=[img], suffix=[PROBE_ANSWER], return_tensors="pt")
        mine = self._process(["Describe the image."], [[img]]).ids[0] + self._answer_ids(PROBE_ANSWER)
        theirs = enc["input_ids"][0].tolist()
        if theirs != mine:
            warnings.warn(
                f"{self.name_or_path}: the PaliGemma prompt+answer tokens differ from the processor's prefix/suffix layout "
                f"(processor: {self.tokenizer.convert_ids_to_tokens(theirs[-12:])}, here: "
                f"{self.tokenizer.convert_ids_to_tokens(mine[-12:])}); check the tokenizer's bos/eos settings", stacklevel=2)


FAMILIES: dict[str, type[HFFamilyModel]] = {
    "llava": LlavaModel,
    "llava-next": LlavaNextModel,
    "qwen2-vl": Qwen2VLModel,
    "qwen2.5-vl": Qwen25VLModel,
    "idefics3": Idefics3Model,
    "paligemma": PaliGemmaModel,
}

MODEL_TYPES: dict[str, str] = {
    "llava": "llava",
    "llava_next": "llava-next",
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2.5-vl",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
    "paligemma": "paligemma",
}

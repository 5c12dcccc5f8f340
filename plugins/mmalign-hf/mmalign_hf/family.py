"""The base of every family adapter: :class:`~mmalign_hf.model.HFVisionLanguageModel` plus load-time checks,
per-sample image-token checks, too-long filtering and training setup by module name.

A family (see :mod:`mmalign_hf.families`) is a subclass that sets class attributes (its module names,
``nested_images``, ``uses_chat_template``, the model types a fast path is verified for) and overrides a few
public methods where it differs:

- :meth:`HFFamilyModel.run_processor`: how prompts and images go through the processor;
- :meth:`HFFamilyModel.expected_image_tokens`: image tokens each row must hold for its images;
- :meth:`~mmalign_hf.encoding.PromptEncoding.extra_token_inputs`: per-token companions of the ids;
- :meth:`HFFamilyModel.find_vision_token_ids`: the vision interface's special tokens;
- :meth:`~mmalign_hf.checks.LoadChecks.probe_images` and :meth:`~mmalign_hf.checks.LoadChecks.check`;
- :meth:`~mmalign_hf.encoding.PromptEncoding.format_prompt`.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair

from .checks import ImageTokenMismatch, LoadChecks
from .encoding import EncodedBatch, SequenceTooLong
from .family_training import FamilyTrainingSetup
from .lengths import LengthFilter
from .model import HFVisionLanguageModel


@dataclass
class ProcessedPrompts:
    """What :meth:`HFFamilyModel.run_processor` returns."""

    ids: list[list[int]]  # unpadded prompt ids per row (image tokens expanded)
    image_inputs: dict[str, Any]  # pixel tensors and their companions, batched as the model wants them
    expected_image_tokens: list[int] | None  # per row, from the images alone (None: unknown)
    expected_per_image: list[list[int]] | None = None  # per row, per image (None: unknown, or not one run per image)


def misplaced_image(runs: Sequence[int], per_image: Sequence[int]) -> int | None:
    """The index of the first image whose tokens do not line up with the row's runs of image tokens, or None.

    Adjacent images may form one run (nothing between their placeholders), so a run must hold the tokens
    of a whole number of consecutive images.
    """
    k = 0
    for run in runs:
        start, total = k, 0
        while total < run and k < len(per_image):
            total += per_image[k]
            k += 1
        if total != run:
            return min(start, len(per_image) - 1) if per_image else 0
    return None if k == len(per_image) else k


def image_token_runs(row: Sequence[int], token_id: int) -> list[int]:
    """Lengths of the maximal runs of ``token_id`` in ``row``."""
    runs: list[int] = []
    previous = False
    for t in row:
        if t == token_id:
            if previous:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = t == token_id
    return runs


class HFFamilyModel(LoadChecks, LengthFilter, FamilyTrainingSetup, HFVisionLanguageModel):
    """The generic adapter plus load-time checks, per-sample image-token checks and family hooks.

    Args (beyond :class:`~mmalign_hf.model.HFVisionLanguageModel`):
        on_too_long: ``"drop"`` or ``"fail"``: what :meth:`filter_too_long` does with over-long samples.
        source_dir: the local folder the checkpoint came from (extra processor files are copied on save).
        check: run the load-time checks (chat template, image-token probe) now.
    """

    family = "generic"
    #: Images go to the processor as one list per row (else one flat list).
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
        self.vision_token_ids = self.find_vision_token_ids()
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

    def expected_tokens_per_image(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[list[int]] | None:
        """Image tokens of each image of each row, where each image's tokens form one run (None: unknown)."""
        flat = [(im.height, im.width) for imgs in images for im in imgs]
        fn = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if not flat or fn is None:
            return None
        try:
            per_image = [int(n) for n in fn(image_sizes=[list(s) for s in flat])["num_image_tokens"]]
        except Exception:  # noqa: BLE001 - no formula: the per-row check still runs
            return None
        out, k = [], 0
        for imgs in images:
            out.append(per_image[k : k + len(imgs)])
            k += len(imgs)
        return out

    def expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
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

    # ---------------------------------------------------------------- tokens
    def find_vision_token_ids(self) -> list[int]:
        """Special tokens of the vision interface; never generated, never allowed in answers."""
        cfg = self.base_config()
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
        gen = getattr(self.base_model(), "generation_config", None)
        for v in (self.eos_token_id, getattr(gen, "eos_token_id", None)):
            for t in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(t, int) and t not in ids:
                    ids.append(t)
        return ids

    def _vision_strings(self) -> list[str]:
        return [s for s in (self.tokenizer.convert_ids_to_tokens(i) for i in self.vision_token_ids) if isinstance(s, str)]

    # ------------------------------------------------------------- encoding
    def run_processor(self, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> ProcessedPrompts:
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
        return ProcessedPrompts(prompt_ids, image_inputs, self.expected_image_tokens(image_inputs, images),
                                self.expected_tokens_per_image(image_inputs, images))

    @contextlib.contextmanager
    def _naming(self, names: Sequence[str]) -> Iterator[None]:
        """Sample names for the rows the next ``prompt_batch`` processes (error messages only)."""
        saved, self._row_names = self._row_names, [str(n) for n in names]
        try:
            yield
        finally:
            self._row_names = saved

    def prompt_batch(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]]) -> tuple[list[list[int]], dict[str, Any]]:
        """Every path of the base class (shared-prompt pairs, ``encode``, generation) comes through here,
        so the per-row image-token check runs before any forward pass."""
        names = self._row_names if self._row_names is not None and len(self._row_names) == len(prompts) else [
            f"row {i}" for i in range(len(prompts))]
        pr = self._process_checked(prompts, [[r.load() for r in imgs] for imgs in images], names)
        return pr.ids, pr.image_inputs

    def _process_checked(self, prompts: Sequence[str], images: Sequence[Sequence[Any]], names: Sequence[str]) -> ProcessedPrompts:
        """:meth:`run_processor` and :meth:`_check_prompts`; a processor error caused by a literal placeholder names the sample."""
        try:
            pr = self.run_processor(prompts, images)
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

    def _check_prompts(self, pr: ProcessedPrompts, names: Sequence[str], prompts: Sequence[str]) -> None:
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
            per_image = pr.expected_per_image[i] if pr.expected_per_image is not None else None
            if per_image and len(per_image) > 1:
                runs = image_token_runs(row, self.image_token_id)
                bad = misplaced_image(runs, per_image)
                if bad is not None:
                    raise ImageTokenMismatch(
                        f"sample {names[i]}: image {bad + 1} of {len(per_image)} needs {per_image[bad]} image tokens, but the "
                        f"processed prompt's image-token runs are {runs} for per-image needs {per_image} ({self.family} family, "
                        f"{self.name_or_path}); the processor placed the images' tokens out of step with the images"
                    )

    def _check_answers(self, answers: Sequence[str], names: Sequence[str]) -> None:
        for a, name in zip(answers, names):
            bad = sorted({t for t in self.answer_ids(a, add_eos=False) if t in self.vision_token_ids})
            if bad:
                toks = self.tokenizer.convert_ids_to_tokens(bad)
                raise ImageTokenMismatch(f"sample {name}: the answer contains the vision special token(s) {toks}; "
                                         "remove them from the text (they would break the image-token count)")

    def check_length(self, n: int, what: str) -> None:
        if self.max_length is not None and n > self.max_length:
            raise SequenceTooLong(
                f"{what} has {n} tokens (image tokens included) but the length budget max_length is {self.max_length}; "
                "image tokens are never truncated: raise max_length, or drop such samples before batching with "
                "filter_too_long (on_too_long: drop)"
            )

    def encode(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]], answers: Sequence[str],
               ids: Sequence[str] | None = None) -> EncodedBatch:
        names = [str(ids[i]) if ids else f"row {i}" for i in range(len(prompts))]
        self._check_answers(answers, names)
        with self._naming(names):
            return super().encode(prompts, images, answers, ids)

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True, token_logps: bool = False) -> Any:
        for p in pairs:
            answers = [p.chosen] + ([p.rejected, *p.extra_rejected] if with_rejected else [])
            self._check_answers(answers, [p.id] * len(answers))
        with self._naming([p.id for p in pairs]):
            return super().pair_logps(pairs, with_rejected=with_rejected, token_logps=token_logps)

    # ------------------------------------------------------------ generation
    def generation_inputs(self, reqs: Sequence[GenerationRequest]) -> dict[str, Any]:
        with self._naming([f"request {i}" for i in range(len(reqs))]):
            return super().generation_inputs(reqs)

    def banned_token_ids(self) -> list[int]:
        return [int(t) for t in self.vision_token_ids]

    def stop_ids(self) -> list[int]:
        return list(self.stop_token_ids)

    # ------------------------------------------------------------ reference
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

        ref_model = copy.deepcopy(self.base_model())
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

"""Load-time checks of a family adapter: vision tokens known, chat template sane, image tokens agree with
what the model produces for an image (a probe forward up to the language model)."""
from __future__ import annotations

from typing import Any

import torch

PROBE_ANSWER = "XYZZY answer."


class ImageTokenMismatch(ValueError):
    """The image tokens of a processed prompt do not match what the model will produce for its images."""


class ChatTemplateError(ValueError):
    """The processor's chat template is missing or does not render prompts as a prefix of conversations."""


class _ProbeDone(Exception):
    """Raised from a hook to stop a probe forward pass once the image features are merged."""


class LoadChecks:
    """:meth:`check`, run when a family adapter is built (a part of :class:`~mmalign_hf.family.HFFamilyModel`).

    A family overrides :meth:`probe_images` (the images the probe runs on) or extends :meth:`check`.
    """

    uses_chat_template = True

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

    def probe_images(self) -> list[Any]:
        """The images of the load probe (one small image here; AnyRes families use a wide one)."""
        from PIL import Image

        return [Image.new("RGB", (64, 48), (120, 40, 200))]

    def _probe_image_tokens(self) -> None:
        """Process a probe prompt and run the model up to its language model: the processor's image
        tokens must match the features the vision tower produces."""
        images = self.probe_images()
        pr = self._process_checked(["Describe the image."], [images], ["<load probe>"])
        n_tok = sum(1 for t in pr.ids[0] if t == self.image_token_id)
        if n_tok == 0:
            raise ImageTokenMismatch(f"{self.name_or_path}: the processed probe prompt holds no image token "
                                     f"(id {self.image_token_id}); the processor does not place images in the prompt")
        ids = torch.tensor([pr.ids[0]])
        attn = torch.ones_like(ids)
        inputs = self.inputs_to_device({"input_ids": ids, "attention_mask": attn, **pr.image_inputs,
                                        **self.extra_token_inputs(ids, attn, torch.zeros_like(ids, dtype=torch.bool))})
        base = self.base_model()

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

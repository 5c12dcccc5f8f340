"""The loaders: one published layout each, converted record by record to canonical pairs.

Schemas follow the dataset cards and reference code (see ``docs/datasets.md``
for the field-by-field mapping). Each ``make_*`` function is a component
factory: ``factory(config) -> source``.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any, Optional

from .base import DatasetSource
from .config import (
    HadpoConfig,
    LlavaRlhfConfig,
    LocalConfig,
    PovidConfig,
    RlaifVConfig,
    RlhfVConfig,
    VLFeedbackConfig,
)
from .errors import DataError, Skip
from .files import Record, data_files

HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model", "bot")


# ------------------------------------------------------------------------------ helpers
def message_text(msg: Any) -> Optional[str]:
    """The text of a message: a string, ``{"from", "value"}`` (LLaVA) or ``{"role", "content"}`` (OpenAI/TRL; content
    a string or a list of ``{"type": "text", "text"}`` parts)."""
    if isinstance(msg, str):
        return msg
    if not isinstance(msg, dict):
        return None
    if isinstance(msg.get("value"), str):
        return msg["value"]
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    return None


def message_role(msg: Any) -> str:
    if not isinstance(msg, dict):
        return ""
    return str(msg.get("from") or msg.get("role") or "").lower()


def image_parts(msg: Any) -> int:
    """Image placeholders in a TRL message (``{"type": "image"}`` parts)."""
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")


def exchanges(conversation: Any) -> list[tuple[str, str]]:
    """``(human, assistant)`` text pairs of a LLaVA-style conversation, in order."""
    if not isinstance(conversation, list):
        raise Skip("missing_field", "the conversation is missing or not a list")
    out = []
    pending: Optional[str] = None
    for msg in conversation:
        role, text = message_role(msg), message_text(msg)
        if role in HUMAN_ROLES:
            pending = text or ""
        elif role in ASSISTANT_ROLES and pending is not None:
            out.append((pending, text or ""))
            pending = None
    return out


def parse_rating(value: Any) -> Optional[float]:
    """A rating as a float, or ``None`` when it is not a finite number (VLFeedback ratings are strings, sometimes 'N/A')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def row_rng(seed: int, key: str) -> random.Random:
    """A random generator that depends only on (seed, key): draws do not depend on the record order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _raw_id(data: dict[str, Any], *names: str) -> Optional[str]:
    for n in names:
        v = data.get(n)
        if v not in (None, ""):
            return str(v)
    return None


# -------------------------------------------------------------------------------- POVID
class PovidSource(DatasetSource):
    """POVID: ``conversations`` (y+) and ``rejected_conversations`` (y-) over COCO train2014 paths."""

    name = "povid"
    layout = (
        "POVID_preference_data_for_VLLMs_version_1.json (the JSON list from YiyangAiLab/POVID_preference_data_for_VLLMs; "
        "the parquet copy on refs/convert/parquet also works) as `path`, and COCO train2014 images in a folder given as "
        "`image_root` (paths like ./data/coco/COCO_train2014_....jpg are tried as given under it, then by file name)."
    )
    hub_patterns = ["*.json", "*.parquet"]
    preferred_files = ("POVID_preference_data_for_VLLMs_version_1.json", "POVID_preference_data_for_VLLMs.json")

    def __init__(self, config: PovidConfig):
        super().__init__(config)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        chosen_ex = exchanges(d.get("conversations"))
        rejected_ex = exchanges(d.get("rejected_conversations"))
        if not chosen_ex or not rejected_ex:
            raise Skip("missing_field", "conversations / rejected_conversations hold no human -> gpt exchange")
        n = min(len(chosen_ex), len(rejected_ex))
        turn = self.config.turn
        picks = [0] if turn == "first" else [n - 1] if turn == "last" else list(range(n))
        image = self.image_value(d.get("image"), record)
        out = []
        for k in picks:
            (prompt, chosen), (_, rejected) = chosen_ex[k], rejected_ex[k]
            out.append(
                {
                    "key": _raw_id(d, "id"),
                    "suffix": f"t{k}" if turn == "all" else None,
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "images": [image],
                    "meta": {"turn": k, "turns": n},
                }
            )
        return out


# ------------------------------------------------------------------------------- RLHF-V
class RlhfVSource(DatasetSource):
    """RLHF-V: ``text`` is a JSON object with question, chosen, rejected; ``image`` holds the bytes."""

    name = "rlhf-v"
    layout = "RLHF-V-Dataset.parquet from openbmb/RLHF-V-Dataset (a file, or a folder of parquet files) as `path`."
    hub_patterns = ["*.parquet"]
    file_patterns = ("*.parquet", "*.arrow")
    preferred_files = ("RLHF-V-Dataset.parquet",)

    def __init__(self, config: RlhfVConfig):
        super().__init__(config)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        text = d.get("text")
        if isinstance(text, dict):
            fields = text
        else:
            if not isinstance(text, str):
                raise Skip("missing_field", "no `text` column")
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as exc:
                raise Skip("bad_json", f"`text` is not valid JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise Skip("bad_json", "`text` is JSON but not an object with question/chosen/rejected")
        missing = [k for k in ("question", "chosen", "rejected") if not isinstance(fields.get(k), str)]
        if missing:
            raise Skip("missing_field", f"`text` lacks {', '.join(missing)}")
        image = self.image_value(d.get("image"), record, [d["image_path"]] if isinstance(d.get("image_path"), str) else [])
        meta = {k: d.get(k) for k in ("ds_name", "origin_dataset", "origin_split", "image_path", "idx") if d.get(k) is not None}
        return [
            {
                "key": _raw_id(d, "idx"),
                "prompt": fields["question"],
                "chosen": fields["chosen"],
                "rejected": fields["rejected"],
                "images": [image],
                "meta": meta,
            }
        ]


# ------------------------------------------------------------------------------ RLAIF-V
class RlaifVSource(DatasetSource):
    """RLAIF-V: question / chosen / rejected columns and ``image`` bytes."""

    name = "rlaif-v"
    layout = "the parquet shards of openbmb/RLAIF-V-Dataset (a folder of *.parquet files, or one file) as `path`."
    hub_patterns = ["*.parquet"]
    file_patterns = ("*.parquet", "*.arrow")

    def __init__(self, config: RlaifVConfig):
        super().__init__(config)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        image = self.image_value(d.get("image"), record, [d["image_path"]] if isinstance(d.get("image_path"), str) else [])
        meta = {k: d.get(k) for k in ("ds_name", "origin_dataset", "origin_split", "image_path", "idx") if d.get(k) is not None}
        return [
            {
                "key": _raw_id(d, "idx"),
                "prompt": d.get("question"),
                "chosen": d.get("chosen"),
                "rejected": d.get("rejected"),
                "images": [image],
                "meta": meta,
            }
        ]


# ---------------------------------------------------------------------------- VLFeedback
ASPECTS = {
    "helpfulness": "Helpfulness",
    "visual_faithfulness": "Visual Faithfulness",
    "ethical_considerations": "Ethical Considerations",
}


def completion_list(value: Any) -> list[dict[str, Any]]:
    """``completions`` as a list of dicts, from the raw JSONL list or the dict of lists that `datasets` features produce."""
    if isinstance(value, list):
        return [c for c in value if isinstance(c, dict)]
    if isinstance(value, dict):
        lengths = {len(v) for v in value.values() if isinstance(v, list)}
        if len(lengths) != 1:
            raise Skip("missing_field", "`completions` is a dict whose lists differ in length")
        n = lengths.pop()
        return [{k: (v[i] if isinstance(v, list) else None) for k, v in value.items()} for i in range(n)]
    raise Skip("missing_field", "no `completions` list")


class VLFeedbackSource(DatasetSource):
    """VLFeedback: four rated completions per prompt, paired by ``pairing`` and ``rating``."""

    name = "vlfeedback"
    layout = (
        "vlfeedback_80k.jsonl from MMInstruction/VLFeedback (or its parquet/`save_to_disk` copies) as `path`, and "
        "merged_images.zip unpacked into `image_root` (images at merged_images/{id}.jpg, or under the `img_path` names)."
    )
    hub_patterns = ["*.jsonl", "*.parquet"]
    preferred_files = ("vlfeedback_80k.jsonl",)

    def __init__(self, config: VLFeedbackConfig):
        super().__init__(config)

    def _score(self, completion: dict[str, Any]) -> Optional[float]:
        ann = completion.get("annotations")
        if not isinstance(ann, dict):
            return None
        aspects = list(ASPECTS.values()) if self.config.rating == "mean" else [ASPECTS[self.config.rating]]
        values = []
        for aspect in aspects:
            entry = ann.get(aspect)
            rating = parse_rating(entry.get("Rating") if isinstance(entry, dict) else entry)
            if rating is None:
                return None
            values.append(rating)
        return sum(values) / len(values)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        raw_id = _raw_id(d, "id")
        completions = completion_list(d.get("completions"))
        rated: list[tuple[float, int, str, Any]] = []
        unrated = empty = 0
        problems: list[str] = []
        for i, c in enumerate(completions):
            response = c.get("response")
            if not isinstance(response, str) or not response.strip():
                self.flag("empty_response", f"completion {i} ({c.get('model')}) has an empty response", counted_as="empty_completions")
                empty += 1
                problems.append(f"completion {i} ({c.get('model')}) is empty")
                continue
            score = self._score(c)
            if score is None:
                unrated += 1
                problems.append(f"completion {i} ({c.get('model')}) has a rating that is not a number")
                continue
            rated.append((score, i, response, c.get("model")))
        if problems and self.config.incomplete == "skip-prompt":
            raise Skip("incomplete_ratings", "; ".join(problems) + " (incomplete: skip-prompt)")
        if len(rated) < 2:
            reason = "unparsable_rating" if unrated else "empty_response" if empty else "too_few_completions"
            raise Skip(reason, f"{len(rated)} usable completion(s) of {len(completions)} ({unrated} unrated, {empty} empty)")
        if unrated:
            self.drop("unrated_completions", unrated)
        names = [d["img_path"]] if isinstance(d.get("img_path"), str) else []
        if raw_id:
            names += [f"merged_images/{raw_id}.jpg", f"{raw_id}.jpg"]
        image = self.image_value(d.get("image"), record, names) if d.get("image") is not None else self.find_image(names, record)
        candidates: list[tuple[tuple[float, int, str, Any], tuple[float, int, str, Any]]] = []
        if self.config.pairing == "best-vs-worst":
            best = max(rated, key=lambda r: (r[0], -r[1]))  # first of the top scores
            worst = min(rated, key=lambda r: (r[0], r[1]))  # first of the bottom scores
            if best[0] == worst[0]:
                raise Skip("tie", f"all {len(rated)} rated completions score {best[0]:g}")
            candidates.append((best, worst))
        else:
            ties = 0
            for a in range(len(rated)):
                for b in range(a + 1, len(rated)):
                    x, y = rated[a], rated[b]
                    if x[0] == y[0]:
                        ties += 1
                    else:
                        candidates.append((x, y) if x[0] > y[0] else (y, x))
            if not candidates:
                raise Skip("tie", f"all {len(rated)} rated completions score {rated[0][0]:g}")
            if ties:
                self.drop("tied_pairs", ties)
        out = []
        for win, lose in candidates:
            out.append(
                {
                    "key": raw_id,
                    "suffix": f"{win[1]}>{lose[1]}" if self.config.pairing == "all-ordered" else None,
                    "prompt": d.get("prompt"),
                    "chosen": win[2],
                    "rejected": lose[2],
                    "images": [image],
                    "meta": {
                        "chosen_model": win[3],
                        "rejected_model": lose[3],
                        "chosen_score": win[0],
                        "rejected_score": lose[0],
                        "rating": self.config.rating,
                        "models": d.get("models"),
                    },
                }
            )
        return out


# ---------------------------------------------------------------------------- LLaVA-RLHF
class LlavaRlhfSource(DatasetSource):
    """LLaVA-RLHF human preferences: ``output_1`` / ``output_2`` answer the last human turn; ``preference`` is 1 or 2."""

    name = "llava-rlhf"
    layout = (
        "llava_7b_v1_preference.json from zhiqings/LLaVA-Human-Preference-10K as `path`, and COCO train2017 images in "
        "`image_root` (the `image` field is a file name; without `image_root`, train2017/ beside the data file is tried)."
    )
    hub_patterns = ["*.json"]
    preferred_files = ("llava_7b_v1_preference.json",)
    default_image_dirs = ("train2017", "coco/train2017", "images/train2017")

    def __init__(self, config: LlavaRlhfConfig):
        super().__init__(config)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        conversation = d.get("conversations")
        if not isinstance(conversation, list):
            raise Skip("missing_field", "no `conversations` list")
        humans = [i for i, m in enumerate(conversation) if message_role(m) in HUMAN_ROLES]
        if not humans:
            raise Skip("missing_field", "`conversations` has no human turn")
        prompt = message_text(conversation[humans[-1]])
        outputs = [message_text(d.get("output_1")), message_text(d.get("output_2"))]
        if any(o is None for o in outputs):
            raise Skip("missing_field", "output_1 / output_2 missing")
        pref = d.get("preference")
        try:
            pref = int(pref) if not isinstance(pref, bool) else None
        except (TypeError, ValueError):
            pref = None
        if pref not in (1, 2):
            raise Skip("bad_preference", f"`preference` must be 1 or 2, got {d.get('preference')!r}")
        chosen, rejected = (outputs[0], outputs[1]) if pref == 1 else (outputs[1], outputs[0])
        image = self.image_value(d.get("image"), record)
        meta = {"preference": pref, "context_turns": len(humans) - 1}
        if "hallucination" in d:
            meta["hallucination"] = d.get("hallucination")
        return [{"key": _raw_id(d, "id"), "prompt": prompt, "chosen": chosen, "rejected": rejected, "images": [image], "meta": meta}]


# -------------------------------------------------------------------------------- HA-DPO
class HadpoSource(DatasetSource):
    """HA-DPO description data (``desc_data.json``: image id -> chosen and rejected description lists) over Visual Genome.

    Also reads HA-DPO's ``pope_data.json`` (a list with ``question``, ``chosen``,
    ``reject``; items the model already answered correctly are skipped, as HA-DPO does).
    """

    name = "hadpo"
    layout = (
        "hadpo/<model>/desc_data.json from juliozhao/hadpo-data (the file, its folder, or the whole release; `model` picks "
        "the folder) as `path`, and Visual Genome images in `image_root` (VG_100K/{id}.jpg, VG_100K_2/{id}.jpg or {id}.jpg)."
    )
    hub_patterns = ["hadpo/*/desc_data.json", "hadpo/*/pope_data.json"]

    def __init__(self, config: HadpoConfig):
        super().__init__(config)

    def select_files(self, root: Path) -> list[Path]:
        if root.is_file():
            return [root]
        for candidate in (root / "desc_data.json", root / self.config.model / "desc_data.json", root / "hadpo" / self.config.model / "desc_data.json"):
            if candidate.is_file():
                return [candidate]
        found = [p for p in data_files(root, self.config.split, ("desc_data.json",)) if self.config.model.lower() in (q.lower() for q in p.parts)]
        if not found:
            raise DataError(f"{self.name}: no desc_data.json for model {self.config.model!r} under {root}. {self.where_to_place()}")
        return found[:1]

    def _image(self, image_id: str, record: Record) -> dict[str, Any]:
        return self.find_image([f"VG_100K/{image_id}.jpg", f"VG_100K_2/{image_id}.jpg", f"{image_id}.jpg"], record)

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        image_id = _raw_id(d, "image_id", "__key__", "id")
        if image_id is None:
            raise Skip("missing_field", "no image id")
        if "question" in d:  # pope_data.json
            if d.get("correct") is True:
                raise Skip("pope_correct", "the model answered this POPE question correctly (HA-DPO trains on the others)")
            rejected = d.get("reject", d.get("rejected"))
            return [
                {"key": image_id, "prompt": d.get("question"), "chosen": d.get("chosen"), "rejected": rejected,
                 "images": [self._image(image_id, record)], "meta": {"part": "pope", "answer": d.get("answer")}}
            ]
        chosen = d.get("chosen")
        rejected = d.get("rejected")
        chosen = [chosen] if isinstance(chosen, str) else chosen
        rejected = [rejected] if isinstance(rejected, str) else rejected
        if not isinstance(chosen, list) or not isinstance(rejected, list) or not chosen or not rejected:
            raise Skip("missing_field", "chosen / rejected must be non-empty lists of descriptions")
        rng = row_rng(self.config.sample_seed, image_id)
        if self.config.pairing == "one":
            combos = [(rng.randrange(len(chosen)), rng.randrange(len(rejected)))]
        else:
            combos = [(i, j) for i in range(len(chosen)) for j in range(len(rejected))]
        image = self._image(image_id, record)
        out = []
        for i, j in combos:
            out.append(
                {
                    "key": image_id,
                    "suffix": f"{i}-{j}" if self.config.pairing == "all" else None,
                    "prompt": rng.choice(self.config.prompts),
                    "chosen": chosen[i],
                    "rejected": rejected[j],
                    "images": [image],
                    "meta": {"part": "desc", "chosen_index": i, "rejected_index": j},
                }
            )
        return out


# --------------------------------------------------------------------------------- local
class LocalSource(DatasetSource):
    """The canonical pair format, or TRL's vision preference format, from JSONL, JSON, parquet or Arrow."""

    name = "local"
    layout = (
        "a canonical file (id, prompt, chosen, rejected, images[, rejected_images, extra_rejected, source, meta]) or a TRL "
        "file (images, prompt, chosen, rejected) in JSONL, JSON, parquet or Arrow (`mmalign data convert` writes both)."
    )

    def __init__(self, config: LocalConfig):
        super().__init__(config)
        self._seen_ids: set[bytes] = set()

    def _index(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._seen_ids = set()
        try:
            return super()._index(*args, **kwargs)
        finally:
            self._seen_ids = set()

    def _images(self, value: Any, record: Record) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        return [self.image_value(v, record) for v in value if v is not None]

    def convert(self, record: Record) -> list[dict[str, Any]]:
        d = record.data
        fmt = self.config.format
        if fmt == "auto":
            fmt = "trl" if isinstance(d.get("prompt"), list) or ("id" not in d and "images" in d) else "canonical"
        return [self._trl(d, record) if fmt == "trl" else self._canonical(d, record)]

    def _canonical(self, d: dict[str, Any], record: Record) -> dict[str, Any]:
        meta = d.get("meta")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) if meta else {}
            except json.JSONDecodeError:
                meta = {"meta": meta}
        meta = dict(meta) if isinstance(meta, dict) else {}
        # pairs written by `mmalign data convert` keep their original origin under "origin"
        for k in ("file", "row"):
            if k in meta:
                meta.setdefault("origin", {})[k] = meta.pop(k)
        rejected_images = d.get("rejected_images")
        pair_id = _raw_id(d, "id")
        if pair_id is not None:
            digest = hashlib.blake2b(pair_id.encode(), digest_size=8).digest()
            if digest in self._seen_ids:
                raise Skip("duplicate_id", f"id {pair_id!r} appears more than once")
            self._seen_ids.add(digest)
        return {
            "id": pair_id,
            "source": d.get("source") if isinstance(d.get("source"), str) else None,
            "prompt": d.get("prompt"),
            "chosen": d.get("chosen"),
            "rejected": d.get("rejected"),
            "images": self._images(d.get("images", d.get("image")), record),
            "rejected_images": self._images(rejected_images, record) if rejected_images is not None else None,
            "extra_rejected": d.get("extra_rejected") or [],
            "meta": meta,
        }

    def _trl(self, d: dict[str, Any], record: Record) -> dict[str, Any]:
        prompt = d.get("prompt")
        meta: dict[str, Any] = {}
        if isinstance(prompt, list):
            users = [m for m in prompt if message_role(m) in HUMAN_ROLES]
            if not users:
                raise Skip("missing_field", "the conversational prompt has no user message")
            meta["context_messages"] = len(prompt) - 1
            meta["image_parts"] = sum(image_parts(m) for m in prompt)
            prompt = message_text(users[-1])
        answers = []
        for side in ("chosen", "rejected"):
            value = d.get(side)
            if isinstance(value, list):
                replies = [m for m in value if message_role(m) in ASSISTANT_ROLES] or value
                value = message_text(replies[-1]) if replies else None
            answers.append(value)
        return {
            "id": _raw_id(d, "id"),
            "prompt": prompt,
            "chosen": answers[0],
            "rejected": answers[1],
            "images": self._images(d.get("images", d.get("image")), record),
            "meta": meta,
        }


# ------------------------------------------------------------------------------ factories
def make_povid(config: PovidConfig) -> PovidSource:
    return PovidSource(config)


def make_rlhf_v(config: RlhfVConfig) -> RlhfVSource:
    return RlhfVSource(config)


def make_rlaif_v(config: RlaifVConfig) -> RlaifVSource:
    return RlaifVSource(config)


def make_vlfeedback(config: VLFeedbackConfig) -> VLFeedbackSource:
    return VLFeedbackSource(config)


def make_llava_rlhf(config: LlavaRlhfConfig) -> LlavaRlhfSource:
    return LlavaRlhfSource(config)


def make_hadpo(config: HadpoConfig) -> HadpoSource:
    return HadpoSource(config)


def make_local(config: LocalConfig) -> LocalSource:
    return LocalSource(config)


LOADERS: dict[str, type[DatasetSource]] = {
    cls.name: cls for cls in (PovidSource, RlhfVSource, RlaifVSource, VLFeedbackSource, LlavaRlhfSource, HadpoSource, LocalSource)
}

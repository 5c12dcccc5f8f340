"""What ``mmalign data check`` and ``mmalign data inspect`` compute, for any preference source.

Sources of this plugin get the full treatment (indexing statistics, skip
examples by file and row, every image decoded); any other static source is
checked by iterating its pairs.
"""
from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter, abc
from pathlib import Path
from typing import Any, Iterable, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import PreferencePair, SFTExample

from .base import POLICY_REASONS, DatasetSource
from .errors import DataError

MAX_EXAMPLES = 5


def _for_check(source: Any, reindex: bool = False) -> Any:
    """The same loader with ``on_error: skip`` (a check reports every bad row instead of stopping at the first), and
    ``reindex`` when asked."""
    if not isinstance(source, DatasetSource):
        return source
    update: dict[str, Any] = {}
    if source.config.on_error != "skip":
        update["on_error"] = "skip"
    if reindex and not source.config.reindex:
        update["reindex"] = True
    return type(source)(source.config.model_copy(update=update)) if update else source


def examples_of(source: Any, ctx: Context, kind: str = "pairs") -> Iterable[Any]:
    """What a training stage of ``kind`` reads, as the runner does: ``sft_examples`` for an SFT stage when the source
    has them, else the pairs."""
    if kind == "sft" and callable(getattr(source, "sft_examples", None)):
        return source.sft_examples(ctx)
    return source.pairs(ctx)


def answers_of(example: Any) -> dict[str, str]:
    """The answer texts of a pair (chosen, rejected) or of a supervised example (response)."""
    if isinstance(example, SFTExample):
        return {"response": example.response}
    return {"chosen": example.chosen, "rejected": example.rejected}


def check(source: Any, ctx: Context, images: str = "decode", kind: str = "pairs", reindex: bool = False) -> dict[str, Any]:
    """Index (or reuse the index of; ``reindex`` rebuilds it) a source, then decode every image (``images="decode"``).

    Returns a JSON-able report; ``report["problems"]`` counts bad rows (data
    errors, not pairing-policy skips) plus images that fail to decode.
    """
    source = _for_check(source, reindex)
    if isinstance(source, DatasetSource):
        seq = source.pairs(ctx)
        st = source.stats()
        report: dict[str, Any] = {
            "fingerprint": st["fingerprint"],
            "files": st["files"],
            "records": st.get("records"),
            "pairs_available": st.get("pairs_available"),
            "pairs": len(seq),
            "n_pairs": st.get("n_pairs"),
            "seed": st.get("seed"),
            "skipped": st.get("skipped") or {},
            "dropped": st.get("dropped") or {},
            "skip_examples": source.skip_examples(),
            "cache": st.get("cache"),
            "from_cache": st.get("from_cache"),
            "hints": st.get("hints") or [],
        }
        report["images"] = source.decode_all(ctx) if images == "decode" else None
    else:
        report = _generic_check(source, ctx, images == "decode", kind)
    errors = sum(n for r, n in report["skipped"].items() if r not in POLICY_REASONS)
    report["problems"] = errors + ((report.get("images") or {}).get("failed") or 0)
    return report


def length_report(source: Any, ctx: Context, model: Any, kind: str = "pairs", limit_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Examples longer than the model's ``max_length``: what the runner would drop before training.

    Exact (image tokens included) with a model that has ``sequence_lengths``; otherwise the text-only count the
    runner applies to models without ``filter_too_long`` (prompt plus the longest answer; a lower bound).
    """
    from mmalign_core.runner.lengths import text_token_count

    examples = examples_of(source, ctx, kind)
    if not isinstance(examples, abc.Sequence):
        examples = list(examples)
    budget = getattr(model, "max_length", None)
    report: dict[str, Any] = {"max_length": budget, "checked": len(examples), "over": 0, "examples": []}
    if not isinstance(budget, int):
        report["method"] = "none (the model has no length budget)"
        return report
    if callable(getattr(model, "sequence_lengths", None)):
        lengths = list(model.sequence_lengths(examples))
        report["method"] = "tokens, image tokens included"
    elif callable(getattr(model, "answer_tokens", None)):
        count = lambda text: len(model.answer_tokens(text))  # noqa: E731
        lengths = [text_token_count(examples[i], count, budget) for i in range(len(examples))]
        report["method"] = "text tokens only (prompt + longest answer; image tokens add to it)"
    else:
        report["method"] = "none (the model cannot count tokens)"
        return report
    over = [(i, n) for i, n in enumerate(lengths) if n > budget]
    report["over"] = len(over)
    report["longest"] = max(lengths, default=0)
    for i, n in over[:limit_examples]:
        ex = examples[i]
        meta = getattr(ex, "meta", {}) or {}
        where = f"{meta.get('file')} row {meta.get('row')}" if meta.get("file") is not None else f"pair {i}"
        report["examples"].append({"id": ex.id, "where": where, "tokens": n})
    return report


def _generic_check(source: Any, ctx: Context, decode: bool, kind: str) -> dict[str, Any]:
    skipped: Counter = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    n = n_images = failed = 0
    image_examples: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, pair in enumerate(examples_of(source, ctx, kind)):
        n += 1
        reason = None
        if not isinstance(pair, (PreferencePair, SFTExample)):
            reason = "not_an_example"
        elif not (pair.prompt or "").strip() and not pair.images:
            reason = "empty_prompt"
        elif not all(t.strip() for t in answers_of(pair).values()):
            reason = "empty_response"
        elif isinstance(pair, PreferencePair) and pair.chosen == pair.rejected and pair.rejected_images is None:
            reason = "identical"
        elif pair.id in seen:
            reason = "duplicate_id"
        if reason:
            skipped[reason] += 1
            bucket = examples.setdefault(reason, [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append({"where": f"pair {i}", "reason": reason, "detail": f"id {getattr(pair, 'id', '?')!r}"})
            continue
        seen.add(pair.id)
        if decode:
            for j, ref in enumerate(list(pair.images) + list(getattr(pair, "rejected_images", None) or [])):
                n_images += 1
                try:
                    ref.load()
                except Exception as exc:  # noqa: BLE001
                    failed += 1
                    if len(image_examples) < MAX_EXAMPLES:
                        image_examples.append({"id": pair.id, "where": f"pair {i}, image {j + 1}", "detail": f"{type(exc).__name__}: {exc}"})
    fp = source.fingerprint() if callable(getattr(source, "fingerprint", None)) else None
    return {
        "fingerprint": fp,
        "files": [],
        "records": None,
        "pairs_available": n,
        "pairs": n,
        "skipped": dict(skipped),
        "dropped": {},
        "skip_examples": examples,
        "images": {"images": n_images, "failed": failed, "examples": image_examples} if decode else None,
    }


# ----------------------------------------------------------------------------- inspect
def _distribution(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))])

    return {
        "min": float(ordered[0]),
        "p50": pct(0.5),
        "p90": pct(0.9),
        "max": float(ordered[-1]),
        "mean": round(statistics.fmean(ordered), 2),
    }


def words(text: str) -> int:
    return len(text.split())


def inspect(source: Any, ctx: Context, kind: str = "pairs") -> dict[str, Any]:
    """Statistics of a source's examples: count, word lengths of prompt and answers, images per example, skips."""
    lengths: dict[str, list[int]] = {}
    images: Counter = Counter()
    n = 0
    for example in examples_of(source, ctx, kind):
        n += 1
        lengths.setdefault("prompt", []).append(words(example.prompt))
        for field, text in answers_of(example).items():
            lengths.setdefault(field, []).append(words(text))
        images[len(example.images)] += 1
    st = source.stats() if callable(getattr(source, "stats", None)) else {}
    return {
        "pairs": n,
        "pairs_available": st.get("pairs_available", n),
        "records": st.get("records"),
        "n_pairs": st.get("n_pairs"),
        "seed": st.get("seed"),
        "words": {k: _distribution(v) for k, v in lengths.items()},
        "images_per_pair": {str(k): v for k, v in sorted(images.items())},
        "skipped": st.get("skipped") or {},
        "dropped": st.get("dropped") or {},
        "fingerprint": source.fingerprint() if callable(getattr(source, "fingerprint", None)) else None,
    }


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (deterministic)."""
    if n <= k:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def _thumbnail(ref: Any, size: int) -> str:
    try:
        image = ref.load()
    except Exception as exc:  # noqa: BLE001 - show the failure in the page
        return f'<div class="bad">image failed: {html.escape(str(exc))}</div>'
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    scale = max(1.0, 96 / max(image.width, image.height))  # tiny images are shown at 96 px, pixelated
    w, h = round(image.width * scale), round(image.height * scale)
    return f'<img src="data:image/jpeg;base64,{data}" width="{w}" height="{h}" style="image-rendering:pixelated" alt="image">'


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.pairs{border-collapse:collapse;width:100%}
table.pairs td,table.pairs th{border:1px solid #ccc;padding:.5em;vertical-align:top;text-align:left}
td.chosen{background:#eefaee} td.rejected{background:#fbeeee}
.text{white-space:pre-wrap;font-size:.9em;max-height:24em;overflow:auto}
.id{font-family:monospace;font-size:.8em;color:#666}
.bad{color:#a00}
table.stats td,table.stats th{padding:.2em .8em;text-align:right}
"""


def render_html(title: str, sections: Iterable[tuple[str, dict[str, Any], Sequence[Any]]], thumb: int = 256) -> str:
    """One page: per source, its statistics and a few pairs (images as embedded base64 thumbnails; chosen | rejected side by side)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    out.append(f"<h1>{html.escape(title)}</h1>")
    for heading, stats, shown in sections:
        out.append(f"<h2>{html.escape(heading)}</h2>")
        line = f"{stats['pairs']} examples"
        if stats.get("pairs_available") not in (None, stats["pairs"]):
            line += f" (subsample of {stats['pairs_available']}, seed {stats.get('seed')})"
        if stats.get("records") is not None:
            line += f" from {stats['records']} records"
        out.append(f"<p>{line}.</p>")
        if stats.get("skipped"):
            out.append("<p>Skipped: " + html.escape(", ".join(f"{k} {v}" for k, v in stats["skipped"].items())) + "</p>")
        out.append("<table class='stats'><tr><th></th><th>min</th><th>p50</th><th>p90</th><th>max</th><th>mean</th></tr>")
        for field, dist in stats["words"].items():
            cells = "".join(f"<td>{dist[k]:g}</td>" if k in dist else "<td></td>" for k in ("min", "p50", "p90", "max", "mean"))
            out.append(f"<tr><th>{field} (words)</th>{cells}</tr>")
        out.append("</table>")
        ipp = ", ".join(f"{k}: {v}" for k, v in stats["images_per_pair"].items())
        out.append(f"<p>Images per pair: {html.escape(ipp)}</p>")
        sft = bool(shown) and isinstance(shown[0], SFTExample)
        heads = "<th>response</th>" if sft else "<th>chosen</th><th>rejected</th>"
        out.append(f"<table class='pairs'><tr><th>prompt and images</th>{heads}</tr>")
        for pair in shown:
            imgs = "".join(_thumbnail(r, thumb) for r in pair.images)
            cells = f"<td><div class='id'>{html.escape(pair.id)}</div>{imgs}<div class='text'>{html.escape(pair.prompt)}</div></td>"
            if sft:
                cells += f"<td class='chosen'><div class='text'>{html.escape(pair.response)}</div></td>"
            else:
                rej = ""
                if pair.rejected_images is not None:
                    rej = "<div>rejected side images:</div>" + "".join(_thumbnail(r, thumb) for r in pair.rejected_images)
                cells += f"<td class='chosen'><div class='text'>{html.escape(pair.chosen)}</div></td>"
                cells += f"<td class='rejected'>{rej}<div class='text'>{html.escape(pair.rejected)}</div></td>"
            out.append(f"<tr>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def shown_pairs(source: Any, ctx: Context, k: int, kind: str = "pairs") -> list[Any]:
    """``k`` examples spread over the source (its sequence if it has one, else the first ``k``)."""
    pairs = examples_of(source, ctx, kind)
    if isinstance(pairs, abc.Sequence):
        return [pairs[i] for i in sample_indices(len(pairs), k)]
    out = []
    for pair in pairs:
        out.append(pair)
        if len(out) >= k:
            break
    return out


def write_html(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None

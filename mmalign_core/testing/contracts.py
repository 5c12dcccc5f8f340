"""Contract checks: plain functions that assert a component behaves as the runner expects.

Each ``check_*`` function raises :class:`ContractError` (an ``AssertionError``)
listing every problem it found, so it reads well in any test runner. The
checks import the component's implementation (and torch, for losses) only
when called.
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import re
import tempfile
import typing
from typing import Any, Iterable, Optional, Sequence, Union

from pydantic import BaseModel, ValidationError

from ..entries import KIND_LABELS, ComponentEntry
from ..protocols import Context, LossOutput
from ..types import EvalResult, GenerationRequest, ImageRef, PreferencePair, SFTExample

_NAME_RE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_FACTORY_RE = re.compile(r"[\w.]+:[\w.]+")
MAX_LISTED = 20
"""At most this many problems are listed per check (the rest are counted)."""

LOSS_REQUIREMENTS = frozenset({"reference", "rejected"})
"""What the training loop can hand a loss: reference log-probs and rejected answers."""

ConfigLike = Union[BaseModel, dict[str, Any], None]


class ContractError(AssertionError):
    """A component breaks its contract.

    Attributes:
        subject: what was checked, e.g. ``"loss 'losses:dpo'"``.
        problems: one message per problem.
    """

    def __init__(self, subject: str, problems: Sequence[str]):
        self.subject = subject
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        lines = [f"{subject} breaks the mmalign contract:"] + [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


class _Findings:
    """Collects problems; raises them together."""

    def __init__(self, subject: str):
        self.subject = subject
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.add(message)

    def fatal(self, message: str) -> "ContractError":
        self.add(message)
        return ContractError(self.subject, self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ContractError(self.subject, self.problems)


def _subject(entry: ComponentEntry) -> str:
    return f"{KIND_LABELS.get(entry.kind, entry.kind)} {entry.qualified_name!r}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", "\n    ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _require_kind(entry: Any, kind: str, check: str) -> None:
    if not isinstance(entry, ComponentEntry):
        raise TypeError(f"{check}() takes a component entry record, got {type(entry).__name__}")
    if kind and entry.kind != kind:
        raise TypeError(f"{check}() checks {KIND_LABELS[kind]} entries; {entry.name!r} is a {KIND_LABELS.get(entry.kind, entry.kind)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------- entries
def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes mentioned anywhere in a field annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _nested_models(arg)
    return found


def config_problems(config: Any) -> list[str]:
    """Problems with a config class, recursing into nested pydantic models.

    A config class must be a pydantic model that forbids unknown keys
    (``extra="forbid"``, as :class:`~mmalign_core.config.ComponentConfig` does),
    describe every field, build with defaults alone, produce a JSON Schema
    (``mmalign schema``) and survive a JSON round trip (resolved specs are
    written as JSON and read back on resume).
    """
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        return [f"config must be a pydantic BaseModel subclass, got {config!r}"]
    problems: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        if model in seen:
            return
        seen.add(model)
        where = f"config class {model.__name__}" + (f" (at '{prefix.rstrip('.')}')" if prefix else "")
        if model.model_config.get("extra") != "forbid":
            problems.append(f"{where} must set extra='forbid' (subclass mmalign_core.ComponentConfig) so typos are errors")
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                problems.append(f"config field '{prefix}{name}' has no description (use Field(..., description=...))")
            for nested in _nested_models(field.annotation):
                walk(nested, f"{prefix}{name}.")

    walk(config, "")
    try:
        config.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        problems.append(f"config class {config.__name__} has no JSON Schema (needed by `mmalign schema`): {_describe(exc)}")
    try:
        default = config()
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
        detail = f"fields without a default: {', '.join(missing)}" if missing else _describe(exc)
        problems.append(f"config class {config.__name__} cannot be built from defaults alone ({detail})")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"config class {config.__name__} cannot be built from defaults alone: {_describe(exc)}")
    else:
        try:
            dumped = default.model_dump(mode="json")
            again = config.model_validate(json.loads(json.dumps(dumped)))
            if again.model_dump(mode="json") != dumped:
                problems.append(f"config class {config.__name__}: the defaults change after a JSON round trip")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"config class {config.__name__}: the defaults do not survive a JSON round trip: {_describe(exc)}")
    return problems


def check_entry(entry: ComponentEntry) -> None:
    """Check an entry record of any kind.

    - ``name`` is kebab-case; ``summary`` is one non-empty line;
    - the config class passes :func:`config_problems` (``extra="forbid"``,
      every field described -- nested models included --, builds with
      defaults, has a JSON Schema, round-trips through JSON);
    - ``factory`` is a ``"module:attr"`` string that imports to a callable
      accepting the config as its one argument;
    - per kind: a loss declares unique ``metrics`` and only requirements the
      training loop provides (``reference``, ``rejected``); an evaluator
      declares at least one metric, all unique; a source offers ``pairs`` or
      ``sft`` and is not both ``static`` and ``online``.

    Raises:
        ContractError: listing every problem found.
    """
    _require_kind(entry, "", "check_entry")
    findings = _Findings(_subject(entry))
    if not isinstance(entry.name, str) or not _NAME_RE.fullmatch(entry.name):
        findings.add(f"name {entry.name!r} must be kebab-case (lower-case letters, digits, single dashes)")
    if not isinstance(entry.summary, str) or not entry.summary.strip() or "\n" in entry.summary:
        findings.add("summary must be one non-empty line")
    findings.extend(config_problems(entry.config))
    findings.extend(_factory_problems(entry))
    findings.extend(_kind_problems(entry))
    findings.raise_if_any()


def _factory_problems(entry: ComponentEntry) -> list[str]:
    if not isinstance(entry.factory, str) or not _FACTORY_RE.fullmatch(entry.factory):
        return [f"factory must be a 'package.module:callable' string, got {entry.factory!r}"]
    try:
        factory = entry.load_factory()
    except Exception as exc:  # noqa: BLE001
        return [f"factory {entry.factory!r} cannot be imported: {_describe(exc)}"]
    if not callable(factory):
        return [f"factory {entry.factory!r} is a {type(factory).__name__}, not a callable"]
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature
        return []
    try:
        signature.bind(object())
    except TypeError:
        return [f"factory {entry.factory!r} cannot be called as factory(config): signature {signature}"]
    return []


def _kind_problems(entry: ComponentEntry) -> list[str]:
    problems = []
    metrics = getattr(entry, "metrics", ())
    if entry.kind in ("loss", "evaluator"):
        bad = [m for m in metrics if not isinstance(m, str) or not m.strip()]
        if bad:
            problems.append(f"metric names must be non-empty strings: {bad!r}")
        repeated = sorted({m for m in metrics if list(metrics).count(m) > 1}, key=str)
        if repeated:
            problems.append(f"metric names are declared twice: {', '.join(map(str, repeated))}")
    if entry.kind == "loss":
        unknown = sorted(set(entry.requires) - LOSS_REQUIREMENTS)
        if unknown:
            problems.append(
                f"requires {', '.join(map(repr, unknown))}, which the training loop never hands a loss "
                f"(known: {', '.join(sorted(LOSS_REQUIREMENTS))})"
            )
    elif entry.kind == "evaluator":
        if not metrics:
            problems.append("an evaluator must declare the metric names it reports (EvaluatorEntry(metrics=...))")
    elif entry.kind == "preference_source":
        if not entry.capabilities & {"pairs", "sft"}:
            problems.append("a source must declare capability 'pairs' and/or 'sft' (which stages it can feed)")
        if {"static", "online"} <= entry.capabilities:
            problems.append("a source cannot be both 'static' and 'online'")
    return problems


def _build(entry: ComponentEntry, config: ConfigLike, findings: _Findings) -> Any:
    try:
        if config is not None and not isinstance(config, (dict, BaseModel)):
            raise TypeError(f"config must be a dict or a {entry.config.__name__}, got {type(config).__name__}")
        if isinstance(config, BaseModel) and not isinstance(config, entry.config):
            raise TypeError(f"config is a {type(config).__name__}, not a {entry.config.__name__}")
        return entry.build(config)
    except Exception as exc:  # noqa: BLE001
        raise findings.fatal(f"building it with {'the default config' if config is None else 'the given config'} failed: {_describe(exc)}") from exc


# ---------------------------------------------------------------------------- loss
def check_loss(
    entry: ComponentEntry,
    config: ConfigLike = None,
    *,
    batch_size: int = 4,
    seed: int = 0,
) -> LossOutput:
    """Check a loss against synthetic log-probs, as the training loop would call it.

    Runs :func:`check_entry`, builds the loss (``config``: a dict, a config
    instance, or ``None`` for the defaults) and calls it on
    :func:`~mmalign_core.testing.make_loss_inputs` batches of size 1 and
    ``batch_size``. Rejected log-probs and reference log-probs are present
    exactly when the entry ``requires`` them, as in a run. Then:

    - it returns a :class:`~mmalign_core.protocols.LossOutput`;
    - ``loss`` is a finite floating-point scalar (0-dim) tensor with a graph,
      and ``backward()`` puts finite gradients on the policy's chosen (and,
      when required, rejected) log-probs;
    - ``metrics`` maps names to finite Python numbers (not tensors) and holds
      every name the entry declares in ``metrics``.

    Returns:
        the output for the ``batch_size`` batch (after ``backward()``).

    Raises:
        ContractError: listing every problem found.
    """
    _require_kind(entry, "loss", "check_loss")
    check_entry(entry)
    import torch

    from .data import make_loss_inputs

    findings = _Findings(_subject(entry))
    loss_fn = _build(entry, config, findings)
    if not callable(loss_fn):
        raise findings.fatal(f"the factory returned a {type(loss_fn).__name__}, which is not callable as loss(inputs)")
    needs_rejected = "rejected" in entry.requires
    needs_reference = "reference" in entry.requires
    result: Optional[LossOutput] = None
    for size in sorted({1, batch_size}):
        inputs = make_loss_inputs(size, rejected=needs_rejected, reference=needs_reference, seed=seed + size)
        where = f"batch of {size}"
        try:
            out = loss_fn(inputs)
        except Exception as exc:  # noqa: BLE001
            hint = ""
            if not (needs_rejected and needs_reference):
                hint = (
                    f" (inputs had rejected={'present' if needs_rejected else 'None'}, "
                    f"reference={'present' if needs_reference else 'None'}; a loss that reads them must declare "
                    "requires={'rejected', 'reference'})"
                )
            raise findings.fatal(f"calling it on a {where} raised {_describe(exc)}{hint}") from exc
        findings.extend(_loss_output_problems(out, inputs, entry, where, torch))
        result = out
    findings.raise_if_any()
    assert result is not None
    return result


def _loss_output_problems(out: Any, inputs: Any, entry: ComponentEntry, where: str, torch: Any) -> list[str]:
    if not isinstance(out, LossOutput):
        return [f"{where}: it returned {type(out).__name__}, not mmalign_core.protocols.LossOutput"]
    problems: list[str] = []
    loss = out.loss
    if not isinstance(loss, torch.Tensor):
        return [f"{where}: LossOutput.loss is a {type(loss).__name__}, not a torch.Tensor"]
    if loss.dim() != 0:
        problems.append(f"{where}: loss must be a scalar (0-dim) tensor, got shape {list(loss.shape)}; reduce it, e.g. with .mean()")
    if not loss.is_floating_point():
        problems.append(f"{where}: loss must be a floating-point tensor, got {loss.dtype}")
    elif not bool(torch.isfinite(loss).all()):
        problems.append(f"{where}: loss is not finite ({loss.detach().tolist()})")
    if not loss.requires_grad or loss.grad_fn is None:
        problems.append(f"{where}: loss has no gradient graph (detached, or computed under torch.no_grad())")
    elif loss.dim() == 0:
        try:
            loss.backward()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: loss.backward() failed: {_describe(exc)}")
        else:
            sides = [("chosen", inputs.policy.chosen)]
            if "rejected" in entry.requires:
                sides.append(("rejected", inputs.policy.rejected))
            for side, tensor in sides:
                if tensor.grad is None:
                    problems.append(f"{where}: no gradient reaches the policy's {side} log-probs")
                elif not bool(torch.isfinite(tensor.grad).all()):
                    problems.append(f"{where}: the gradient on the policy's {side} log-probs is not finite")
    metrics = out.metrics
    if not isinstance(metrics, dict):
        return problems + [f"{where}: LossOutput.metrics must be a dict, got {type(metrics).__name__}"]
    for name, value in metrics.items():
        if not isinstance(name, str):
            problems.append(f"{where}: metric name {name!r} is not a string")
        if isinstance(value, torch.Tensor):
            problems.append(f"{where}: metric {name!r} is a tensor; log a Python float (float(t.detach()))")
        elif not _is_number(value):
            problems.append(f"{where}: metric {name!r} is a {type(value).__name__}, not a float")
        elif not math.isfinite(value):
            problems.append(f"{where}: metric {name!r} is not finite ({value})")
    missing = [m for m in getattr(entry, "metrics", ()) if m not in metrics]
    if missing:
        problems.append(f"{where}: declared metrics missing from LossOutput.metrics: {', '.join(missing)}")
    return problems


# -------------------------------------------------------------------------- source
def check_source(
    entry: ComponentEntry,
    config: ConfigLike = None,
    ctx: Optional[Context] = None,
    *,
    limit: int = 8,
    load_images: bool = True,
) -> dict[str, list[Any]]:
    """Check a preference (or SFT) source on its first ``limit`` examples per capability.

    Runs :func:`check_entry`, builds the source and, for each capability it
    declares:

    - ``pairs``: ``pairs(ctx)`` yields :class:`~mmalign_core.types.PreferencePair`;
    - ``sft``: ``sft_examples(ctx)`` yields :class:`~mmalign_core.types.SFTExample`
      (a source without ``sft_examples`` must have ``pairs``; the runner then
      trains on the chosen answers).

    Every example has a non-empty, unique ``id``, a non-empty prompt and
    answers; ``chosen != rejected`` unless ``rejected_images`` is set; images
    are :class:`~mmalign_core.types.ImageRef` that load to RGB PIL images
    (``load_images=False`` skips decoding). ``fingerprint()`` is a non-empty
    string, equal across calls and across two instances built from the same
    config. A ``static`` source yields the same examples again from a second
    instance with the same seed.

    Args:
        ctx: the context handed to the source; default: a fresh temporary one
            with seed 0 (removed afterwards). Online sources may need
            ``ctx.extras`` filled in by the caller.

    Returns:
        ``{"pairs": [...], "sft": [...]}``: the examples checked per capability.

    Raises:
        ContractError: listing every problem found.
    """
    _require_kind(entry, "preference_source", "check_source")
    check_entry(entry)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if ctx is not None:
        return _check_source(entry, config, ctx, ctx, limit, load_images)
    from .data import make_context

    with tempfile.TemporaryDirectory(prefix="mmalign-check-") as tmp:
        first = make_context(f"{tmp}/first")
        second = make_context(f"{tmp}/second")
        return _check_source(entry, config, first, second, limit, load_images)


def _check_source(
    entry: ComponentEntry, config: ConfigLike, ctx: Context, ctx2: Context, limit: int, load_images: bool
) -> dict[str, list[Any]]:
    findings = _Findings(_subject(entry))
    source = _build(entry, config, findings)
    twin = _build(entry, config, findings)
    findings.extend(_fingerprint_problems(source, twin))
    checked: dict[str, list[Any]] = {}
    for capability in ("pairs", "sft"):
        if capability not in entry.capabilities:
            continue
        method = "sft_examples" if capability == "sft" and hasattr(source, "sft_examples") else "pairs"
        expected = SFTExample if method == "sft_examples" else PreferencePair
        if not callable(getattr(source, method, None)):
            findings.add(f"capability {capability!r} needs a {method}(ctx) method")
            continue
        try:
            items = list(itertools.islice(getattr(source, method)(ctx), limit))
        except Exception as exc:  # noqa: BLE001
            findings.add(f"{method}(ctx) raised {_describe(exc)}")
            continue
        if not items:
            findings.add(f"{method}(ctx) yielded no examples")
            continue
        ids: dict[str, int] = {}
        for index, item in enumerate(items):
            findings.extend(f"{method}(ctx) item {index}: {p}" for p in _example_problems(item, expected, load_images))
            item_id = getattr(item, "id", None)
            if isinstance(item_id, str) and item_id:
                if item_id in ids:
                    findings.add(f"{method}(ctx) items {ids[item_id]} and {index} share the id {item_id!r}")
                ids.setdefault(item_id, index)
        checked[capability] = items
        if "static" in entry.capabilities:
            try:
                again = list(itertools.islice(getattr(twin, method)(ctx2), limit))
            except Exception as exc:  # noqa: BLE001
                findings.add(f"{method}(ctx) of a second instance raised {_describe(exc)}")
            else:
                if [_example_key(x) for x in again] != [_example_key(x) for x in items]:
                    findings.add(
                        f"a static source must yield the same examples for the same config and seed, "
                        f"but a second instance's {method}(ctx) differs (resume and the manifest depend on it)"
                    )
    findings.raise_if_any()
    return checked


def _fingerprint_problems(source: Any, twin: Any) -> list[str]:
    if not callable(getattr(source, "fingerprint", None)):
        return ["it has no fingerprint() method (the manifest records it)"]
    try:
        first, again, other = source.fingerprint(), source.fingerprint(), twin.fingerprint()
    except Exception as exc:  # noqa: BLE001
        return [f"fingerprint() raised {_describe(exc)}"]
    if not isinstance(first, str) or not first:
        return [f"fingerprint() must return a non-empty string, got {first!r}"]
    if first != again:
        return [f"fingerprint() is not stable: {first!r} then {again!r}"]
    if first != other:
        return [f"fingerprint() differs between two instances with the same config: {first!r} vs {other!r}"]
    return []


def _example_key(item: Any) -> tuple[Any, ...]:
    return tuple(getattr(item, f, None) for f in ("id", "prompt", "chosen", "rejected", "response"))


def _text_problems(item: Any, fields: Sequence[str]) -> list[str]:
    problems = []
    for name in fields:
        value = getattr(item, name, None)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-empty string, got {value!r:.60}")
    return problems


def _image_problems(images: Any, field: str, load: bool) -> list[str]:
    if not isinstance(images, list):
        return [f"{field} must be a list of ImageRef, got {type(images).__name__}"]
    problems = []
    for i, image in enumerate(images):
        if not isinstance(image, ImageRef):
            problems.append(f"{field}[{i}] is a {type(image).__name__}, not an ImageRef")
            continue
        if not load:
            continue
        try:
            loaded = image.load()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{field}[{i}] ({image.key}) does not load: {_describe(exc)}")
            continue
        from PIL import Image

        if not isinstance(loaded, Image.Image):
            problems.append(f"{field}[{i}] loads to a {type(loaded).__name__}, not a PIL image")
        elif loaded.mode != "RGB" or min(loaded.size) < 1:
            problems.append(f"{field}[{i}] loads to a {loaded.mode} image of size {loaded.size}; expected a non-empty RGB image")
    return problems


def _example_problems(item: Any, expected: type[Any], load_images: bool) -> list[str]:
    if not isinstance(item, expected):
        return [f"is a {type(item).__name__}, expected {expected.__name__}"]
    problems = _text_problems(item, ["id", "prompt"])
    if isinstance(item, PreferencePair):
        problems += _text_problems(item, ["chosen", "rejected"])
        if item.chosen == item.rejected and item.rejected_images is None:
            problems.append("chosen and rejected are the same text (allowed only with rejected_images)")
        if item.rejected_images is not None:
            problems += _image_problems(item.rejected_images, "rejected_images", load_images)
        if not isinstance(item.extra_rejected, list) or not all(isinstance(t, str) and t.strip() for t in item.extra_rejected):
            problems.append("extra_rejected must be a list of non-empty strings")
        elif item.chosen in item.extra_rejected:
            problems.append("extra_rejected repeats the chosen answer")
    else:
        problems += _text_problems(item, ["response"])
    problems += _image_problems(item.images, "images", load_images)
    if not isinstance(item.source, str):
        problems.append(f"source must be a string, got {type(item.source).__name__}")
    if not isinstance(item.meta, dict):
        problems.append(f"meta must be a dict, got {type(item.meta).__name__}")
    return [f"({getattr(item, 'id', '?')!r}) {p}" for p in problems]


# ----------------------------------------------------------------------- evaluator
def check_evaluator(
    entry: ComponentEntry,
    model: Any,
    config: ConfigLike = None,
    ctx: Optional[Context] = None,
) -> EvalResult:
    """Check an evaluator by running it on ``model``.

    Runs :func:`check_entry`, builds the evaluator and calls
    ``evaluate(model, ctx)`` (``ctx``: default a fresh temporary context).
    ``model`` is typically a :class:`~mmalign_core.testing.ScriptedModel`;
    keep the config small (few samples) so the check is fast. Then:

    - the result is an :class:`~mmalign_core.types.EvalResult`;
    - its metric names are exactly the entry's declared ``metrics``, every
      value a finite number;
    - ``higher_is_better`` has a bool for every metric and nothing else;
    - ``n`` is a non-negative int, ``records`` a list of dicts that serialise
      to JSON, ``details`` a dict.

    Returns:
        the :class:`EvalResult`.

    Raises:
        ContractError: listing every problem found.
    """
    _require_kind(entry, "evaluator", "check_evaluator")
    check_entry(entry)
    if ctx is not None:
        return _check_evaluator(entry, model, config, ctx)
    from .data import make_context

    with tempfile.TemporaryDirectory(prefix="mmalign-check-") as tmp:
        return _check_evaluator(entry, model, config, make_context(tmp))


def _check_evaluator(entry: ComponentEntry, model: Any, config: ConfigLike, ctx: Context) -> EvalResult:
    findings = _Findings(_subject(entry))
    if "generate" in entry.requires and not callable(getattr(model, "generate", None)):
        raise findings.fatal(f"it requires 'generate' but the model given ({type(model).__name__}) has no generate()")
    evaluator = _build(entry, config, findings)
    if not callable(getattr(evaluator, "evaluate", None)):
        raise findings.fatal(f"the factory returned a {type(evaluator).__name__} without an evaluate(model, ctx) method")
    try:
        result = evaluator.evaluate(model, ctx)
    except Exception as exc:  # noqa: BLE001
        raise findings.fatal(f"evaluate(model, ctx) raised {_describe(exc)}") from exc
    if not isinstance(result, EvalResult):
        raise findings.fatal(f"evaluate() returned {type(result).__name__}, not mmalign_core.types.EvalResult")
    findings.extend(_eval_result_problems(result, tuple(getattr(entry, "metrics", ()))))
    findings.raise_if_any()
    return result


def _eval_result_problems(result: EvalResult, declared: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    metrics, hib = result.metrics, result.higher_is_better
    if not isinstance(metrics, dict):
        return [f"EvalResult.metrics must be a dict, got {type(metrics).__name__}"]
    undeclared = [m for m in metrics if m not in declared]
    missing = [m for m in declared if m not in metrics]
    if undeclared:
        problems.append(f"reports undeclared metrics: {', '.join(map(str, undeclared))} (declare them in EvaluatorEntry.metrics)")
    if missing:
        problems.append(f"does not report declared metrics: {', '.join(missing)}")
    for name, value in metrics.items():
        if not _is_number(value):
            problems.append(f"metric {name!r} is a {type(value).__name__}, not a float")
        elif not math.isfinite(value):
            problems.append(f"metric {name!r} is not finite ({value})")
    if not isinstance(hib, dict):
        problems.append(f"EvalResult.higher_is_better must be a dict, got {type(hib).__name__}")
    else:
        lacking = [m for m in metrics if m not in hib]
        if lacking:
            problems.append(f"higher_is_better does not say how to read: {', '.join(map(str, lacking))}")
        extra = [m for m in hib if m not in metrics]
        if extra:
            problems.append(f"higher_is_better names metrics that are not reported: {', '.join(map(str, extra))}")
        not_bool = [m for m, v in hib.items() if not isinstance(v, bool)]
        if not_bool:
            problems.append(f"higher_is_better values must be bool: {', '.join(map(str, not_bool))}")
    if not isinstance(result.n, int) or isinstance(result.n, bool) or result.n < 0:
        problems.append(f"n must be a non-negative int, got {result.n!r}")
    if not isinstance(result.records, list) or not all(isinstance(r, dict) for r in result.records):
        problems.append("records must be a list of dicts (written to samples.jsonl)")
    else:
        try:
            for row in result.records:
                json.dumps(row, default=str)
        except (TypeError, ValueError) as exc:
            problems.append(f"a record does not serialise to JSON: {_describe(exc)}")
    if not isinstance(result.details, dict):
        problems.append(f"details must be a dict, got {type(result.details).__name__}")
    return problems


# --------------------------------------------------------------------------- judge
def _check_identity(component: Any, findings: _Findings, keyed: str) -> None:
    """``describe()``: a JSON-serialisable dict, the same on a second call (it keys ``keyed``)."""
    try:
        identity = component.describe()
    except Exception as exc:  # noqa: BLE001
        raise findings.fatal(f"describe() raised {_describe(exc)}") from exc
    if not isinstance(identity, dict):
        findings.add(f"describe() must return a dict, got {type(identity).__name__}")
        return
    try:
        json.dumps(identity)
    except (TypeError, ValueError) as exc:
        findings.add(f"describe() does not serialise to JSON: {_describe(exc)}")
    try:
        again = component.describe()
    except Exception as exc:  # noqa: BLE001
        again = exc
    if again != identity:
        findings.add(f"describe() is not stable: two calls returned different identities ({keyed} would never hit)")


def _build_with_methods(entry: Any, config: Any, kind: str, check_name: str, methods: dict[str, str]) -> tuple[Any, "_Findings"]:
    """Check ``entry`` is a ``kind``, build it and require ``methods`` (name -> arguments shown in the message)."""
    _require_kind(entry, kind, check_name)
    check_entry(entry)
    findings = _Findings(_subject(entry))
    obj = _build(entry, config, findings)
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise findings.fatal(
            f"the factory returned a {type(obj).__name__} without " + " and ".join(f"a {m}({methods[m]}) method" for m in missing)
        )
    return obj, findings


def check_judge(
    entry: ComponentEntry,
    config: ConfigLike = None,
    *,
    requests: Optional[Sequence[GenerationRequest]] = None,
    ctx: Optional[Context] = None,
) -> Any:
    """Check a judge (protocol :class:`~mmalign_core.protocols.Judge`).

    Runs :func:`check_entry`, builds the judge and checks that:

    - it has ``complete(requests, ctx)`` and ``describe()``;
    - ``describe()`` returns a dict that serialises to JSON and is the same on
      a second call (it identifies the judge in manifests and judge caches);
    - with ``requests`` (judging prompts, e.g.
      :func:`~mmalign_core.testing.make_requests`), ``complete(requests, ctx)``
      returns a list holding one ``str`` per request (``ctx``: default a fresh
      temporary context).

    Returns:
        the built judge.

    Raises:
        ContractError: listing every problem found.
    """
    judge, findings = _build_with_methods(entry, config, "judge", "check_judge", {"complete": "requests, ctx", "describe": ""})
    _check_identity(judge, findings, "judge caches")
    if requests is not None:
        requests = list(requests)
        try:
            if ctx is not None:
                replies = judge.complete(requests, ctx)
            else:
                from .data import make_context

                with tempfile.TemporaryDirectory(prefix="mmalign-check-") as tmp:
                    replies = judge.complete(requests, make_context(tmp))
        except Exception as exc:  # noqa: BLE001
            raise findings.fatal(f"complete(requests, ctx) raised {_describe(exc)}") from exc
        if not isinstance(replies, list):
            findings.add(f"complete() must return a list of str, got {type(replies).__name__}")
        else:
            if len(replies) != len(requests):
                findings.add(f"complete() returned {len(replies)} replies for {len(requests)} requests (one per request)")
            wrong = sorted({type(r).__name__ for r in replies if not isinstance(r, str)})
            if wrong:
                findings.add(f"complete() replies must be str, got {', '.join(wrong)}")
    findings.raise_if_any()
    return judge


#: Texts :func:`check_embedder` embeds by default: paraphrases, an unrelated sentence, a duplicate, an empty string.
EMBEDDER_PROBE_TEXTS: tuple[str, ...] = (
    "a red circle and a blue square.",
    "A red circle next to a blue square.",
    "The weather was cold and windy all week.",
    "a red circle and a blue square.",
    "",
)


def check_embedder(entry: ComponentEntry, config: ConfigLike = None, *, texts: Optional[Sequence[str]] = None,
                   atol: float = 1e-4) -> Any:
    """Check a sentence embedder (protocol :class:`~mmalign_core.protocols.SentenceEmbedder`).

    Runs :func:`check_entry`, builds the embedder and checks that:

    - it has ``embed(texts)`` and ``describe()``; ``describe()`` is a JSON-serialisable dict, the same
      on a second call (it keys caches);
    - ``embed(texts)`` returns a 2-D float array with one row per text, finite, rows of norm 1 (within
      ``atol``), so a dot product is the cosine similarity;
    - equal texts get equal rows, a second call gives the same rows, and a text's row does not depend
      on the other texts of the call (embedding it alone gives the same row, within ``atol``);
    - ``embed([])`` returns zero rows.

    ``texts`` default to :data:`EMBEDDER_PROBE_TEXTS` (paraphrases, an unrelated sentence, a duplicate
    and an empty string). Returns the built embedder; raises :class:`ContractError` listing every problem.
    """
    import numpy as np

    emb, findings = _build_with_methods(entry, config, "embedder", "check_embedder", {"embed": "", "describe": ""})
    _check_identity(emb, findings, "caches keyed by it")
    texts = list(texts if texts is not None else EMBEDDER_PROBE_TEXTS)
    try:
        rows = np.asarray(emb.embed(texts))
        rows2 = np.asarray(emb.embed(texts))
        alone = [np.asarray(emb.embed([t])) for t in texts]
        empty = np.asarray(emb.embed([]))
    except Exception as exc:  # noqa: BLE001
        raise findings.fatal(f"embed(texts) raised {_describe(exc)}") from exc
    if rows.ndim != 2 or rows.shape[0] != len(texts):
        raise findings.fatal(f"embed() of {len(texts)} texts must return an array [{len(texts)}, D], got shape {rows.shape}")
    if not np.issubdtype(rows.dtype, np.floating):
        findings.add(f"embed() must return floats, got {rows.dtype}")
    elif not np.isfinite(rows).all():
        findings.add("embed() returned non-finite values")
    else:
        norms = np.linalg.norm(rows.astype(np.float64), axis=1)
        bad = [i for i, n in enumerate(norms) if abs(n - 1.0) > atol]
        if bad:
            findings.add(f"rows must have norm 1 (a dot product is then the cosine); texts {bad} have norms "
                         f"{[round(float(norms[i]), 4) for i in bad]}")
        if rows2.shape != rows.shape or not np.allclose(rows, rows2, atol=atol):
            findings.add("embed() is not deterministic: two calls on the same texts differ")
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if texts[i] == texts[j] and not np.allclose(rows[i], rows[j], atol=atol):
                    findings.add(f"equal texts {i} and {j} got different rows")
        moved = [i for i, a in enumerate(alone) if a.shape != (1, rows.shape[1]) or not np.allclose(a[0], rows[i], atol=atol)]
        if moved:
            findings.add(f"a text's row depends on the other texts of the call (texts {moved} embedded alone differ; "
                         "padding or batch statistics leaking into the pooling?)")
    if empty.shape[:1] != (0,):
        findings.add(f"embed([]) must return zero rows, got shape {empty.shape}")
    findings.raise_if_any()
    return emb


__all__ = [
    "ContractError",
    "EMBEDDER_PROBE_TEXTS",
    "check_embedder",
    "LOSS_REQUIREMENTS",
    "config_problems",
    "check_entry",
    "check_loss",
    "check_source",
    "check_evaluator",
    "check_judge",
]

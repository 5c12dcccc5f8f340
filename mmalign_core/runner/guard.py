"""Components that fail mid-run are named: a loss or source raising turns into a :class:`ComponentError`.

The runner wraps the loss (a callable) in :class:`NamedCall` and the data source in
:class:`NamedComponent`; an exception from inside them (other than an mmalign error, which
already says what is wrong, or an interrupt) becomes a message that starts with the JSON path and
the component's qualified name. The original traceback goes to ``run.log``.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

from ..errors import MmalignError, RunError


class ComponentError(RunError):
    """A component raised while the run used it (a bug or bad state in that component: exit 1)."""


def _named(label: str, exc: BaseException, log_traceback: Callable[[str], None]) -> ComponentError:
    log_traceback("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    text = str(exc).strip() or "(no message)"
    return ComponentError(f"{label} failed: {type(exc).__name__}: {text[:2000]} (traceback in run.log)")


def _guarded(fn: Callable[..., Any], label: str, log_traceback: Callable[[str], None]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (MmalignError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure inside the component: name it
            raise _named(label, exc, log_traceback) from exc

    return call


class NamedCall:
    """A callable component (a loss) whose failures name it."""

    def __init__(self, fn: Callable[..., Any], label: str, log_traceback: Callable[[str], None] = lambda _t: None):
        self._fn = fn
        self._call = _guarded(fn, label, log_traceback)
        self.label = label

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    @property
    def wrapped(self) -> Any:
        return self._fn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)


class NamedComponent:
    """An object component (a data source) whose method calls name it when they fail; other attributes pass through."""

    def __init__(self, obj: Any, label: str, log_traceback: Callable[[str], None] = lambda _t: None):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_log_traceback", log_traceback)

    @property
    def wrapped(self) -> Any:
        return self._obj

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if callable(value) and not name.startswith("__"):
            return _guarded(value, self._label, self._log_traceback)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._obj, name, value)


def unwrap(obj: Any) -> Any:
    """The component inside a :class:`NamedCall` / :class:`NamedComponent` (``isinstance`` checks against the
    optional-capability protocols must see the component itself: Python 3.12+ checks them statically)."""
    return obj.wrapped if isinstance(obj, (NamedCall, NamedComponent)) else obj

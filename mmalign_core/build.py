"""What a factory may receive besides its config: the manager that validated the spec, the run's seed, device and folder.

A factory that declares a ``context`` parameter is called as ``factory(config, context=BuildContext(...))``;
one written as ``factory(config)`` (the form documented before the build context existed) is still
called that way. Components that build other components (a weighted sum its terms, BDHS its base
source) resolve them through ``context.plugins``, so what is built is what was validated -- never
through the process-wide manager.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class BuildContext:
    """The run a component is built for.

    Attributes:
        plugins: the :class:`~mmalign_core.manager.Plugins` that validated the spec.
        seed: the run's seed (``None`` outside a run, e.g. ``mmalign data``).
        device: the resolved device (``"cpu"``, ``"cuda:0"``) or ``None`` before one is chosen.
        run_dir: the run folder, or ``None`` outside a run.
    """

    plugins: Any
    seed: Optional[int] = None
    device: Optional[str] = None
    run_dir: Optional[Path] = None

    def build(self, kind: str, name: str, config: Any = None) -> Any:
        """Resolve ``name`` with this context's manager and build it (with this context)."""
        return self.plugins.resolve(kind, name).build(config, context=self)


@lru_cache(maxsize=256)
def _takes_context(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and C callables: the old form
        return False
    return "context" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call_factory(factory: Callable[..., Any], config: Any, context: Optional[BuildContext]) -> Any:
    """``factory(config, context=context)`` when the factory declares ``context``, else ``factory(config)``."""
    if context is not None and _takes_context(factory):
        return factory(config, context=context)
    return factory(config)


__all__ = ["BuildContext", "call_factory"]

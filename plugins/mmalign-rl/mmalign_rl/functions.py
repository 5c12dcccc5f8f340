"""Python-function rewards: only functions inside the package of an installed mmalign plugin are called.

A spec names a function as ``"package.module:function"``. The package must be the top-level package of an
entry point of group ``mmalign`` (an installed plugin), so a spec string can never import an arbitrary
module; the function is imported when the reward is built and must be callable as
``function(prompts, images, responses, **kwargs) -> list[float]``.

Two functions ship here (examples, tests and benchmarks): :func:`response_length` and :func:`word_reward`.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Callable, Sequence


@lru_cache(maxsize=1)
def plugin_packages() -> frozenset[str]:
    """Top-level packages of the installed mmalign plugins (entry points of group ``mmalign``)."""
    from importlib.metadata import entry_points

    return frozenset(ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="mmalign"))


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function`` after checking the package belongs to an installed plugin."""
    module_name, _, attr = spec.partition(":")
    if module_name.split(".")[0] not in plugin_packages():
        raise ValueError(f"{spec!r} is not in an installed mmalign plugin's package")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{spec!r} names no callable (module {module_name!r} has no function {attr!r})")
    return fn


def response_length(prompts: Sequence[str], images: Sequence[Sequence[Any]], responses: Sequence[str], *,
                    target_words: int = 10, per_word: float = 0.1) -> list[float]:
    """``-per_word * |words - target_words|``: a cheap shaped reward (benchmarks, tests)."""
    return [-per_word * abs(len(r.split()) - target_words) for r in responses]


def word_reward(prompts: Sequence[str], images: Sequence[Sequence[Any]], responses: Sequence[str], *,
                words: Sequence[str] = ("circle",), per_word: float = 1.0) -> list[float]:
    """``per_word`` for every occurrence of one of ``words`` (case-insensitive)."""
    wanted = {w.lower() for w in words}
    return [per_word * sum(tok.strip(".,;:!?").lower() in wanted for tok in r.split()) for r in responses]


__all__ = ["load_function", "plugin_packages", "response_length", "word_reward"]

"""Testing kit for mmalign plugin authors (an opt-in pytest plugin).

Enable the fixtures in a ``conftest.py``::

    pytest_plugins = ["mmalign_core.testing"]

Fixtures: ``mmalign_plugins`` (an isolated manager with only the core
built-ins), ``register_plugin`` (a function giving an isolated manager that
holds your plugin) and ``mmalign_context`` (a component context under
``tmp_path``).

Contract checks are plain functions, usable from any test: :func:`check_entry`,
:func:`check_loss`, :func:`check_source`, :func:`check_evaluator`,
:func:`check_judge`, :func:`check_embedder` and :func:`check_plugin`. They raise :class:`ContractError`
listing every problem. :class:`ScriptedModel` is a model whose answers the test
scripts, for checking evaluators without torch.

Importing this package imports neither torch nor transformers; the checks
import what the component needs when they run. It is not registered through a
``pytest11`` entry point: only suites that opt in get its fixtures.
"""
from __future__ import annotations

from .contracts import (
    LOSS_REQUIREMENTS,
    ContractError,
    check_embedder,
    check_entry,
    check_evaluator,
    check_judge,
    check_loss,
    check_source,
    config_problems,
)
from .data import (
    make_context,
    make_image,
    make_image_ref,
    make_loss_inputs,
    make_pairs,
    make_requests,
    make_sft_examples,
)
from .doubles import ScriptedModel
from .plugins import PluginRegistrationError, check_plugin, plugins_with

try:  # the fixtures need pytest; the checks do not
    import pytest as _pytest  # noqa: F401
except ImportError:  # pragma: no cover - pytest-free use of the checks
    pass
else:
    from .fixtures import mmalign_context, mmalign_plugins, register_plugin  # noqa: F401

__all__ = [
    "ContractError",
    "PluginRegistrationError",
    "LOSS_REQUIREMENTS",
    "ScriptedModel",
    "check_entry",
    "check_loss",
    "check_source",
    "check_evaluator",
    "check_judge",
    "check_embedder",
    "check_plugin",
    "config_problems",
    "plugins_with",
    "make_context",
    "make_image",
    "make_image_ref",
    "make_loss_inputs",
    "make_pairs",
    "make_requests",
    "make_sft_examples",
]

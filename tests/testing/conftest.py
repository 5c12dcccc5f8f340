"""The kit's fixtures, imported directly (a plugin author writes ``pytest_plugins = ["mmalign_core.testing"]``
in their top-level conftest; that route is tested in ``test_kit_packaging.py``)."""
from mmalign_core.testing import mmalign_context, mmalign_plugins, register_plugin  # noqa: F401

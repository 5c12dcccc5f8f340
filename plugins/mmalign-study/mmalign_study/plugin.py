"""Registration: the ``study`` command (imports only argparse-level code; the runner is imported when it runs)."""
from __future__ import annotations

from mmalign_core import hookimpl
from mmalign_core.commands import Commands


@hookimpl
def mmalign_add_commands(commands: Commands) -> None:
    """``mmalign study SPEC``."""
    from .cli import add_command

    add_command(commands)

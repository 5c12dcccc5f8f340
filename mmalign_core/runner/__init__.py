"""The runner: executes validated run specs (imports torch; loaded lazily by the CLI)."""
from .run import run_spec

__all__ = ["run_spec"]

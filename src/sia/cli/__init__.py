"""The `sia` command line and its live views: the only code that prints. May import anything below it."""

from sia.cli.app import main

__all__ = ["main"]

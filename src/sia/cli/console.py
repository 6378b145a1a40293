"""The consoles the commands print to, and the one-line error every user error becomes."""

from __future__ import annotations

import typer
from rich.console import Console

from sia.errors import SiaError

err = Console(stderr=True)
out = Console()


def fail(e: SiaError) -> None:
    """Print `e` as one line with its hint and exit 2: never a traceback."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(e.message)}" + (f" [dim]({escape(e.hint)})[/]" if e.hint else ""), highlight=False,
              soft_wrap=True)
    raise typer.Exit(2)

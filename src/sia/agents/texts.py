"""The agents' prompts, kept as data files in `sia/agents/prompts/` so they can be read and edited as text."""

from __future__ import annotations

from functools import cache
from pathlib import Path

PROMPTS = Path(__file__).parent / "prompts"


@cache
def _read(name: str) -> str:
    return (PROMPTS / f"{name}.md").read_text(encoding="utf-8").rstrip("\n")


def prompt(name: str, **fill: str) -> str:
    """Prompt `name` with each `{key}` replaced (plain replacement: the prompts hold JSON braces)."""
    text = _read(name)
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return text

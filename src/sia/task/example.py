"""An example of a task: what the harness sees (`inputs`) and what only the grader sees (`target`).

Its own module, below both `sia.task.loading` (which builds examples) and
`sia.task.graders` (which reads them), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    id: str
    split: str
    inputs: dict[str, Any]
    target: dict[str, Any] = field(repr=False)
    options: list[str] = field(default_factory=list, repr=False)

    def visible(self) -> dict[str, Any]:
        """What the harness may see: the id and the input fields, never the target."""
        return {"id": self.id, **self.inputs}

"""Design memory: every proposal, its measured effect and the lesson drawn from it.

It is read back from the run store, so it survives restarts, and it is what
lets the Feedback-Agent prefer kinds of change that have paid off here and
avoid those that have not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    generation: int
    lever: str
    kind: str
    accepted: bool
    delta: float
    p_value: float
    rollouts: int
    seconds: float
    lesson: str
    base_adapter: str | None = None
    """The champion's adapter when the change was tried: a harness edit rejected on one adapter may pass on the next."""
    weight_plan: dict[str, Any] | None = None
    """A weight update's algorithm, settings and data as proposed: what its measured seconds bought (`sia.agents.costs`)."""


class Memory:
    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries = list(entries or [])

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def rejections(self, kind: str, base_adapter: str | None | object = ...) -> int:
        """Rejected tries of `kind`; only those made on `base_adapter` when it is given."""
        return sum(1 for e in self.of_kind(kind) if not e.accepted and (base_adapter is ... or e.base_adapter == base_adapter))

    def lever_stalled(self, lever: str) -> int:
        """Tries of `lever` since it last had a change accepted."""
        n = 0
        for e in reversed([e for e in self.entries if e.lever == lever]):
            if e.accepted:
                break
            n += 1
        return n

    def seconds_per_try(self, lever: str) -> float | None:
        es = [e.seconds for e in self.entries if e.lever == lever and e.seconds > 0]
        return sum(es) / len(es) if es else None

    def mean_gain(self, kind: str) -> float | None:
        es = self.of_kind(kind)
        return sum(e.delta for e in es) / len(es) if es else None

    def lever_stats(self) -> dict[str, dict[str, Any]]:
        """Per lever: tries, accepts, total accepted gain, and gain per 100 rollouts spent."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            s = out.setdefault(e.lever, {"tries": 0, "accepts": 0, "gain": 0.0, "rollouts": 0, "seconds": 0.0})
            s["tries"] += 1
            s["accepts"] += int(e.accepted)
            s["gain"] += e.delta if e.accepted else 0.0
            s["rollouts"] += e.rollouts
            s["seconds"] += e.seconds
        for s in out.values():
            s["gain_per_100_rollouts"] = 100 * s["gain"] / s["rollouts"] if s["rollouts"] else 0.0
        return out

    def stalled_for(self) -> int:
        """Generations since the last accepted change."""
        n = 0
        for e in reversed(self.entries):
            if e.accepted:
                break
            n += 1
        return n

    def summary(self) -> list[str]:
        return [f"gen {e.generation} [{e.lever}/{e.kind}{' on ' + e.base_adapter if e.base_adapter else ''}] "
                f"{'ACCEPTED' if e.accepted else 'rejected'} "
                f"delta={e.delta:+.3f}{'' if math.isnan(e.p_value) else f' p={e.p_value:.3g}'}: {e.lesson}" for e in self.entries]


def lesson_for(kind: str, accepted: bool, delta: float, reason: str) -> str:
    if accepted:
        return f"{kind} helped here ({delta:+.3f}); build on it"
    if delta < 0:
        return f"{kind} hurt ({delta:+.3f}); avoid repeating it as is ({reason})"
    return f"{kind} did not give a significant gain ({reason})"

"""The run's budgets: wall time counted across resumes, rollouts and model tokens, with time kept for the final test.

The clock is saved in the store after every evaluation chunk, so a resumed run
goes on counting from where it stopped. Time for the final test evaluation is
reserved from the champion's measured validation throughput, so a run ends
within its budget with a test score.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sia.store.run import Run


class Budget:
    def __init__(self, run: Run, budget_s: float, max_rollouts: int | None, max_tokens: int | None, test_n: int,
                 started_at: float | None = None) -> None:
        self.run, self.budget_s, self.max_rollouts, self.max_tokens, self.test_n = run, budget_s, max_rollouts, max_tokens, test_n
        self._t0 = started_at if started_at is not None else time.monotonic()
        self._elapsed0 = float(run.store.get_meta("elapsed_s", 0.0))
        self._saved_at = self._t0
        self._reserve: tuple[tuple[str, int] | None, float] = (None, 0.0)
        self.test_cells: Callable[[str], int] = lambda cid: 1
        """Test scorings a run ending on champion `cid` needs (its own, and the attribution's where it applies)."""

    def elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    def save(self) -> None:
        self.run.store.set_meta("elapsed_s", self.elapsed())
        self._saved_at = time.monotonic()

    def tick(self) -> None:
        """Save the clock if it was last saved more than a few seconds ago, so a kill loses little of the budget."""
        if time.monotonic() - self._saved_at >= 5.0:
            self.save()

    def rate(self, cid: str, purpose: str = "val", fresh: bool = False) -> float | None:
        """Rollouts per second measured on `cid`'s evaluation for `purpose`, else the run's throughput probe, else None.
        `fresh`: on inputs the policy service has not scored before (`Run.fresh_seconds_of`), for work on new inputs."""
        span, n = (self.run.fresh_seconds_of if fresh else self.run.seconds_of)(cid, purpose)
        if n >= 2 and span > 0:
            return n / span
        probe = (self.run.store.get_meta("limits") or {}).get("rate")
        return float(probe) if probe else None

    def seconds_for(self, n: int, cid: str, purpose: str = "val", fresh: bool = False) -> float:
        """Seconds `n` rollouts of `cid` should take at its measured rate (1 rollout/s when nothing is measured yet)."""
        return n / max(self.rate(cid, purpose, fresh) or 1.0, 1e-3)

    def test_reserve(self, cid: str) -> float:
        """Seconds the final test evaluations of `cid` should take (`test_cells`), from its measured val throughput on fresh
        inputs (the test's inputs are new to the policy service, so validation rollouts it answered from its memo do not
        count)."""
        if self.run.seconds_of(cid, "val")[1] == 0 or self.run.finished(cid, "test"):
            return 0.0
        key = (cid, self.run.store.count_rollouts())
        if self._reserve[0] != key:  # the reserve is asked for often; it changes only when rollouts are added
            self._reserve = (key, self.test_cells(cid) * (1.2 * self.seconds_for(self.test_n, cid, fresh=True) + 5))
        return self._reserve[1]

    def left(self, cid: str) -> float:
        """Seconds left for work other than `cid`'s final test evaluation."""
        return self.budget_s - self.elapsed() - self.test_reserve(cid)

    def exhausted(self, reserve_s: float, kept_for: str = "the final test") -> str | None:
        """Why the run must stop now, keeping `reserve_s` seconds (for what `kept_for` says), or None."""
        if self.elapsed() + reserve_s >= self.budget_s:
            return (f"wall-time budget: {self.elapsed():.0f}s used, {reserve_s:.0f}s kept for {kept_for}, "
                    f"budget {self.budget_s:.0f}s")
        if self.max_rollouts is not None and self.run.store.count_rollouts() >= self.max_rollouts:
            return f"rollout budget of {self.max_rollouts} spent"
        if self.max_tokens is not None and self.run.store.count_tokens() >= self.max_tokens:
            return f"token budget of {self.max_tokens} spent"
        return None

"""What the loop tells its views: one method per event, typed, as `RunObserver`.

A view (the terminal's live view, the plain log lines, a tracking exporter)
subclasses `RunObserver` and overrides the events it shows; the others do
nothing. The loop, its levers (through `LeverContext.observer`) and the executor's
callbacks call these methods, never a string-keyed callback, so a renamed or
mistyped event is an error the type checker finds, not a silent no-op.
"""

from __future__ import annotations

from typing import Any


class RunObserver:
    """Events of a run, in the order they usually come: phases, evaluations and their rollouts, training, proposals, verdicts."""

    def on_phase(self, text: str) -> None:
        """The loop starts something (the baseline, a generation's analysis, a gate); `text` says what."""

    def on_champion(self, score: float) -> None:
        """The champion's validation score, whenever the champion is (re)scored."""

    def on_eval_start(self, label: str, evaluation: str) -> None:
        """An evaluation begins (`label`: what it is for)."""

    def on_eval_total(self, total: int, done: int) -> None:
        """The evaluation holds `total` rollouts, `done` of them recorded before (a resumed or chunked evaluation)."""

    def on_rollout(self, record: Any) -> None:
        """A rollout finished and was recorded (`sia.store.records.NewRollout`)."""

    def on_train_start(self, steps: int) -> None:
        """A weight update begins its training: at most `steps` steps."""

    def on_train_step(self, stats: dict[str, Any]) -> None:
        """A training step ended: its logged statistics (reward_mean, reward_std, loss, predicted, ...)."""

    def on_proposal(self, gen: int, proposal: Any) -> None:
        """The Feedback-Agent's proposal for generation `gen`."""

    def on_verdict(self, gen: int, verdict: Any, lesson: str) -> None:
        """The gate's verdict on generation `gen` (`sia.loop.gate.Verdict`) and the lesson recorded."""


class Fanout(RunObserver):
    """Every event to each of `views` in turn (the terminal view and a tracker, say)."""

    def __init__(self, *views: RunObserver) -> None:
        self.views = views


def _fan(name: str):
    def call(self: Fanout, *args: Any) -> None:
        for view in self.views:
            getattr(view, name)(*args)
    call.__name__ = name
    return call


for _name in [n for n in vars(RunObserver) if n.startswith("on_")]:
    setattr(Fanout, _name, _fan(_name))

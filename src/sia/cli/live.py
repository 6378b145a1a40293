"""The live view of `sia run`: generation, champion score, current proposal, time left, and a progress bar."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from sia.loop.events import RunObserver


class RateColumn(ProgressColumn):
    """Rollouts per second of the current evaluation."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} rollouts/s" if speed else "-- rollouts/s", style="cyan")


class RunView(RunObserver):
    def __init__(self, console: Console, budget_s: float, elapsed0: float = 0.0) -> None:
        self.console = console
        self.budget_s = budget_s
        self.t0 = time.monotonic() - elapsed0
        self.gen = 0
        self.champion = "--"
        self.progress = Progress(TextColumn("[bold]gen {task.fields[gen]}[/] champion {task.fields[champ]} · {task.fields[left]} left ·"),
                                 TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False)
        self.bar = None
        self._started = 0.0
        self._count = 0

    def __enter__(self) -> RunView:
        self.progress.__enter__()
        self.bar = self.progress.add_task("starting", total=None, gen=0, champ="--", left=self._left(), rate="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _left(self) -> str:
        left = max(0.0, self.budget_s - (time.monotonic() - self.t0))
        return f"{int(left // 60)}m{int(left % 60):02d}s"

    def _refresh(self, **kw: Any) -> None:
        self.progress.update(self.bar, gen=self.gen, champ=self.champion, left=self._left(), **kw)

    def on_phase(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}[/]")
        self._refresh()

    def on_eval_start(self, label: str, evaluation: str) -> None:
        self._refresh(description=label)

    def on_eval_total(self, total: int, done: int) -> None:
        self._started, self._count = time.monotonic(), 0
        self.progress.reset(self.bar, total=total, completed=done, description=self.progress.tasks[0].description)
        self._refresh(rate="")

    def on_rollout(self, record: Any) -> None:
        self._count += 1
        dt = time.monotonic() - self._started
        self.progress.advance(self.bar)
        self._refresh(rate=f"{self._count / dt:.2f} rollouts/s" if dt > 0 else "")

    def on_train_start(self, steps: int) -> None:
        self._started, self._count = time.monotonic(), 0
        self.progress.reset(self.bar, total=steps, completed=0, description="training")
        self._refresh(rate="")

    def on_train_step(self, stats: dict[str, Any]) -> None:
        self.progress.advance(self.bar)
        predicted = ", ".join(f"{k[:12]}:{v}" for k, v in list(stats.get("predicted", {}).items())[:3])
        self._refresh(rate=f"reward {stats['reward_mean']:.2f}±{stats['reward_std']:.2f} loss {stats['loss']:+.3f} [{predicted}]")

    def on_proposal(self, gen: int, proposal: Any) -> None:
        self.gen = gen
        self.progress.console.print(f"[bold]generation {gen}[/]: [cyan]{proposal.lever}/{proposal.kind}[/] {proposal.rationale[:300]}",
                                    highlight=False)
        self._refresh()

    def on_verdict(self, gen: int, verdict: Any, lesson: str) -> None:
        v = verdict
        colour = "green" if v.accept else "red"
        self.progress.console.print(f"  [{colour}]{'accepted' if v.accept else 'rejected'}[/] delta {v.delta:+.3f} "
                                    f"CI ({v.ci[0]:+.3f}, {v.ci[1]:+.3f}) p={v.p_value:.4f} n={v.n}/{v.n_total}"
                                    f"{' (stopped early)' if v.stopped_early else ''}: {v.reason}", highlight=False)
        self._refresh()

    def on_champion(self, score: float) -> None:
        self.champion = f"{score:.3f}"
        self._refresh()


class EvalProgress:
    """The progress bar of `sia eval`: rollouts done of total, rollouts/s and the running score."""

    def __init__(self, console: Console, label: str) -> None:
        from rich.progress import TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                                 TextColumn("score {task.fields[score]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.label = label
        self.total, self.n = 0.0, 0
        self.bar = None

    def __enter__(self) -> EvalProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.progress.__exit__(*exc)

    def on_start(self, total: int, already: int) -> None:
        """Shown once the rollouts start, so that an error before them is the only line printed."""
        if self.bar is None:
            self.progress.__enter__()
            self.bar = self.progress.add_task(self.label, total=None, score="--")
        self.progress.update(self.bar, total=total, completed=already)

    def on_rollout(self, record) -> None:
        self.total += record.score
        self.n += 1
        self.progress.update(self.bar, advance=1, score=f"{self.total / self.n:.3f}")


class PlainView(RunObserver):
    """Progress without a terminal (CI, nohup, a redirected log): plain lines, at least one every `every_s` seconds.

    It takes the same events as `RunView`. Phases and verdicts print at once;
    rollouts print a summary line (done/total, rollouts/s, timeouts, errors,
    running score) at most every `every_s`; a heartbeat says what is running
    when nothing else printed for `every_s` (a long training step, a slow
    model call), so that slow and hung never look the same.
    """

    def __init__(self, stream, budget_s: float = 0.0, elapsed0: float = 0.0, every_s: float = 10.0) -> None:
        import threading

        self.stream, self.budget_s, self.every_s = stream, budget_s, every_s
        self.t0 = time.monotonic() - elapsed0
        self.label, self.total, self.done, self.timeouts, self.errors, self.score = "starting", 0, 0, 0, 0, 0.0
        self.before, self.counted = 0, ""  # rollouts of the evaluation `counted` done before this view counted them (a resume)
        self.steps, self.step = 0, 0
        self.started = time.monotonic()
        self.last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sia-progress", daemon=True)

    def __enter__(self) -> PlainView:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _say(self, text: str) -> None:
        with self._lock:
            used = time.monotonic() - self.t0
            left = max(0.0, self.budget_s - used)
            left_text = f", {int(left // 60)}m{int(left % 60):02d}s left" if self.budget_s else ""
            self.stream.write(f"[sia {int(used // 60)}m{int(used % 60):02d}s{left_text}] {text}\n")
            self.stream.flush()
            self.last = time.monotonic()

    def _status(self) -> str:
        dt = time.monotonic() - self.started
        rate = self.done / dt if dt > 0 else 0.0
        mean = self.score / self.done if self.done else 0.0
        return (f"{self.label}: {self.before + self.done}/{self.total or '?'} done, {rate:.2f} rollouts/s, {self.timeouts} timeouts, "
                f"{self.errors} errors, score so far {mean:.3f}")

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s / 2)):
            if time.monotonic() - self.last >= self.every_s:
                self._say(self._status() if self.total and self.before + self.done < self.total else f"working: {self._doing()}")

    def _doing(self) -> str:
        """What runs between events: a weight update's next step once its collection is done, else the last label."""
        if self.steps and self.step < self.steps and self.total and self.before + self.done >= self.total:
            return f"training step {self.step + 1}/{self.steps}"
        return self.label

    def on_phase(self, text: str) -> None:
        self.label = text.split(":")[0]
        self.steps = self.step = 0  # a weight update announces its steps after its phase (train_start)
        self._say(text)

    def on_eval_start(self, label: str, evaluation: str = "") -> None:
        self.label, self.total = label, 0

    def on_eval_total(self, total: int, done: int) -> None:
        if not (done and done == self.before + self.done and self.label == self.counted):  # else a gate's next chunk
            self.before, self.done, self.timeouts, self.errors, self.score = done, 0, 0, 0, 0.0
            self.started = time.monotonic()
        self.total, self.counted = total, self.label

    def on_rollout(self, record: Any) -> None:
        self.done += 1
        self.score += record.score
        self.timeouts += record.error_type == "timeout"
        self.errors += bool(record.error_type) and record.error_type != "timeout"
        if time.monotonic() - self.last >= self.every_s or self.before + self.done == self.total:
            self._say(self._status())

    def on_train_start(self, steps: int) -> None:  # counted apart from rollouts: collection rounds run between training steps
        self.label, self.steps, self.step = "training", steps, 0

    def on_train_step(self, stats: dict[str, Any]) -> None:
        self.step += 1
        self._say(f"training step {self.step}/{self.steps}: reward {stats['reward_mean']:.2f}, loss {stats['loss']:+.3f}")

    def on_proposal(self, gen: int, proposal: Any) -> None:
        self._say(f"generation {gen}: {proposal.lever}/{proposal.kind}: {proposal.rationale[:200]}")

    def on_verdict(self, gen: int, verdict: Any, lesson: str) -> None:
        v = verdict
        self._say(f"{'accepted' if v.accept else 'rejected'} delta {v.delta:+.3f} p={v.p_value:.4f} n={v.n}/{v.n_total}: {v.reason}")

    def on_champion(self, score: float) -> None:
        self._say(f"champion validation score {score:.3f}")

    # the `sia eval` interface
    def on_start(self, total: int, already: int) -> None:
        self.on_eval_total(total, already)

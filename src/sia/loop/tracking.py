"""A run in the experiment trackers people already use: MLflow or TensorBoard, live (`sia run --track`) or after the fact
(`sia export`).

One path writes both. `Tracker.generation` reads a decided generation back from
the run store and logs it at step = generation: the gate's delta, p-value, level,
examples and verdict, the champion's validation score after it, its minutes,
and, when accepted, the new harness version's source and the adapter's folder as
artifacts (MLflow) or text (TensorBoard). Training steps are logged at a step
counted across the run's weight updates (`train/...`). Live, the tracker is an
observer of the loop (`on_train_step`, `on_verdict`); after the fact, `export`
walks the store and the adapters' training logs in the same order, so the two
give the same metrics.

The writers are the libraries' own: `mlflow.tracking.MlflowClient` (default
store `sqlite:///RUN_DIR/mlflow.db`, artifacts in `RUN_DIR/mlruns`; any tracking
URI, a server's too) and `torch.utils.tensorboard.SummaryWriter` (default
`RUN_DIR/tensorboard`). Both are optional (`pip install sia[track]`). A tracker
that fails mid-run (a server gone) says so once through the run's phases and stops
tracking; the run goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from sia.errors import SiaError
from sia.loop.events import RunObserver

TRACKERS = ("mlflow", "tensorboard")
TRAIN_KEYS = ("loss", "reward_mean", "reward_std", "gold_nll", "label_accuracy", "kl", "clip_fraction", "seconds")
"""Training-step statistics logged when a step has them (ce, GRPO and SFT log different ones)."""


class Sink(Protocol):
    def metric(self, key: str, value: float, step: int) -> None: ...
    def params(self, values: dict[str, str]) -> None: ...
    def text(self, key: str, text: str, step: int) -> None: ...
    def files(self, path: Path, under: str) -> None: ...
    def close(self, finished: bool) -> None: ...


class MlflowSink:
    """One MLflow run per sia run, in experiment `sia/<task>`; its id is kept in the run store, so a resumed run logs on."""

    def __init__(self, uri: str, run_dir: Path, task: str, run_id: str | None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise SiaError("--track mlflow needs MLflow", "pip install 'sia[track]' (or mlflow)") from None
        self.client = MlflowClient(tracking_uri=uri)
        name = f"sia/{task}"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name, artifact_location=(run_dir / "mlruns").as_uri())
        self.run_id = run_id or self.client.create_run(exp_id, run_name=run_dir.name, tags={"sia.run_dir": str(run_dir)}).info.run_id

    def metric(self, key: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, key, float(value), step=step)

    def params(self, values: dict[str, str]) -> None:
        have = self.client.get_run(self.run_id).data.params
        for k, v in values.items():  # a param is written once: a resumed run leaves the first value
            if k not in have:
                self.client.log_param(self.run_id, k, v[:6000])

    def text(self, key: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"{key}.txt")

    def files(self, path: Path, under: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), under)
        else:
            self.client.log_artifact(self.run_id, str(path), under)

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "RUNNING")


class TensorboardSink:
    """Scalars and text in a TensorBoard log folder; files are logged as their path and size (TensorBoard keeps no files)."""

    def __init__(self, logdir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SiaError("--track tensorboard needs TensorBoard", "pip install 'sia[track]' (or tensorboard)") from None
        self.writer = SummaryWriter(logdir)

    def metric(self, key: str, value: float, step: int) -> None:
        self.writer.add_scalar(key, float(value), step)

    def params(self, values: dict[str, str]) -> None:
        self.writer.add_text("params", "\n".join(f"- {k}: {v}" for k, v in values.items()), 0)

    def text(self, key: str, text: str, step: int) -> None:
        self.writer.add_text(key, text, step)

    def files(self, path: Path, under: str) -> None:
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        self.writer.add_text(f"files/{under}", f"{path} ({size} bytes)", 0)

    def close(self, finished: bool) -> None:
        self.writer.flush()
        self.writer.close()


def open_sink(kind: str, uri: str | None, run, resume: bool = True) -> Sink:
    """The writer for tracker `kind` of an open run (`sia.store.run.Run`); an MLflow run id is kept in the store."""
    run_dir = Path(run.run_dir)
    if kind == "mlflow":
        key = "track:mlflow"
        saved = run.store.get_meta(key) if resume else None
        target = uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        sink = MlflowSink(target, run_dir, run.task.name, saved["run_id"] if saved and saved.get("uri") == target else None)
        run.store.set_meta(key, {"uri": target, "run_id": sink.run_id})
        return sink
    if kind == "tensorboard":
        return TensorboardSink(uri or str(run_dir / "tensorboard"))
    raise SiaError(f"unknown tracker {kind!r}", f"use one of {', '.join(TRACKERS)}")


class Tracker(RunObserver):
    """Logs a run as it goes (`on_train_step`, `on_verdict`) or, through `export`, after the fact."""

    def __init__(self, run, sink: Sink, phase=None) -> None:
        self.run, self.sink, self.phase = run, sink, phase
        self.train_step = sum(len(_training_log(run, a.version)) for a in run.store.adapter_versions())
        self.failed: str | None = None
        self._guard(self._start)

    def _guard(self, fn, *args) -> None:
        """Tracking must never end a run: the first failure is said once and tracking stops."""
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (a tracker's errors are its own: a server gone, a full disk)
            self.failed = f"{type(e).__name__}: {e}"
            if self.phase:
                self.phase(f"tracking stopped: {self.failed}")

    def _start(self) -> None:
        cfg = self.run.store.get_meta("run_config", {})
        self.sink.params({"task": self.run.task.name, "run_dir": str(self.run.run_dir),
                          **{k: json.dumps(cfg[k]) for k in ("budget", "seed", "levers", "alpha") if k in cfg}})

    def baseline(self) -> None:
        """The baseline's validation score at step 0, once it is there."""
        base = self.run.baseline()
        if base is not None and (score := self.run.score(base, "val")) is not None:
            self.sink.metric("val/champion", score, 0)

    def on_champion(self, score: float) -> None:
        if not any(g.status == "decided" for g in self.run.store.generations()):  # later ones are logged per generation
            self._guard(self.baseline)

    def on_train_step(self, stats: dict[str, Any]) -> None:
        self._guard(self._train_step, stats)

    def _train_step(self, stats: dict[str, Any]) -> None:
        self.train_step += 1
        for k in TRAIN_KEYS:
            if isinstance(stats.get(k), (int, float)):
                self.sink.metric(f"train/{k}", stats[k], self.train_step)

    def on_verdict(self, gen: int, verdict: Any, lesson: str) -> None:
        g = next((x for x in self.run.store.generations() if x.gen == gen), None)
        if g is not None:
            self._guard(self.generation, g)

    def generation(self, g) -> None:
        """A decided generation at step = its number: the gate's result, the champion after it, new versions as files."""
        v, p = g.verdict or {}, g.proposal
        if p.get("lever") == "stop":  # the agent stopped: no change, no gate
            return
        step = g.gen
        for key, value in (("gate/delta", v.get("delta")), ("gate/p_value", v.get("p_value")), ("gate/alpha", v.get("alpha")),
                           ("gate/n", v.get("n")), ("gate/accepted", float(bool(v.get("accept")))),
                           ("generation/minutes", (g.seconds or 0) / 60), ("generation/expected_gain", p.get("expected_gain"))):
            if isinstance(value, (int, float)):
                self.sink.metric(key, value, step)
        champion = g.candidate_id if v.get("accept") else g.champion  # the champion after this generation
        if (score := self.run.score(champion, "val")) is not None:
            self.sink.metric("val/champion", score, step)
        self.sink.text(f"generation/{step:03d}", f"{p.get('lever')} / {p.get('kind')}: "
                       f"{'accepted' if v.get('accept') else 'rejected'}; {v.get('reason') or g.lesson or ''}\n\n"
                       f"{p.get('rationale') or ''}", step)
        if v.get("accept") and g.candidate_id:
            c = self.run.store.candidate(g.candidate_id)
            self.sink.text(f"harness/{c.harness_version}", self.run.store.harness_source(c.harness_version), step)
            if c.adapter_version and p.get("lever") == "weights":
                self.sink.files(self.run.store.adapter_path(c.adapter_version), f"adapters/{c.adapter_version}")

    def finish(self, finished: bool = True) -> None:
        """The final scores (test is sealed: read, never scored here), then the writer is closed."""
        def final() -> None:
            champion = self.run.store.champion()
            for split in ("val", "test"):
                for name, cid in (("baseline", self.run.baseline()), ("final", champion)):
                    if cid is not None and (score := self.run.score(cid, split)) is not None:
                        self.sink.metric(f"{split}/{name}", score, 0)
        self._guard(final)
        try:
            self.sink.close(finished)
        except Exception:  # noqa: BLE001 (closing a writer that already failed)
            pass


def export(run, sink: Sink) -> dict[str, Any]:
    """Log a run after the fact as a live tracker would have: each generation's training steps, then its gate result."""
    tracker = Tracker(run, sink)
    tracker.train_step = 0
    tracker._guard(tracker.baseline)
    for g in run.store.generations():
        if g.status != "decided":
            continue
        if g.candidate_id and g.proposal.get("lever") == "weights":
            adapter = run.store.candidate(g.candidate_id).adapter_version
            for stats in _training_log(run, adapter) if adapter else []:
                tracker.on_train_step(stats)
        tracker._guard(tracker.generation, g)
    tracker.finish(run.store.get_meta("status") != "running")
    if tracker.failed:
        raise SiaError(f"export failed: {tracker.failed}", "check the tracking URI or folder")
    return {"generations": sum(1 for g in run.store.generations() if g.status == "decided" and g.proposal.get("lever") != "stop"),
            "train_steps": tracker.train_step}


def _training_log(run, version: str | None) -> list[dict[str, Any]]:
    if not version:
        return []
    meta = run.store.adapter_path(version) / "sia_training.json"
    try:
        return list(json.loads(meta.read_text()).get("log") or [])
    except (OSError, ValueError):
        return []

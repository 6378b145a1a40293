"""A run in MLflow and TensorBoard: logged live (`sia run --track`, see test_weights) or after the fact (`sia export`), read
back with each library's own reader; a tracker that fails never ends a run."""

from pathlib import Path

import pytest


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log folder, by tag, as (step, value), read by TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in Path(logdir).rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, round(e.value, 6)) for e in acc.Scalars(tag))
    return out


def test_a_finished_run_is_exported_to_mlflow_and_read_back_with_its_client(scripted_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from sia.api import export

    run_dir, summary, _ = scripted_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = export(run_dir, "mlflow", uri)
    client = MlflowClient(tracking_uri=uri)
    history = lambda key: [(m.step, m.value) for m in client.get_metric_history(r["run_id"], key)]  # noqa: E731
    gens = [g for g in summary["generations"] if g["lever"] != "stop"]  # the agent's stop is no gate
    assert r["generations"] == len(gens) and r["where"] == uri
    assert [v for _, v in history("gate/accepted")] == [float(g["accepted"]) for g in gens]
    assert [s for s, _ in history("gate/accepted")] == [g["generation"] for g in gens], "step = generation"
    from sia.store.run import Run

    accepted = next(g for g in gens if g["accepted"])
    with Run.open(run_dir) as opened:  # the run as it is now (a test of rollback may have moved its champion)
        final_test = opened.score(opened.store.champion(), "test")
        version = opened.store.candidate(accepted["candidate"]).harness_version
    assert history("val/champion")[0] == (0, pytest.approx(summary["baseline"]["val"]))
    assert history("test/final") == ([] if final_test is None else [(0, pytest.approx(final_test))])
    run = client.get_run(r["run_id"])
    assert run.data.params["task"] == "sentiment" and run.info.status == "FINISHED"
    text = Path(run.info.artifact_uri.removeprefix("file://")) / "harness" / f"{version}.txt"
    assert accepted and "def solve" in text.read_text(), "an accepted harness version is an artifact"


def test_a_tracker_that_fails_says_so_once_and_the_run_goes_on(scripted_run):
    from sia.loop.tracking import Tracker
    from sia.store.run import Run

    class Gone:
        calls = 0

        def __getattr__(self, name):
            def fail(*args):
                Gone.calls += 1
                raise ConnectionError("tracking server gone")
            return fail

    said: list[str] = []
    with Run.open(scripted_run[0]) as run:
        tracker = Tracker(run, Gone(), phase=said.append)
        tracker.on_train_step({"loss": 1.0})
        tracker.on_verdict(1, None, "")
        tracker.finish()
    assert said == ["tracking stopped: ConnectionError: tracking server gone"] and Gone.calls == 2, "params, then close"


def test_a_fanout_sends_every_event_to_each_view_in_turn():
    from sia.loop.events import Fanout, RunObserver

    class View(RunObserver):
        def __init__(self):
            self.seen = []

        def on_phase(self, text):
            self.seen.append(text)

        def on_verdict(self, gen, verdict, lesson):
            self.seen.append((gen, lesson))

    a, b = View(), View()
    fan = Fanout(a, b)
    fan.on_phase("baseline")
    fan.on_verdict(1, None, "kept")
    fan.on_rollout(object())  # an event neither view shows does nothing
    assert a.seen == b.seen == ["baseline", (1, "kept")]
    assert {n for n in vars(Fanout) if n.startswith("on_")} == {n for n in vars(RunObserver) if n.startswith("on_")}

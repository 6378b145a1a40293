import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the memory of earlier runs (sia.store.priors) is the test session's own: none of the user's records, none written there
os.environ["SIA_MEMORY"] = tempfile.mkdtemp(prefix="sia-test-memory-")
ROOT = Path(__file__).resolve().parents[1]
SIA = str(Path(sys.executable).parent / "sia")


MODEL_FIXTURES = {"runtime", "hf_runtime", "own_runtime", "scripted_run"}


def pytest_collection_modifyitems(config, items):
    """A test that uses a model fixture is a `model` test (`make test-fast` leaves those out); tests that start a `sia`
    command serving the model are marked by hand."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


def _runtime(backend: str):
    from sia.policy.embedded import embedded_model_dir
    from sia.policy.runtime import PolicyRuntime

    if not (embedded_model_dir() / "config.json").is_file():
        pytest.fail("the embedded model is not converted: run `make setup` (make test does it)")
    return PolicyRuntime.local(backend=backend)


@pytest.fixture(scope="session")
def runtime():
    """The embedded model behind a real policy service, on the engine sia chooses here (llama.cpp where it is faster)."""
    rt = _runtime("auto")
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def hf_runtime():
    """The embedded model served by HF/PyTorch in fp32: what the trainer computes, for tests of exact logprobs."""
    rt = _runtime("hf")
    yield rt
    rt.close()


@pytest.fixture
def own_runtime():
    """A policy service of its own: adapter names (a1, ...) are per run."""
    from sia.policy.runtime import PolicyRuntime

    rt = PolicyRuntime.local()
    yield rt
    rt.close()


@pytest.fixture
def tiny_task(tmp_path: Path) -> Path:
    """A copy of the sentiment task folder with 12 examples, 4 per split."""
    from sia.task.loading import BUILTIN_DIR

    src = BUILTIN_DIR / "sentiment"
    dst = tmp_path / "tiny"
    dst.mkdir()
    for name in ("inputs.jsonl", "labels.jsonl"):
        lines = (src / name).read_text().splitlines()
        (dst / name).write_text("\n".join(lines[:6] + lines[-6:]) + "\n")
    toml = (
        (src / "task.toml")
        .read_text()
        .replace("train = 400", "train = 4")
        .replace("val = 200", "val = 4")
        .replace("test = 200", "test = 4")
    )
    (dst / "task.toml").write_text(toml.replace('name = "sentiment"', 'name = "tiny"'))
    return dst


def new_run(run_dir: Path, config):
    """A run directory started for `config`, as `sia run` starts one: a `Run` with its store open for writing."""
    from sia.store.run import Run
    from sia.store.store import Store
    from sia.task.loading import load_task

    task = load_task(config.task)
    store = Store(run_dir)
    store.set_meta("run_config", config.model_dump(mode="json"))
    store.set_meta("task", {"name": task.name, "folder": str(task.folder)})
    return Run(store, task)


class ScriptedAgent:
    """A Feedback-Agent that proposes a fixed list of changes: how a user plugs in their own agent."""

    def __init__(self, proposals):
        from sia.agents.proposal import Stop

        self.proposals = list(proposals)
        self.seen_states = []
        self.name = "scripted"
        self._stop = Stop

    def decide(self, state):
        from sia.agents.contract import Decision

        self.seen_states.append(state)
        return Decision(self.proposals.pop(0) if self.proposals else self._stop("script finished"))


@pytest.fixture(scope="session")
def scripted_run(tmp_path_factory, runtime):
    """One loop run shared by the loop and report tests: a syntax error, a crashing harness, then calibrated label scoring."""
    from sia.agents.proposal import HarnessEdit
    from sia.harness.template import make_config, render
    from sia.loop.config import RunConfig
    from sia.loop.loop import Loop
    from sia.task.loading import load_task

    task = load_task("sentiment")
    good = render(make_config(task.public_info(), mode="score", calibrate=True))
    agent = ScriptedAgent(
        [
            HarnessEdit("def solve(example, ctx)\n    return 'positive'\n", "a syntax error", "rewrite"),
            HarnessEdit("def solve(example, ctx):\n    raise RuntimeError('always broken')\n", "crashes on every example", "rewrite"),
            HarnessEdit(good, "calibrated label scoring", "score_labels"),
        ]
    )
    config = RunConfig(task="sentiment", budget=900, val_limit=60, test_limit=16, analysis_examples=8, patience=5)
    run_dir = tmp_path_factory.mktemp("scripted") / "run"
    with new_run(run_dir, config) as run:
        summary = Loop(run, runtime, config, agent=agent).run()
    return run_dir, summary, agent

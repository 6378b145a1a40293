"""Memory across runs and tasks: every gated change leaves a record, and a new task's options are ranked with the records
of similar tasks as a prior.

A run's design memory (`sia.store.memory`) lives in its store and dies with it.
This one is a file in `SIA_HOME` (`SIA_MEMORY` overrides the folder): one JSON
line per gated change, with what was tried (lever and kind), what it gained on
validation and in how many minutes, and the features of the task it was tried
on, as the run measured them before changing anything: its output kind, label
count, input length, train size, and the baseline's failure shares (wrong,
malformed, crashed).

`prior(records, kind, features)` takes the records of one kind whose tasks are
most like this one (similarity of those features, at least `MIN_SIMILARITY`,
the `NEAREST` most similar) and returns their weighted mean gain and gain per
minute; the builtin Feedback-Agent adds it to an option's relevance, shrunk by
how few records there are, and names the records it used in its rationale.
A record from the very task in front of it counts too (earlier runs of it are
the best evidence there is), unless the run asks to leave that task out.

Simplification on purpose: similarity is a fixed weighting of five features,
not learnt; records are never pruned (a line is about 400 bytes).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sia.paths import sia_home

MIN_SIMILARITY = 0.3
NEAREST = 8


@dataclass(frozen=True)
class Features:
    """What a task looks like to the loop before it changes anything."""

    output: str
    """label, number, text, program or json."""
    labels: int
    input_chars: float
    train: int
    wrong: float
    unparseable: float
    error: float

    def similarity(self, other: Features) -> float:
        """1 for the same shape, size and failures; towards 0 as they differ (another output kind halves it)."""
        d = (abs(math.log1p(self.labels) - math.log1p(other.labels)) / 2
             + abs(math.log1p(self.input_chars) - math.log1p(other.input_chars)) / 3
             + abs(math.log1p(self.train) - math.log1p(other.train)) / 4
             + abs(self.wrong - other.wrong) + abs(self.unparseable - other.unparseable) + abs(self.error - other.error))
        return math.exp(-d) * (1.0 if self.output == other.output else 0.5)


def features(task, analysis) -> Features:
    """A task's features from its spec, its train split and the baseline's train analysis."""
    train = task.split("train")
    chars = sum(sum(len(str(v)) for v in e.inputs.values()) for e in train) / max(1, len(train))
    gold = getattr(getattr(task.grader, "func", task.grader), "gold", None)
    if task.spec.output != "text":
        output = task.spec.output
    elif task.labels:
        output = "label"
    else:
        sample = [str(gold(e)) for e in train[:20]] if gold else []
        output = "number" if sample and all(_number(x) for x in sample) else "text"
    n = max(1, analysis.n)
    return Features(output, len(task.labels), round(chars, 1), len(train), round(analysis.outcomes.get("wrong", 0) / n, 3),
                    round(analysis.outcomes.get("unparseable", 0) / n, 3), round(analysis.outcomes.get("error", 0) / n, 3))


def _number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Record:
    task: str
    lever: str
    kind: str
    accepted: bool
    delta: float
    minutes: float
    features: Features
    run: str = ""
    date: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Prior:
    kind: str
    delta: float
    """Similarity-weighted mean validation gain of the records."""
    per_minute: float
    n: int
    tasks: tuple[str, ...]

    def describe(self) -> str:
        return (f"prior from {self.n} record(s) of {self.kind} on similar tasks ({', '.join(self.tasks[:4])}"
                f"{'...' if len(self.tasks) > 4 else ''}): mean gain {self.delta:+.3f}, {self.per_minute:+.3f} per minute")


def memory_file() -> Path:
    return Path(os.environ.get("SIA_MEMORY") or sia_home() / "memory") / "outcomes.jsonl"


def append(record: Record, path: Path | None = None) -> None:
    """Add a record (one line, appended and flushed: a killed run leaves at most a torn last line, which `load` skips)."""
    path = path or memory_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load(path: Path | None = None, exclude_task: str | None = None) -> list[Record]:
    """Every readable record (a damaged line is skipped, never an error), less those of `exclude_task`."""
    path = path or memory_file()
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            d: dict[str, Any] = json.loads(line)
            rec = Record(**{**d, "features": Features(**d["features"])})
        except (ValueError, TypeError, KeyError):
            continue
        if rec.task != exclude_task:
            out.append(rec)
    return out


def records_of_run(run) -> list[Record]:
    """The records a finished run's gated changes leave (as `sia.loop.loop.Loop` appends them when memory is on), read
    back from its store: so a run made with --no-memory can still inform later ones (`sia memory add`). A run that
    never measured its task's features (stopped before its first analysis) leaves none."""
    saved = run.store.get_meta("task_features")
    if not saved:
        return []
    feats = Features(**saved)
    out = []
    for g in run.store.generations():
        if not g.decided or g.candidate_id is None or not g.verdict:
            continue
        out.append(Record(run.task.name, str(g.proposal.get("lever", "")), str(g.proposal.get("kind", "")),
                          bool(g.verdict.get("accept")), float(g.verdict.get("delta") or 0.0), (g.seconds or 0.0) / 60,
                          feats, str(run.run_dir), g.finished or g.started))
    return out


def prior(records: list[Record], kind: str, here: Features) -> Prior | None:
    """What changes of `kind` gained on the tasks most like this one, or None without such records."""
    near = sorted(((r.features.similarity(here), r) for r in records if r.kind == kind), key=lambda x: -x[0])
    near = [(w, r) for w, r in near if w >= MIN_SIMILARITY][:NEAREST]
    if not near:
        return None
    total = sum(w for w, _ in near)
    delta = sum(w * (r.delta if r.accepted else min(r.delta, 0.0)) for w, r in near) / total
    per_minute = sum(w * (r.delta if r.accepted else min(r.delta, 0.0)) / max(r.minutes, 0.1) for w, r in near) / total
    return Prior(kind, delta, per_minute, len(near), tuple(dict.fromkeys(r.task for _, r in near)))

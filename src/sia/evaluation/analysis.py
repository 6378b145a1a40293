"""What the Feedback-Agent reads: the champion's rollouts on train examples, summarised.

Outcomes are typed: correct, wrong (well-formed but not right), unparseable
(names no allowed label), error (the harness failed) and timeout. The label
confusion and the predicted-label distribution show a collapse to one answer.
Only train rollouts are analysed: validation is the gate's, test is for reports.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sia.store.store import Store
from sia.task.graders import options_in
from sia.task.loading import Task


@dataclass
class Reply:
    example_id: str
    text: str
    output: Any
    gold: Any
    score: float
    finish_reason: str | None


@dataclass
class Analysis:
    n: int
    score: float
    outcomes: Counter
    predicted: Counter
    gold: Counter
    confusion: Counter  # (gold, predicted) -> count
    replies: list[Reply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tokens: int = 0
    scores: list[float] = field(default_factory=list)
    """Each analysed rollout's score (for the spread of continuous rewards)."""
    calls: int = 0
    """Model calls of all analysed rollouts (see `model_calls`)."""

    @property
    def calls_per_example(self) -> float:
        return self.calls / self.n if self.n else 0.0

    def rate(self, outcome: str) -> float:
        return self.outcomes.get(outcome, 0) / self.n if self.n else 0.0

    @property
    def skew(self) -> float:
        """How much more often the top predicted label occurs than the top gold label (0 = balanced as gold)."""
        if not self.predicted or not self.gold:
            return 0.0
        return max(0.0, max(self.predicted.values()) / max(1, sum(self.predicted.values()))
                   - max(self.gold.values()) / max(1, sum(self.gold.values())))

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "score": round(self.score, 4), "outcomes": dict(self.outcomes),
                "predicted": dict(self.predicted.most_common(8)), "gold": dict(self.gold.most_common(8)),
                "skew": round(self.skew, 3), "errors": self.errors[:3],
                "confusion": [[g, p, c] for (g, p), c in self.confusion.most_common(6) if g != p]}


def model_calls(events) -> int:
    """A rollout's model calls: one per request, and one per extra sampled reply (a vote of 5 replies costs 5)."""
    n = 0
    for e in events:
        if e.kind == "llm_call":
            n += max(1, len(e.data.get("completions") or [])) if e.data.get("kind") == "chat" else 1
    return n


def calls_per_example(store: Store, evaluation_id: str) -> float:
    """Mean model calls per rollout of an evaluation."""
    rows = store.rollouts(evaluation_id)
    return sum(model_calls(store.events(r.id)) for r in rows) / len(rows) if rows else 0.0


def _gold(target: dict[str, Any]) -> str:
    if "label" in target:
        return str(target["label"])
    if "labels" in target:
        return ";".join(sorted(target["labels"]))
    return json.dumps(target, ensure_ascii=False)


def analyse(task: Task, store: Store, evaluation_id: str) -> Analysis:
    ev = store.evaluation(evaluation_id)
    if ev is None or ev.split != "train":
        raise ValueError("the Feedback-Agent analyses train rollouts only")
    labels = task.labels
    outcomes: Counter = Counter()
    predicted: Counter = Counter()
    gold: Counter = Counter()
    confusion: Counter = Counter()
    replies: list[Reply] = []
    errors: list[str] = []
    scores: list[float] = []
    tokens = calls = 0
    for r in store.rollouts(evaluation_id):
        ex = task.examples[r.example_id]
        g = _gold(ex.target) if labels else "n/a"
        gold[g] += 1
        scores.append(r.score)
        output = r.output
        events = store.events(r.id)
        calls += model_calls(events)
        graded = next((e.data.get("outcome") for e in events if e.kind == "grade"), None)
        if r.error_type == "timeout":
            outcome = "timeout"
        elif r.error_type:
            outcome = "error"
            errors.append(f"{r.error_type}: {(r.error or '').splitlines()[0][:200] if r.error else ''}")
        elif r.passed:
            outcome = "correct"
        elif graded in ("unparseable", "error", "wrong"):  # the grader typed a program's or settings' failure
            outcome = graded
            if graded == "error":
                errors.append(f"grader: {r.feedback or ''}"[:200])
        elif labels and isinstance(output, str) and not options_in(output, labels):
            outcome = "unparseable"
        else:
            outcome = "wrong"
        outcomes[outcome] += 1
        pred = output if isinstance(output, str) and labels else outcome
        if labels and isinstance(output, str):
            found = sorted(options_in(output, labels))
            pred = ";".join(found) if found else "<none>"
        predicted[pred] += 1
        confusion[(g, pred)] += 1
        for ev_ in events:
            if ev_.kind == "llm_call" and ev_.data.get("kind") != "embed":  # the first call that asked for an answer
                d = ev_.data
                for c in d.get("completions", [])[:1]:
                    tokens += len(c.get("token_ids") or [])
                    if d.get("kind") == "chat":
                        replies.append(Reply(r.example_id, c.get("text") or "", output, ex.target, r.score, c.get("finish_reason")))
                break
    n = len(scores)
    return Analysis(n, sum(scores) / n if n else 0.0, outcomes, predicted, gold, confusion, replies, errors, tokens, scores, calls)

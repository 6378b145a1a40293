"""Graders: `grade(example, output) -> Grade`, deterministic, the only judge of quality.

A task names its grader in `task.toml` (`[grader] entry = "module:function"` or
`"file.py:function"` relative to the task folder). The builtin graders below are
strict on purpose: a lenient grader gets gamed by RL (a model learned to answer
"Positive: ... Negative: ..." when any mention of the label counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sia.task.loading import Example


@dataclass(frozen=True)
class Grade:
    score: float
    passed: bool
    feedback: str = ""
    outcome: str = ""
    """Optional type of a failure, for the Feedback-Agent's analysis: "unparseable" (no answer could be read from the
    output), "error" (the output could not run) or "wrong" (it ran and was wrong or slow). Label graders leave it empty."""

    def to_dict(self) -> dict[str, Any]:
        d = {"score": self.score, "passed": self.passed, "feedback": self.feedback}
        return {**d, "outcome": self.outcome} if self.outcome else d


Grader = Callable[["Example", Any], Grade]


def first_line(output: Any) -> str:
    """The first non-empty line of `output`, stripped; "" for non-text output."""
    if not isinstance(output, str):
        return ""
    for line in output.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _normalise_label(text: str) -> str:
    return text.strip().strip(" .!\"'`*:").lower()


def exact_label(example: "Example", output: Any) -> Grade:
    """1 if the first line of the output is exactly the label (case and edge punctuation ignored)."""
    label = str(example.target["label"])
    got = first_line(output)
    if _normalise_label(got) == _normalise_label(label):
        return Grade(1.0, True, "correct")
    if not got:
        return Grade(0.0, False, "empty output")
    return Grade(0.0, False, f"expected {label!r}, got {got[:80]!r}")


def set_f1(gold: set[str], predicted: set[str]) -> float:
    """F1 between two sets, 0 when either is empty (LawBench's `compute_f1_two_sets`)."""
    if not gold or not predicted:
        return 0.0
    hit = len(gold & predicted)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(predicted), hit / len(gold)
    return 2 * precision * recall / (precision + recall)


def options_in(text: str, options: list[str]) -> set[str]:
    """Every option that occurs as a substring of `text`, as LawBench extracts predictions."""
    return {opt for opt in options if opt in text}


def option_set_f1(example: "Example", output: Any) -> Grade:
    """LawBench's multi-label grading: F1 between the gold set and the options found in the output.

    The allowed options come from the task (`labels`), passed on the example as
    `example.options`. As in LawBench, an option counts when it occurs anywhere in
    the output, so a longer charge name also credits any charge it contains.
    """
    text = output if isinstance(output, str) else ""
    gold = set(example.target["labels"])
    pred = options_in(text, example.options)
    score = set_f1(gold, pred)
    if not pred:
        return Grade(0.0, False, "no allowed label in output (abstention)")
    return Grade(score, score == 1.0, f"F1={score:.2f}: predicted {sorted(pred)[:5]}, expected {sorted(gold)}")


def single_choice(example: "Example", output: Any) -> Grade:
    """LawBench's `multi_choice_judge`: correct only if the gold option is the only one in the output."""
    text = output if isinstance(output, str) else ""
    pred = options_in(text, example.options)
    label = str(example.target["label"])
    if not pred:
        return Grade(0.0, False, "no allowed label in output (abstention)")
    if pred == {label}:
        return Grade(1.0, True, "correct")
    return Grade(0.0, False, f"expected {label!r}, found {sorted(pred)[:5]}")

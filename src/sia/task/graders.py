"""Graders: `grade(example, output) -> Grade`, deterministic, the only judge of quality.

A task names its grader in `task.toml` (`[grader] entry = "module:function"` or
`"file.py:function"` relative to the task folder). The builtin graders below are
strict on purpose: a lenient grader gets gamed by RL (a model learned to answer
"Positive: ... Negative: ..." when any mention of the label counted).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sia.task.example import Example


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


def grader(*fields: str, gold: Callable[[Example], Any] | None = None, gold_note: str = "") -> Callable[[Grader], Grader]:
    """Declare what a grader reads: the label fields every row must have, and the output that scores full marks.

    `sia task check` uses both: it refuses a labels file that lacks a field, and
    grades each example's gold output against itself. `gold_note` says why some
    gold outputs cannot score full marks under this grader (then they are
    reported, not refused). Custom graders may use it.
    """
    def wrap(fn: Grader) -> Grader:
        fn.fields = tuple(fields)  # type: ignore[attr-defined]
        fn.gold = gold  # type: ignore[attr-defined]
        fn.gold_note = gold_note  # type: ignore[attr-defined]
        return fn
    return wrap


def first_line(output: Any) -> str:
    """The first non-empty line of `output`, stripped; "" for non-text output."""
    if not isinstance(output, str):
        return ""
    for line in output.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalise_label(text: str) -> str:
    return text.strip().strip(" .!\"'`*:").lower()


@grader("label", gold=lambda ex: str(ex.target["label"]))
def exact_label(example: Example, output: Any) -> Grade:
    """1 if the first line of the output is exactly the label (case and edge punctuation ignored)."""
    label = str(example.target["label"])
    got = first_line(output)
    if normalise_label(got) == normalise_label(label):
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


@grader("labels", gold=lambda ex: ";".join(ex.target["labels"]),
        gold_note="as in LawBench, a charge name that contains another also credits it, so such gold sets score below 1")
def option_set_f1(example: Example, output: Any) -> Grade:
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


@grader("label", gold=lambda ex: str(ex.target["label"]))
def single_choice(example: Example, output: Any) -> Grade:
    """LawBench's `multi_choice_judge`: correct only if the gold option is the only one in the output."""
    text = output if isinstance(output, str) else ""
    pred = options_in(text, example.options)
    label = str(example.target["label"])
    if not pred:
        return Grade(0.0, False, "no allowed label in output (abstention)")
    if pred == {label}:
        return Grade(1.0, True, "correct")
    return Grade(0.0, False, f"expected {label!r}, found {sorted(pred)[:5]}")


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def _number(text: str) -> float | None:
    found = NUMBER.findall(text.replace("\u2212", "-"))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


@grader("answer", gold=lambda ex: str(ex.target["answer"]))
def numeric(example: Example, output: Any, rel_tol: float = 0.0, abs_tol: float = 0.0) -> Grade:
    """The last number in the output's first line against `answer`: exact, or within `abs_tol` / `rel_tol` (grader options)."""
    gold = float(example.target["answer"])
    line = first_line(output)
    got = _number(line)
    if got is None:
        return Grade(0.0, False, f"no number in {line[:80]!r}", outcome="unparseable")
    ok = abs(got - gold) <= max(abs_tol, rel_tol * abs(gold))
    return Grade(float(ok), ok, "correct" if ok else f"expected {gold:g}, got {got:g}")


def normalise_text(text: str) -> str:
    """Lower case, accents and edge punctuation off, inner whitespace collapsed: how free-text answers are compared."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(text.strip().strip(".,;:!?\"'`*()[]").split())


def _answers(example: Example) -> list[str]:
    t = example.target
    return [str(x) for x in t["answers"]] if "answers" in t else [str(t["answer"])]


@grader("answer", gold=lambda ex: _answers(ex)[0])
def text_match(example: Example, output: Any, exact: bool = False) -> Grade:
    """The output's first line equals `answer` (or one of `answers`) after normalisation (case, accents, punctuation, spaces),
    or, with the grader option `exact`, with only the surrounding spaces removed (for answers where case and punctuation
    are the answer, such as string operations)."""
    norm = str.strip if exact else normalise_text
    got = norm(first_line(output))
    if not got:
        return Grade(0.0, False, "empty output", outcome="unparseable")
    ok = got in {norm(a) for a in _answers(example)}
    return Grade(float(ok), ok, "correct" if ok else f"expected {_answers(example)[0]!r}, got {first_line(output)[:80]!r}")


@grader("answer")
def regex_match(example: Example, output: Any, pattern: str = r"(?i)answer\s*[:=]\s*(.+)") -> Grade:
    """The first match of `pattern` (a grader option; its first group if it has one) equals `answer` after normalisation."""
    text = output if isinstance(output, str) else ""
    m = re.search(pattern, text)
    if m is None:
        return Grade(0.0, False, f"no match of {pattern!r}", outcome="unparseable")
    got = normalise_text(m.group(1) if m.groups() else m.group(0))
    ok = got in {normalise_text(a) for a in _answers(example)}
    return Grade(float(ok), ok, "correct" if ok else f"expected {_answers(example)[0]!r}, extracted {got[:80]!r}")


CHOICE = re.compile(r"^\(?([A-Z])(?:[).:\s]|$)")


@grader("answer", gold=lambda ex: str(ex.target["answer"]).strip().upper())
def multiple_choice(example: Example, output: Any) -> Grade:
    """The option letter that starts the output's first line ("B", "(B)", "B. ...") equals `answer` (a letter)."""
    m = CHOICE.match(first_line(output).upper())
    gold = str(example.target["answer"]).strip().upper()
    if m is None:
        return Grade(0.0, False, f"no option letter at the start of {first_line(output)[:80]!r}", outcome="unparseable")
    ok = m.group(1) == gold
    return Grade(float(ok), ok, "correct" if ok else f"expected {gold}, got {m.group(1)}")

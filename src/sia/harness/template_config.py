"""What a generated harness does: `TemplateConfig`, the `CONFIG` literal at the top of every template harness.

Its own module, below `sia.harness.template` (which makes and reads configs and
renders them) and the code generators it calls (`template_text`,
`template_programs`, `template_shapes`), so that none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Demo:
    input: str
    answer: str


@dataclass(frozen=True)
class TemplateConfig:
    """What a generated harness does; its fields are the `CONFIG` literal at the top of the source."""

    instruction: str = ""
    system: str = ""
    input_field: str = "text"
    input_prefix: str = ""
    labels: tuple[str, ...] = ()
    multi_label: bool = False
    demos: tuple[Demo, ...] = ()
    """Demonstrations from the train split."""
    mode: str = "generate"
    """generate (free generation, then parse), score (log-likelihood of each label) or neighbours (the answer most of
    the nearest `demos` have, in the policy model's own embeddings; no generation)."""
    max_tokens: int = 32
    extract: str = "first_label"
    """first_label | last_label | first_line | all_labels; for open answers (no labels) first_line, last_number, quoted,
    after_is or last_line."""
    normalise: dict[str, str] = field(default_factory=dict)
    """Reply word -> label, learned from failed outputs."""
    calibrate: bool = False
    """Score mode: subtract each label's score on a content-free input."""
    votes: int = 1
    """Generate mode: self-consistency over this many samples."""
    vote_temperature: float = 0.7
    retry: bool = False
    """Generate mode: ask again when the reply names no allowed label."""
    input_template: str = ""
    """How an example is shown: a str.format template over its visible fields; empty: the input field alone, or every
    visible field when the task has several."""
    fields: tuple[str, ...] = ()
    """The task's visible fields, when it has more than the input field."""
    output: str = "text"
    """What the task wants back: text (a label, an answer), program or json; the last two use template_programs."""
    robust_parse: bool = False
    """Program or json: read the answer out of any fenced block or object in the reply, leniently."""
    attempts: int = 1
    """Program or json: tries; after a failed local check the model is shown the error and asked again."""
    samples: int = 1
    """Program or json: replies sampled per try; the helper's local check keeps the best."""
    sample_temperature: float = 0.8
    check: bool = False
    """Program or json: judge outputs with the task helper's local check."""
    search: int = 0
    """Json: settings around the best tried with the local check (the helper's neighbours)."""
    fallback: bool = False
    """Program or json: return the helper's baseline when nothing the model wrote passes the local check."""
    label_words: dict[str, str] = field(default_factory=dict)
    """Score mode: label -> the word scored for it (a small model may score another word far better than the label name)."""
    calibrate_inputs: tuple[str, ...] = ("N/A",)
    """Score mode with calibrate: the content-free inputs whose label scores are averaged into the bias."""
    input_first: bool = False
    """Show the input before the instruction in the user turn."""
    demo_layout: str = "turns"
    """turns (each demonstration a user and an assistant turn) or inline (all of them written into the user turn)."""
    ensemble: tuple[str, ...] = ()
    """Score mode: more instructions; the label scores of the prompts they make are averaged with the main one's."""
    max_input_chars: int = 0
    """Clip each input to this many characters (its start and its end); 0 keeps it whole."""
    similar_demos: int = 0
    """Show only this many of `demos` per input: those nearest to it in the policy model's own embeddings; 0 shows all."""
    neighbours: int = 0
    """Neighbours mode: how many of the nearest demos vote; 0 lets the harness choose k by leave-one-out on the demos."""

    def literal(self) -> dict[str, Any]:
        """The CONFIG literal written into the source (lists and dicts, in field order; settings a label harness does not
        use are left out while they hold their defaults)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if (f.name not in LATER and (self.output != "text" or f.name not in OPTIONAL)) or getattr(self, f.name) != _default(f)}
        d["labels"] = list(self.labels)
        for key in ("calibrate_inputs", "ensemble"):
            if key in d:
                d[key] = list(d[key])
        if "fields" in d:
            d["fields"] = list(self.fields)
        d["demos"] = [{"input": x.input, "answer": x.answer} for x in self.demos]
        d["normalise"] = dict(self.normalise)
        return d

    @classmethod
    def from_literal(cls, value: dict[str, Any]) -> TemplateConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in value.items() if k in known}
        for key in ("labels", "fields", "calibrate_inputs", "ensemble"):
            if key in d:
                d[key] = tuple(str(x) for x in d[key])
        if "demos" in d:
            d["demos"] = tuple(Demo(str(x["input"]), str(x["answer"])) for x in d["demos"])
        for key in ("normalise", "label_words"):
            if key in d:
                d[key] = dict(d[key])
        return cls(**d)


OPTIONAL = {"input_template", "fields", "output", "robust_parse", "attempts", "samples", "sample_temperature", "check", "search",
            "fallback"}
LATER = {"label_words", "calibrate_inputs", "input_first", "demo_layout", "ensemble", "max_input_chars", "similar_demos",
         "neighbours"}
"""Settings added after harnesses were first generated: left out of every CONFIG while at their defaults, so a config that
does not use them renders the source it always did."""


def _default(f) -> Any:
    from dataclasses import MISSING

    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default

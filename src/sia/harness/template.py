"""Harness source generated from a config: the Meta-Agent's template and the builtin edits.

A generated harness is an ordinary Python file: a `CONFIG` literal at the top
and only the code its features need (label scoring, calibration, few-shot
demonstrations, voting, retry are emitted only when enabled), so the diff of an
edit shows the code that changed. `read_config` recovers the config from a
source, so the builtin Feedback-Agent can transform any harness it generated.
Hand-written harnesses have no `CONFIG`; the builtin agent leaves them alone.
"""

from __future__ import annotations

import ast
import pprint
from dataclasses import dataclass, field, fields, replace
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
    """generate (free generation, then parse) or score (log-likelihood of each label)."""
    max_tokens: int = 32
    extract: str = "first_label"
    """first_label | last_label | first_line | all_labels"""
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

    def literal(self) -> dict[str, Any]:
        """The CONFIG literal written into the source (lists and dicts, in field order; settings a label harness does not
        use are left out while they hold their defaults)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if self.output != "text" or f.name not in OPTIONAL or getattr(self, f.name) != f.default}
        d["labels"] = list(self.labels)
        if "fields" in d:
            d["fields"] = list(self.fields)
        d["demos"] = [{"input": x.input, "answer": x.answer} for x in self.demos]
        d["normalise"] = dict(self.normalise)
        return d

    @classmethod
    def from_literal(cls, value: dict[str, Any]) -> "TemplateConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in value.items() if k in known}
        for key in ("labels", "fields"):
            if key in d:
                d[key] = tuple(str(x) for x in d[key])
        if "demos" in d:
            d["demos"] = tuple(Demo(str(x["input"]), str(x["answer"])) for x in d["demos"])
        if "normalise" in d:
            d["normalise"] = dict(d["normalise"])
        return cls(**d)


OPTIONAL = {"input_template", "fields", "output", "robust_parse", "attempts", "samples", "sample_temperature", "check", "search",
            "fallback"}


def make_config(task_info: dict[str, Any], **overrides: Any) -> TemplateConfig:
    labels = tuple(task_info.get("labels", []))
    multi = bool(task_info.get("multi_label"))
    output = task_info.get("output", "text")
    fields = tuple(task_info.get("fields", ()))
    cfg = TemplateConfig(instruction=task_info.get("instruction") or task_info.get("description", ""),
                         input_field=task_info.get("input_field", "text"), labels=labels, multi_label=multi,
                         max_tokens=reply_budget(list(labels), multi) if output == "text" else (512 if output == "program" else 128),
                         output=output, input_template=task_info.get("input_template") or "",
                         fields=fields if len(fields) > 1 else ())
    cfg = replace(cfg, **overrides)
    if cfg.multi_label and cfg.extract == "first_label":
        cfg = replace(cfg, extract="all_labels")
    return cfg


def reply_budget(labels: list[str], multi_label: bool) -> int:
    """Tokens to let the model reply: room for a short preamble and the longest label (CJK takes ~2 tokens a character)."""
    if not labels:
        return 64
    longest = max(len(label) * (2 if any(ord(ch) > 127 for ch in label) else 0.5) for label in labels)
    return int(min(96, 16 + longest * (3 if multi_label else 1)))


def show(cfg: TemplateConfig, inputs: dict[str, Any]) -> str:
    """An example's visible fields as the harness's format_input shows them (for demonstrations), prefix excepted."""
    if cfg.input_template:
        return cfg.input_template.format(**inputs)
    if cfg.fields:
        return "\n".join(f"{name}: {inputs.get(name, '')}" for name in cfg.fields)
    return str(inputs.get(cfg.input_field, ""))


def read_config(source: str) -> TemplateConfig | None:
    """The CONFIG literal of a generated harness, or None for other harnesses."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CONFIG" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
                return TemplateConfig.from_literal(value) if isinstance(value, dict) else None
            except (ValueError, TypeError, KeyError):
                return None
    return None


HEADER = '''"""Harness generated by sia from a config. Edit freely; sia versions every change."""

CONFIG = {config}

{format_input}

def user_turn(text):
    return CONFIG["instruction"] + "\\n\\n" + text if CONFIG["instruction"] else text


def build_messages(example):
    messages = [{{"role": "system", "content": CONFIG["system"]}}] if CONFIG["system"] else []
{demos}    messages.append({{"role": "user", "content": user_turn(format_input(example))}})
    return messages
'''

FORMAT_ONE = '''

def format_input(example):
    return CONFIG["input_prefix"] + str(example.get(CONFIG["input_field"], ""))
'''

FORMAT_TEMPLATE = '''

def format_input(example):
    return CONFIG["input_prefix"] + CONFIG["input_template"].format(**example)
'''

FORMAT_FIELDS = '''

def format_input(example):
    return CONFIG["input_prefix"] + "\\n".join(f"{name}: {example.get(name, '')}" for name in CONFIG["fields"])
'''

DEMOS = '''    for demo in CONFIG["demos"]:
        messages.append({"role": "user", "content": user_turn(CONFIG["input_prefix"] + demo["input"])})
        messages.append({"role": "assistant", "content": demo["answer"]})
'''

SCORE = '''

def label_scores(ctx, messages):
    prompt = ctx.llm.render_chat(messages)
    return ctx.llm.logprobs(prompt, CONFIG["labels"])
'''

CALIBRATE = '''

def content_free_scores(ctx):
    """Each label's score on an empty input: the model's bias, subtracted below."""
    return label_scores(ctx, build_messages({CONFIG["input_field"]: "N/A"}))
'''

SOLVE_SCORE = '''

def solve(example, ctx):
    scores = label_scores(ctx, build_messages(example))
{calibrate}    best = max(range(len(scores)), key=lambda i: scores[i])
    ctx.log("label scores", scores=[round(s, 3) for s in scores])
    return CONFIG["labels"][best]
'''

EXTRACT = '''

def mentioned(reply):
    lowered = reply.lower()
    return sorted((lowered.find(label.lower()), label) for label in CONFIG["labels"] if label.lower() in lowered)


def extract(reply):
    """The answer in a reply, or None when it names no allowed label."""
    text = reply.strip()
    first = text.splitlines()[0].strip().strip(" .!:*\\"'").lower() if text else ""
    if first in CONFIG["normalise"]:
        return CONFIG["normalise"][first]
    if not CONFIG["labels"]:
        return text.splitlines()[0].strip() if text else None
    found = mentioned(reply)
    mode = CONFIG["extract"]
    if mode == "first_line":
        exact = [label for label in CONFIG["labels"] if label.lower() == first]
        return exact[0] if exact else None
    if not found:
        return None
    if mode == "all_labels":
        return ";".join(label for _, label in found)
    if mode == "last_label":
        return found[-1][1]
    return found[0][1]
'''

VOTE = '''

def vote(answers):
    answers = [a for a in answers if a is not None]
    if not answers:
        return None
    if CONFIG["multi_label"]:
        counts = {}
        for a in answers:
            for label in set(a.split(";")):
                counts[label] = counts.get(label, 0) + 1
        return ";".join(sorted(label for label, c in counts.items() if c * 2 > len(answers))) or answers[0]
    return max(sorted(set(answers)), key=answers.count)
'''

SOLVE_GENERATE = '''

def solve(example, ctx):
    messages = build_messages(example)
{ask}{retry}    return answer if answer is not None else reply.strip()
'''

ASK_ONE = '''    reply = ctx.llm.chat(messages, temperature=0.0, max_tokens=CONFIG["max_tokens"]).text
    answer = extract(reply)
'''

ASK_VOTE = '''    replies = ctx.llm.chat(messages, temperature=CONFIG["vote_temperature"], max_tokens=CONFIG["max_tokens"], n=CONFIG["votes"]).texts
    reply = replies[0]
    answer = vote([extract(r) for r in replies])
'''

RETRY = '''    if answer is None and CONFIG["labels"]:
        follow_up = messages + [{"role": "assistant", "content": reply},
                                {"role": "user", "content": "Answer with exactly one of: " + ", ".join(CONFIG["labels"]) + "."}]
        reply = ctx.llm.chat(follow_up, temperature=0.0, max_tokens=CONFIG["max_tokens"]).text
        answer = extract(reply)
        ctx.log("retried an unparseable reply", answer=answer)
'''


def render(cfg: TemplateConfig) -> str:
    if cfg.output in ("program", "json"):
        from sia.harness.template_programs import render_program

        return render_program(cfg)
    fmt = FORMAT_TEMPLATE if cfg.input_template else FORMAT_FIELDS if cfg.fields else FORMAT_ONE
    src = HEADER.format(config=pprint.pformat(cfg.literal(), width=110, sort_dicts=False), demos=DEMOS if cfg.demos else "",
                        format_input="\n" + fmt.lstrip("\n"))
    if cfg.mode == "score" and cfg.labels:
        src += SCORE
        if cfg.calibrate:
            src += CALIBRATE
        cal = ("    bias = content_free_scores(ctx)\n    scores = [s - b for s, b in zip(scores, bias)]\n" if cfg.calibrate else "")
        src += SOLVE_SCORE.format(calibrate=cal)
    else:
        src += EXTRACT
        if cfg.votes > 1:
            src += VOTE
        src += SOLVE_GENERATE.format(ask=ASK_VOTE if cfg.votes > 1 else ASK_ONE, retry=RETRY if cfg.retry else "")
    return src

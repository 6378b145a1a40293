"""The builtin Feedback-Agent's harness edits: general-purpose code transformations of template harnesses.

Each edit reads the champion's `TemplateConfig` and the evidence, and returns
the options it supports, each with a relevance from the observed failure types
(unparseable replies point at extraction and retry, a collapse onto one label at
scoring and calibration, wrong answers at demonstrations). None holds a
task-specific answer: demonstrations come from train, normalisations are
learned by replaying the champion's recorded train replies.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sia.agents.contract import AgentState
from sia.evaluation.analysis import Analysis
from sia.harness.template import Demo, TemplateConfig, render, show
from sia.harness.template_shapes import OPEN
from sia.task.loading import Example

INSTRUCTION_VARIANTS = [
    "{instruction}\nAnswer with exactly one of: {labels}.",
    "{instruction}\nReply with the answer only, no explanation.",
]
SYSTEM_VARIANT = "You are a careful annotator. You answer with the label only."


@dataclass(frozen=True)
class Option:
    """A change the builtin agent weighs: a harness config to render, or a weight update's algorithm and settings."""

    kind: str
    rationale: str
    relevance: float
    harness: TemplateConfig | None = None
    algorithm: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _edit(kind: str, cfg: TemplateConfig, why: str, relevance: float) -> Option:
    return Option(kind, why, relevance, harness=cfg)


def evidence(a: Analysis) -> str:
    parts = [f"{k} {v}" for k, v in a.outcomes.most_common()]
    return f"train analysis n={a.n}, score {a.score:.3f} ({', '.join(parts)})"


def edit_score_labels(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    labels = cfg.labels
    if cfg.mode != "generate" or not labels or cfg.multi_label or len(labels) > 30:
        return []
    a = s.analysis
    # scoring makes an unparseable answer impossible, so it outranks edits that only make one less likely (retry, longer replies)
    rel = 1.5 * a.rate("unparseable") + a.rate("wrong") + 0.8 * a.skew
    calibrate = a.skew > 0.15
    why = (f"score each of the {len(labels)} allowed labels by log-likelihood instead of free generation: "
           f"{a.rate('unparseable'):.0%} of replies named no label and {a.rate('wrong'):.0%} were wrong")
    if calibrate:
        top, count = a.predicted.most_common(1)[0]
        why += f"; predictions collapse onto {top!r} ({count}/{a.n}), so subtract each label's score on a content-free input"
    return [_edit("score_labels", replace(cfg, mode="score", calibrate=calibrate), f"{why} ({evidence(a)})", rel)]


def edit_calibrate(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "score" or cfg.calibrate:
        return []
    a = s.analysis
    top = a.predicted.most_common(1)[0] if a.predicted else ("?", 0)
    why = f"calibrate label scores against a content-free input: {top[0]!r} is predicted {top[1]}/{a.n} times ({evidence(a)})"
    return [_edit("calibrate", replace(cfg, calibrate=True), why, 0.1 + 2 * a.skew)]


def _replay_score(cfg: TemplateConfig, s: AgentState) -> tuple[float, int]:
    """Grade the champion's recorded train replies as `cfg`'s extractor would have parsed them."""
    namespace: dict[str, Any] = {}
    exec(compile(render(replace(cfg, mode="generate")), "replay", "exec"), namespace)
    extract = namespace["extract"]
    total, n = 0.0, 0
    for r in s.analysis.replies:
        ex = s.task.examples.get(r.example_id)
        if ex is None or ex.split != "train":
            continue
        answer = extract(r.text)
        total += s.task.grade(ex, answer if answer is not None else r.text.strip()).score
        n += 1
    return (total / n if n else 0.0), n


def _learn_normalisation(cfg: TemplateConfig, s: AgentState) -> dict[str, str]:
    """Map first words of replies that name no label to the label they mostly go with in train."""
    if cfg.multi_label or not cfg.labels:
        return {}
    by_word: dict[str, Counter] = {}
    for r in s.analysis.replies:
        text = r.text.strip()
        first = text.splitlines()[0].strip().strip(" .!:*\"'").lower() if text else ""
        if not first or len(first) > 40 or any(label.lower() in first for label in cfg.labels):
            continue
        gold = r.gold.get("label") if isinstance(r.gold, dict) else None
        if gold in cfg.labels:
            by_word.setdefault(first, Counter())[gold] += 1
    learned = {}
    for word, counts in by_word.items():
        label, c = counts.most_common(1)[0]
        if c >= 3 and c / sum(counts.values()) >= 0.8:
            learned[word] = label
    return learned


def edit_extraction(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "generate" or not s.analysis.replies:
        return []
    current, n = _replay_score(cfg, s)
    options = (["all_labels"] if cfg.multi_label else ["first_label", "last_label", "first_line"] if cfg.labels
               else ["first_label", *OPEN])  # open answers: the first line, or a reading of template_shapes.OPEN
    learned = _learn_normalisation(cfg, s)
    best = None
    for extract in options:
        for normalise in (dict(cfg.normalise), {**cfg.normalise, **learned}):
            trial = replace(cfg, extract=extract, normalise=normalise)
            if trial == cfg:
                continue
            score, _ = _replay_score(trial, s)
            if best is None or score > best[0]:
                best = (score, trial)
    if best is None or best[0] <= current + 1.0 / max(n, 1):
        return []
    score, trial = best
    why = (f"answer extraction '{trial.extract}'" + (f" with {len(trial.normalise)} learned normalisations" if trial.normalise else "")
           + f": replaying {n} recorded train replies scores {score:.3f} against {current:.3f} now")
    return [_edit("extract_answer", trial, why, 3 * (score - current) + 0.05)]


def _pick_demos(cfg: TemplateConfig, s: AgentState, k: int, per_label: int = 8, shortest: bool = True) -> list[Demo]:
    """Up to `k` train examples, taken in turn from each label's `per_label` shortest (or random) examples."""
    field_ = cfg.input_field
    by_label: dict[str, list[Example]] = {}
    for ex in s.train:
        label = ex.target.get("label") or ";".join(ex.target.get("labels", []))
        by_label.setdefault(str(label), []).append(ex)
    order = sorted(by_label, key=lambda lab: (-len(by_label[lab]), lab))
    rng = random.Random(s.seed)
    pools = {lab: (sorted(by_label[lab], key=lambda e: len(str(e.inputs.get(field_, "")))) if shortest
                   else rng.sample(by_label[lab], len(by_label[lab])))[:per_label] for lab in order}
    for pool in pools.values():
        rng.shuffle(pool)
    demos: list[Demo] = []
    while len(demos) < k and any(pools.values()):
        for lab in order:
            if pools[lab] and len(demos) < k:
                ex = pools[lab].pop()
                demos.append(Demo(str(ex.inputs.get(field_, "")), lab))
    return demos


def edit_few_shot(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Demonstrations written into the prompt (inline) first; as chat turns second (chat-turn demonstrations made SmolLM2
    answer one label to every review here)."""
    if cfg.demos:
        return []
    labels = cfg.labels
    k = min(4, 2 * len(labels)) if labels and len(labels) <= 4 else 4
    demos = _pick_demos(cfg, s, k)
    if not demos:
        return []
    a = s.analysis
    why = (f"add {len(demos)} short train examples as demonstrations, balanced across labels: "
           f"{a.rate('wrong'):.0%} of replies were well-formed but wrong")
    rel = 0.15 + 0.7 * a.rate("wrong") + 0.3 * a.rate("unparseable")
    return [
        _edit("few_shot", replace(cfg, demos=tuple(demos), demo_layout="inline"), f"{why}, written into the prompt ({evidence(a)})", rel),
        _edit("few_shot", replace(cfg, demos=tuple(demos)), f"{why}, as chat turns ({evidence(a)})", 0.8 * rel),
    ]


SIMILAR_POOL = 40
"""Train examples a per-input choice of demonstrations picks from (balanced across labels)."""


def edit_similar_demos(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Demonstrations chosen per input: the train examples nearest to it in the policy model's own embeddings, written
    into the prompt. Similar examples carry more of the answer than fixed ones; the pool's vectors are computed once
    per model by the policy service, so each example costs one short embedding call."""
    labels = cfg.labels
    if cfg.similar_demos or not labels or cfg.multi_label or cfg.output != "text":
        return []
    pool = _pick_demos(cfg, s, SIMILAR_POOL, per_label=max(2, SIMILAR_POOL // len(labels)), shortest=False)
    if len(pool) < 2 * len(labels[:10]):
        return []
    mean_chars = sum(len(d.input) for d in pool) / len(pool)
    k = 2 if mean_chars > LONG_INPUT / 3 else 4
    a = s.analysis
    why = (
        f"show each input the {k} of {len(pool)} train examples nearest to it in the policy's own embeddings, written into the "
        f"prompt: {a.rate('wrong'):.0%} of replies were well-formed but wrong ({evidence(a)})"
    )
    return [
        _edit(
            "similar_demos",
            replace(cfg, demos=pool, demo_layout="inline", similar_demos=k),
            why,
            0.15 + 0.75 * a.rate("wrong") + 0.3 * a.rate("unparseable"),
        )
    ]


def edit_demo_layout(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if not cfg.demos:
        return []
    other = "turns" if cfg.demo_layout == "inline" else "inline"
    return [
        _edit(
            "demo_layout",
            replace(cfg, demo_layout=other),
            f"show the demonstrations {'as chat turns' if other == 'turns' else 'inside the prompt'} instead ({evidence(s.analysis)})",
            0.05 + 0.3 * s.analysis.rate("wrong"),
        )
    ]


def edit_label_words(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Score capitalised words for lower-case labels: a chat model's reply usually starts with a capital."""
    if cfg.mode != "score" or cfg.label_words or not cfg.labels or len(cfg.labels) > 30:
        return []
    words = {label: label[:1].upper() + label[1:] for label in cfg.labels if label.isascii() and label[:1].islower()}
    if not words:
        return []
    a = s.analysis
    why = (
        f"score the words {', '.join(words.values())} for the labels: a reply starts with a capital, so the model may score the "
        f"label names below the words it would write ({evidence(a)})"
    )
    return [_edit("label_words", replace(cfg, label_words=words), why, 0.05 + 0.4 * a.skew + 0.2 * a.rate("wrong"))]


def edit_calibration_inputs(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "score" or not cfg.calibrate or tuple(cfg.calibrate_inputs) != ("N/A",):
        return []
    inputs = ("N/A", "", "[MASK]")
    return [
        _edit(
            "calibration_inputs",
            replace(cfg, calibrate_inputs=inputs),
            "average the calibration bias over three content-free "
            f"inputs ({', '.join(repr(x) for x in inputs)}) instead of one ({evidence(s.analysis)})",
            0.05 + 0.5 * s.analysis.skew,
        )
    ]


DOMAIN_INPUTS = 8
"""Content-free inputs of a domain-conditional calibration."""


def domain_inputs(cfg: TemplateConfig, train: list[Example], seed: int, k: int = DOMAIN_INPUTS) -> tuple[str, ...]:
    """`k` strings of words drawn at random from the train inputs, each as long as a typical input (in words, or in
    characters for text written without spaces): content-free, but in the task's own words, so the bias they measure
    is the one the domain's vocabulary gives each label, not only the one an empty input gives."""
    texts = [str(ex.inputs.get(cfg.input_field, "")) for ex in train[:400]]
    texts = [t for t in texts if t.strip()]
    if not texts:
        return ()
    spaced = sum(t.count(" ") for t in texts) * 20 >= sum(len(t) for t in texts)
    units = [t.split() if spaced else [ch for ch in t if not ch.isspace()] for t in texts]
    bag = [u for us in units for u in us]
    typical = sorted(len(us) for us in units)[len(units) // 2]
    if not bag or not typical:
        return ()
    rng = random.Random(seed)
    return tuple((" " if spaced else "").join(rng.choice(bag) for _ in range(typical)) for _ in range(k))


def edit_domain_calibration(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "score" or not cfg.labels or len(cfg.calibrate_inputs) >= DOMAIN_INPUTS:
        return []
    inputs = domain_inputs(cfg, s.train, s.seed)
    if not inputs:
        return []
    a = s.analysis
    why = (
        f"calibrate the label scores against {len(inputs)} inputs of random words from train inputs (domain-conditional) instead "
        f"of {'no content-free input' if not cfg.calibrate else ', '.join(repr(x) for x in cfg.calibrate_inputs)}: the words of the "
        f"domain may pull the model towards some labels ({evidence(a)})"
    )
    return [
        _edit("domain_calibration", replace(cfg, calibrate=True, calibrate_inputs=inputs), why, 0.06 + 0.6 * a.skew + 0.1 * a.rate("wrong"))
    ]


def edit_layout(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    where = "after" if not cfg.input_first else "before"
    return [
        _edit(
            "layout",
            replace(cfg, input_first=not cfg.input_first),
            f"put the instruction {where} the input ({evidence(s.analysis)})",
            0.04 + 0.2 * s.analysis.rate("wrong"),
        )
    ]


def edit_ensemble(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "score" or cfg.ensemble or not cfg.labels:
        return []
    base = s.task.public_info().get("instruction") or s.task.spec.description
    labels = ", ".join(cfg.labels[:30])
    extra = tuple(v.format(instruction=base, labels=labels) for v in INSTRUCTION_VARIANTS)
    extra = tuple(x for x in extra if x != cfg.instruction)
    return [
        _edit(
            "ensemble",
            replace(cfg, ensemble=extra),
            f"average the label scores of {len(extra) + 1} phrasings of the instruction "
            f"({len(extra) + 1}x the model calls; {evidence(s.analysis)})",
            0.04 + 0.3 * s.analysis.rate("wrong"),
        )
    ]


LONG_INPUT = 1500
"""Characters (about 400 tokens) above which a train input counts as long."""


def edit_clip_input(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Clip long inputs to their start and end: fewer tokens per call, and no prompt over the model's context."""
    if cfg.max_input_chars:
        return []
    lengths = [len(show(cfg, ex.inputs)) for ex in s.train[:200]]
    long_share = sum(n > LONG_INPUT for n in lengths) / max(1, len(lengths))
    overflow = sum(1 for e in s.analysis.errors if e.startswith("policy_request")) / max(1, s.analysis.n)
    if long_share < 0.25 and overflow == 0:
        return []
    why = (
        f"clip each input to {LONG_INPUT} characters, its start and end: {long_share:.0%} of train inputs are longer"
        f"{f' and {overflow:.0%} of calls were refused as too long' if overflow else ''} ({evidence(s.analysis)})"
    )
    return [_edit("clip_input", replace(cfg, max_input_chars=LONG_INPUT), why, 0.05 + 0.2 * long_share + 1.0 * overflow)]


def edit_instruction(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    base = s.task.public_info().get("instruction") or s.task.spec.description
    labels = ", ".join(cfg.labels[:30])
    a = s.analysis
    out = []
    for i, variant in enumerate(INSTRUCTION_VARIANTS):
        text = variant.format(instruction=base, labels=labels)
        if "{labels}" in variant and not cfg.labels:
            continue
        if text != cfg.instruction:
            out.append(
                _edit(
                    "instruction",
                    replace(cfg, instruction=text),
                    f"rewrite the instruction to state the answer format (variant {i + 1})",
                    0.08 + 0.5 * a.rate("unparseable") - 0.01 * i,
                )
            )
    if not cfg.system:
        out.append(
            _edit(
                "instruction",
                replace(cfg, system=SYSTEM_VARIANT),
                "add a system prompt asking for the label only",
                0.06 + 0.4 * a.rate("unparseable"),
            )
        )
    return out


def edit_self_consistency(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "generate" or cfg.votes > 1:
        return []
    a = s.analysis
    return [
        _edit(
            "self_consistency",
            replace(cfg, votes=5),
            f"majority vote over 5 sampled replies: {a.rate('wrong'):.0%} wrong suggests unstable answers",
            0.05 + 0.3 * a.rate("wrong"),
        )
    ]


def edit_retry(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    a = s.analysis
    if cfg.mode != "generate" or cfg.retry or not cfg.labels or a.rate("unparseable") == 0:
        return []
    return [
        _edit(
            "retry",
            replace(cfg, retry=True),
            f"ask again, listing the allowed labels, when a reply names none ({a.rate('unparseable'):.0%} of replies)",
            1.2 * a.rate("unparseable"),
        )
    ]


def edit_reply_length(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.mode != "generate" or not s.analysis.replies:
        return []
    cut = [r for r in s.analysis.replies if r.finish_reason == "length"]
    unparsed_cut = sum(1 for r in cut if isinstance(r.output, str) and not any(label in r.output for label in cfg.labels))
    if not cut or cfg.max_tokens >= 256:
        return []
    share = len(cut) / len(s.analysis.replies)
    why = (
        f"let replies run to {cfg.max_tokens * 2} tokens: {share:.0%} of replies hit the {cfg.max_tokens}-token limit, "
        f"{unparsed_cut} of them before naming a label"
    )
    return [_edit("reply_length", replace(cfg, max_tokens=cfg.max_tokens * 2), why, 0.02 + unparsed_cut / len(s.analysis.replies))]


EDITS: list[Callable[[TemplateConfig, AgentState], list[Option]]] = [
    edit_score_labels,
    edit_calibrate,
    edit_extraction,
    edit_few_shot,
    edit_instruction,
    edit_self_consistency,
    edit_retry,
    edit_reply_length,
    edit_demo_layout,
    edit_label_words,
    edit_calibration_inputs,
    edit_layout,
    edit_ensemble,
    edit_clip_input,
    edit_similar_demos,
    edit_domain_calibration,
]

"""The builtin Feedback-Agent: reads the evidence and proposes the next change, with no extra model.

It works on harnesses generated from `sia.harness.template` and proposes the
general-purpose edits of `sia.agents.builtin_edits`, never task-specific
answers. Each applicable edit gets a relevance from the observed failure types
and from design memory: kinds that gained before are preferred, kinds rejected
on the current adapter are discounted, and an edit whose exact source was
tried on the current adapter is never proposed again (after an accepted weight
update, earlier harness edits are re-checked).

The weight lever competes on the same scale: a LoRA update is relevant when
answers are well-formed but wrong (malformed answers point at the harness), and
its algorithm follows the reward's shape (see `weight_candidate`). Each
option's relevance is divided by its lever's cost in minutes (`sia.agents.costs`),
and a lever that keeps being rejected is discounted. The best relevance per
minute wins, and its reasons and the runners-up are the rationale. When nothing
relevant is left, it stops.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from sia.agents.builtin_edits import EDITS, Option, evidence
from sia.agents.contract import AgentState, Decision
from sia.agents.costs import affordable, harness_cost, harness_most, weights_cost
from sia.agents.program_edits import PROGRAM_EDITS
from sia.agents.proposal import HarnessEdit, Stop, WeightUpdate
from sia.agents.shape_edits import SHAPE_EDITS, gold_sft
from sia.harness.template import TemplateConfig, read_config, render
from sia.store.priors import prior
from sia.store.store import source_sha
from sia.weights.config import LABEL_PRESET, SAMPLING_PRESET, SCORING_PRESET, plan


@dataclass(frozen=True)
class Ranked:
    """An option weighed by the builtin agent: relevance per minute, relevance, cost in minutes, its rendered source."""
    per_minute: float
    relevance: float
    cost: float
    tiebreak: float
    option: Option
    source: str | None
    floor: float | None = None
    """Minutes of the smallest version of this option still worth proposing (a weight update shrinks to fit the budget
    left, down to `smallest`); None: its cost."""
    most: float | None = None
    """For a harness edit: the minutes it may take at most (`harness_most`); None: its cost."""
    floor_after: float | None = None
    """For a harness edit: the floor of the best weight update on the harness the edit makes (a calibrating harness makes
    each ce step score its content-free inputs too); None: unknown."""
    size_after: float | None = None
    """For a harness edit: the share of the best weight update's training steps that the budget still holds once the edit
    has been tried (at the most it may take); None: unknown."""


FIX_SHARE = 0.5
"""The share of the champion's validation errors a change with relevance 1 is expected to fix (the scale of an estimate)."""


def expected_gain(relevance: float, s: AgentState) -> float:
    """A change's expected validation gain: its relevance (which already holds design memory's past gains of its kind)
    times the errors left to fix, and never more than those errors (relevance can exceed 1 when evidence piles up)."""
    headroom = max(0.0, 1.0 - (s.champion_val if s.champion_val is not None else 0.5))
    return round(min(headroom, relevance * headroom * FIX_SHARE), 4)


def plan_next(ranked: list[Ranked], seconds_left: float | None) -> tuple[Ranked, str]:
    """The option to try now, with why: the best relevance per minute, unless trying it would leave no room for the best
    option of the other lever (for a weight update: for its smallest version, see `_room_after`) and that one is the more
    relevant; or unless trying it would cut that weight update's steps (`Ranked.size_after`) and the update is the more
    relevant. Then the budget goes where the larger gain is expected: on sentiment the 16-step ce update gained +0.35 to
    +0.38 on validation, cut to 8 steps after label scoring +0.17 to +0.19.

    This is the whole switch rule: harness edits first while they are cheap and relevant; the weights once harness edits
    stall (their relevance decays with rejections), or once the budget holds the update (at its smallest, or at its
    size) only if it goes first; harness edits again after a new adapter (rejections are counted per adapter).
    """
    first = ranked[0]
    other = next((r for r in ranked if (r.source is None) != (first.source is None)), None)
    if other is None or seconds_left is None:
        return first, "best per minute"
    if _room_after(first, other, seconds_left):
        cuts = other.source is None and first.size_after is not None and first.size_after < 1
        if cuts and other.relevance > first.relevance:
            return other, (f"{first.option.kind} first would cut {other.option.kind} to {first.size_after:.0%} of its steps: "
                           f"the more relevant goes first")
        return first, f"best per minute, leaving room for {other.option.kind} (~{other.cost:.1f} min)"
    if other.relevance > first.relevance:
        return other, (f"the budget left ({seconds_left / 60:.1f} min) holds {first.option.kind} or {other.option.kind}, not both: "
                       f"the more relevant")
    return first, f"the budget left holds {first.option.kind} or {other.option.kind}, not both: the more relevant"


def _room_after(first: Ranked, other: Ranked, seconds_left: float) -> bool:
    """Whether `other` can still be proposed once `first` has been tried: a harness edit needs its cost; a weight update
    needs its smallest version within `WEIGHT_MOST` of what is left, as `fit_to_budget` asks (a weight update's cost is
    already shrunk to the budget left, so its own cost says nothing about whether it survives another edit: on sentiment,
    harness edits at a minute each went on until the ce update no longer fitted at all). A harness edit counts at the most
    it may take, and the update at its floor on the harness the edit makes (`Ranked.most`, `Ranked.floor_after`)."""
    if other.source is None:
        left = seconds_left - (first.cost if first.most is None else first.most) * 60
        need = max(other.cost if other.floor is None else other.floor, first.floor_after or 0.0)
        return need * 60 <= WEIGHT_MOST * left
    return other.cost * 60 <= seconds_left - first.cost * 60


def _with_update_after(ranked: list[Ranked], s: AgentState) -> list[Ranked]:
    """Each harness edit with what it leaves of the best weight update (the one `plan_next` keeps room for): its floor on
    the harness the edit makes, and for a ce update (the one `fit_to_budget` sizes to the budget left) the share of its
    steps that the budget still holds after the edit."""
    w = next((r for r in ranked if r.source is None), None)
    if w is None:
        return ranked
    distill, alg = w.option.kind == "distill", w.option.algorithm
    small = plan(alg, smallest(dict(w.option.settings), alg))
    steps = _steps(alg, w.option.settings)
    out = []
    for r in ranked:
        if r.source is not None:
            after = replace(s, champion_source=r.source)
            r = replace(r, floor_after=weights_cost(small, after, distill=distill))
            if w.option.kind == "ce" and s.seconds_left is not None:
                left = replace(after, seconds_left=max(0.0, s.seconds_left - (r.most or r.cost) * 60) * PLAN_MARGIN)
                fitted = fit_to_budget(dict(w.option.settings), left, alg)
                r = replace(r, size_after=min(1.0, _steps(alg, fitted) / steps) if fitted else 0.0)
        out.append(r)
    return out


PLAN_MARGIN = 0.8
"""The share of the budget an edit leaves that `Ranked.size_after` counts on: the update is sized again at the next
generation, with the speed measured again. In a 15-minute sentiment run the plan at generation 1 saw the 16-step ce
(4.5 minutes) still fit after label scoring, and at generation 2 it was cut to 8 steps: with 9.4 minutes left, 16 steps
fit half of them while the probe reads the machine 1.9x slower than the reference and not at 2.2x."""


def _steps(algorithm: str, settings: dict) -> int:
    """Training steps of a weight update's plan, over all its rounds."""
    wp = plan(algorithm, settings)
    return wp.rounds * wp.most_steps()


UNUSED_MOST = 0.1
"""The share of the run's budget that may go unused: with more left, an option whose evidence is weak is tried rather
than stopping (its gate level is small under run-wide error control, so it costs the guarantee nothing)."""


def _much_left(s: AgentState) -> bool:
    return s.seconds_left is not None and bool(s.budget_s) and s.seconds_left > UNUSED_MOST * s.budget_s


class BuiltinFeedbackAgent:
    name = "builtin"

    def __init__(self, min_relevance: float = 0.02) -> None:
        self.min_relevance = min_relevance

    def decide(self, state: AgentState) -> Decision:
        cfg = read_config(state.champion_source)
        ranked: list[Ranked] = []
        rng = random.Random(f"{state.seed}:{state.generation}")
        notes = []
        if "harness" in state.levers:
            if cfg is None:
                notes.append("the champion harness was not generated by sia's template, so no builtin harness edit applies")
            else:
                lever_factor = 0.7 ** state.memory.lever_stalled("harness")
                for make in (EDITS + SHAPE_EDITS if cfg.output == "text" else PROGRAM_EDITS):
                    for c in make(cfg, state):
                        source = render(c.harness)
                        if source_sha(source) in state.tried or source == state.champion_source:
                            continue
                        rel = self._with_memory(c.relevance, c.kind, state) * lever_factor
                        cost = harness_cost(state, cfg, c.harness)
                        if affordable(cost, state):
                            ranked.append(Ranked(rel / cost, rel, cost, rng.random(), c, source,
                                                 most=harness_most(state, cfg, c.harness)))
        if "weights" in state.levers:
            share = WEIGHT_SHARE if "harness" in state.levers else WEIGHT_MOST
            for w in weight_candidates(cfg, state) + distillation(cfg, state) + gold_sft(cfg, state, share):
                cost = weights_cost(plan(w.algorithm, w.settings), state, distill=w.kind == "distill")
                if affordable(cost, state):
                    rel = self._with_memory(w.relevance, w.kind, state) * 0.7 ** state.memory.lever_stalled("weights")
                    floor = weights_cost(plan(w.algorithm, smallest(w.settings, w.algorithm)), state, distill=w.kind == "distill")
                    ranked.append(Ranked(rel / cost, rel, cost, rng.random(), w, None, min(cost, floor)))
                else:
                    what = w.algorithm if w.kind == w.algorithm else f"{w.algorithm} ({w.kind})"
                    notes.append(f"a weight update by {what} (~{cost:.1f} min) does not fit the budget left")
            notes += _ce_left_out(cfg, state)
        supported = [r for r in ranked if r.relevance >= self.min_relevance]
        if not supported and ranked and _much_left(state):  # unused budget is lost: try what fits, the best per minute first
            notes.append(f"no untried change is supported by the evidence, but {state.seconds_left / 60:.1f} of "
                         f"{state.budget_s / 60:.0f} minutes are left: trying what fits")
        else:
            ranked = supported
        ranked.sort(key=lambda r: (r.per_minute, r.tiebreak), reverse=True)
        ranked = _with_update_after(ranked, state)
        ranking = tuple((r.option.kind, round(r.relevance, 3), round(r.per_minute, 3), r.option.rationale) for r in ranked)
        if not ranked:
            return Decision(Stop("; ".join(notes + ["no untried change is supported by the evidence"])), ranking)
        best, why_first = plan_next(ranked, state.seconds_left)
        others = ", ".join(f"{r.option.kind} {r.per_minute:.2f}/min" for r in ranked if r is not best)
        gain = 0.0 if best.option.kind == "distill" else expected_gain(best.relevance, state)
        used = prior(list(state.priors), best.option.kind, state.features) if state.priors and state.features else None
        notes += [used.describe()] if used is not None and state.memory.mean_gain(best.option.kind) is None else []
        rationale = (f"{best.option.rationale} [relevance {best.relevance:.2f}, {best.per_minute:.2f} per minute of compute, expected "
                     f"gain {gain:+.3f}; {why_first}; next: {others[:200] or 'none'}{''.join('; ' + n for n in notes)}]")
        if best.source is None:
            student = render(best.option.harness) if best.option.harness is not None else None
            return Decision(WeightUpdate(algorithm=best.option.algorithm, config=dict(best.option.settings),
                                         data="distill" if student else "gold" if best.option.kind == "gold_sft" else "train",
                                         rationale=rationale, kind=best.option.kind,
                                         harness=student, expected_gain=gain), ranking)
        return Decision(HarnessEdit(source=best.source, rationale=rationale, kind=best.option.kind, expected_gain=gain), ranking)

    @staticmethod
    def _with_memory(rel: float, kind: str, state: AgentState) -> float:
        """Kinds that gained before in this run are preferred; kinds rejected on the current adapter are discounted. A kind
        not yet tried in this run takes the prior of earlier runs on similar tasks (`sia.store.priors`), shrunk by how few
        records it rests on."""
        past = state.memory.mean_gain(kind)
        if past is not None:
            rel += 2 * past
        elif state.priors and state.features is not None:
            p = prior(list(state.priors), kind, state.features)
            if p is not None:
                rel = max(0.0, rel + 2 * p.delta * p.n / (p.n + 2))
        return rel * 0.35 ** state.memory.rejections(kind, state.champion_adapter)


CE_MIN_STEPS = 8
"""The fewest ce steps worth a gate. Measured here: on sentiment every first ce of 16 steps passed the gate (6 of 6 in
the 15-minute ablation, +0.17 to +0.38); updates shrunk to 2 or 4 steps never did (-0.15 on sentiment in `make run`;
on LawBench's topics no validation answer moved, or the gate ran out of budget). Below this a weight update costs its
minutes and a gate and is not proposed."""


WEIGHT_SHARE = 0.5
"""The share of the budget left a weight update is sized to while harness edits may follow."""
WEIGHT_MOST = 0.9
"""The most of the budget left a weight update may take: what it is sized to when it is the only lever, and what its
smallest version must fit to be proposed at all (10% kept for estimates that run short)."""
_SHRINK = {"ce": [("epochs", 1), ("examples", 32)], "other": [("rounds", 1), ("examples", 4), ("samples", 4)]}
"""What `fit_to_budget` halves, in order, down to what floor: a ce preset's passes, then examples (long prompts times many
labels make a full ce update long); a sampling preset's rounds, then examples, then samples."""


def _shrinks(algorithm: str) -> list[tuple[str, int]]:
    return _SHRINK["ce" if algorithm == "ce" else "other"]


def smallest(settings: dict, algorithm: str = "grpo") -> dict:
    """The smallest version of a preset that `fit_to_budget` may shrink it to and still propose."""
    small = dict(settings)
    too_few = lambda d: algorithm == "ce" and plan(algorithm, d).most_steps() < CE_MIN_STEPS  # noqa: E731
    for key, floor in _shrinks(algorithm):
        while small.get(key, floor) > floor:
            nxt = {**small, key: max(floor, small[key] // 2)}
            if too_few(nxt):
                if isinstance(small[key], int):  # the fewest examples that still give CE_MIN_STEPS steps
                    lo, hi = nxt[key], small[key]
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        lo, hi = (lo, mid) if not too_few({**small, key: mid}) else (mid, hi)
                    small[key] = hi
                return small
            small = nxt
    return small


def fit_to_budget(settings: dict, s: AgentState, algorithm: str = "grpo") -> dict | None:
    """Shrink a preset until its estimated cost fits its share of the budget left: a sampling preset's rounds, then
    examples, then samples, by halves; a ce preset's passes by halves, then to the most examples that fit (long prompts
    times many labels make a full ce update long). The share is half while harness edits may follow; with the weights
    the only lever nothing else waits for the budget, and an update shrunk to half of it may be too small to pass the
    gate (ce on LawBench's 20 topics got 4 steps of the 16 it asks for, and moved no validation answer). A ce update is
    never shrunk below `CE_MIN_STEPS` steps: when that does not fit the share, its `smallest` version is proposed if it
    fits `WEIGHT_MOST` of the budget, else None (half the budget is a size, not a condition: on a CPU where 8 sentiment
    steps cost 2.2 minutes, a 10-minute run never had half its budget left for them, and never tried the weights)."""
    if s.seconds_left is None:
        return settings
    share = WEIGHT_SHARE if "harness" in s.levers else WEIGHT_MOST
    least = smallest(settings, algorithm)
    cost = lambda: weights_cost(plan(algorithm, settings), s) * 60  # noqa: E731
    while cost() > share * s.seconds_left and settings != least:
        key = next(k for k, _ in _shrinks(algorithm) if settings[k] > least[k])
        if algorithm == "ce" and key == "examples":  # the most examples that fit: the cost grows with them
            lo, hi = least[key], settings[key]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                settings[key] = mid
                lo, hi = (mid, hi) if cost() <= share * s.seconds_left else (lo, mid)
            settings[key] = lo
            break
        settings[key] = max(least[key], settings[key] // 2)
    if algorithm == "ce" and cost() > WEIGHT_MOST * s.seconds_left:
        return None
    return settings


def weight_candidates(cfg: TemplateConfig | None, s: AgentState) -> list[Option]:
    """LoRA updates when the evidence points at the weights: well-formed but wrong answers, not malformed ones.

    On a task with a closed label set (one label per answer) and a harness
    sia generated, the update is ce: cross-entropy of the gold label over the
    label set, on the prompts the harness builds (one rollout per example, no
    sampling). Once design memory holds a ce update rejected on the champion's
    adapter, the policy-gradient update that follows the reward's shape
    (`weight_candidate`) takes its place.
    """
    alt = weight_candidate(cfg, s)
    if not _ce_applies(cfg, s):
        return [alt] if alt is not None else []
    rel, why = _weights_evidence(s)
    settings = fit_to_budget(ce_settings(s), s, "ce")
    if settings is None:  # too little budget left for a ce update that could pass the gate
        return []
    seen = settings["examples"]
    per_label = seen / max(1, len(s.task.labels))
    rel *= min(CE_COVERAGE_MOST, max(CE_COVERAGE_LEAST, (per_label / CE_PER_LABEL) ** 0.5))
    why += f"; a ce update's {seen} examples give {per_label:.1f} per label"
    if cfg.mode != "score" and s.analysis.rate("unparseable"):
        # ce on a generating harness also trains the gold label's own tokens, so replies that name no label are evidence
        # for it too (less than for label scoring, which makes them impossible)
        rel += 0.6 * s.analysis.rate("unparseable")
        why += f"; ce also teaches the label's exact words, and {s.analysis.rate('unparseable'):.0%} of replies named no label"
    how = "scores" if cfg.mode == "score" else "parses from its replies"
    wp = plan("ce", settings)
    return [Option("ce", f"train the weights ({_where(s)}): {why}; the task has a closed label set that the harness {how}: "
                         "cross-entropy of the gold label against the others on the harness's own prompts, no sampling; "
                         f"{wp.train.heldout:.0%} held out, training stops when its loss stops improving (at most "
                         f"{wp.train.epochs:g} passes, {wp.most_steps()} steps, as the budget holds)",
                   rel, algorithm="ce", settings=settings)]


def ce_settings(s: AgentState) -> dict:
    """A ce update on the whole train split (`LABEL_PRESET` otherwise): `fit_to_budget` shrinks it to the budget, and its
    held-out loss decides how much of it is trained."""
    return {**LABEL_PRESET, "examples": max(1, len(s.train))}


CE_PER_LABEL = 16
"""Train examples per label at which a ce update's relevance is the evidence's alone; with more it counts more, with fewer
less, by the square root of the ratio within [`CE_COVERAGE_LEAST`, `CE_COVERAGE_MOST`]. A label seen in few examples is
learnt little. Fitted on the two tasks measured (15-minute runs, 3 seeds each): on sentiment (128 examples, 64 per
label) every ce realised +0.15 to +0.38 where the evidence alone estimated +0.09 to +0.13; on LawBench's 20 topics (6.4
per label) +0.00 where it estimated +0.28 to +0.37. It scales the evidence of wrong answers; replies that name no label
(which ce fixes by teaching the labels' words) count as they are."""
CE_COVERAGE_LEAST, CE_COVERAGE_MOST = 0.5, 2.0


def _ce_applies(cfg: TemplateConfig | None, s: AgentState) -> bool:
    """A ce update is the weight option: a closed label set, a sia-generated harness, an analysis, and no ce turned down
    on the champion's adapter."""
    labelled = cfg is not None and cfg.output == "text" and bool(s.task.labels) and not cfg.multi_label and cfg.mode != "neighbours"
    return labelled and s.analysis.n > 0 and not s.memory.rejections("ce", s.champion_adapter)


def _ce_left_out(cfg: TemplateConfig | None, s: AgentState) -> list[str]:
    """Why no ce update was weighed although the task has a closed label set, when the budget is the reason: said in
    the rationale, so that a run which never trains shows why (training is priced at this machine's speed)."""
    if s.seconds_left is None or not _ce_applies(cfg, s):
        return []
    least = weights_cost(plan("ce", smallest(ce_settings(s), "ce")), s)
    if least * 60 <= WEIGHT_MOST * s.seconds_left:
        return []
    return [f"no ce update: the smallest worth a gate (~{least:.1f} min, training priced at {s.train_slowdown:.1f}x) does not "
            f"fit {WEIGHT_MOST:.0%} of the {s.seconds_left / 60:.1f} min left"]


DISTILL_CALLS = 1.5
"""Model calls per example above which the champion harness is worth distilling into the weights."""


def distillation(cfg: TemplateConfig | None, s: AgentState) -> list[Option]:
    """Distil a costly champion harness into the weights: the adapter learns to give the champion's answers from the same
    harness stripped of its extra calls (votes, calibration passes, demonstrations, retries); the gate keeps the pair only
    if it is no worse within its margin and cheaper. Needs both levers (the harness changes too) and a closed label set."""
    if cfg is None or "harness" not in s.levers or cfg.output != "text" or not s.task.labels or cfg.multi_label:
        return []
    calls = s.analysis.calls_per_example
    student = replace(cfg, votes=1, calibrate=False, demos=(), similar_demos=0, ensemble=(), retry=False)
    if (calls < DISTILL_CALLS and not cfg.demos) or student == cfg:
        return []
    saving = 1 - 1 / max(calls, 1.0)
    why = (f"distil the champion harness into the weights: it makes {calls:.1f} model calls per example"
           f"{' and shows ' + str(len(cfg.demos)) + ' demonstrations' if cfg.demos else ''}; the adapter learns its answers "
           f"from the same harness without votes, calibration passes, demonstrations or retries, judged for no loss and fewer calls")
    return [Option("distill", why, 0.1 + 0.3 * saving, harness=student, algorithm="ce", settings=dict(LABEL_PRESET))]


def _weights_evidence(s: AgentState) -> tuple[float, str]:
    """How much the train analysis points at the weights (well-formed but wrong answers), and why."""
    a = s.analysis
    malformed = a.rate("unparseable") + a.rate("error") + a.rate("timeout")
    wrong = a.rate("wrong")
    return (max(0.0, 0.15 + 0.85 * wrong - malformed),
            f"{wrong:.0%} of train answers were well-formed but wrong and {malformed:.0%} malformed ({evidence(a)})")


def _where(s: AgentState) -> str:
    return f"continuing from adapter {s.champion_adapter}" if s.champion_adapter else "a new LoRA adapter on the base model"


def weight_candidate(cfg: TemplateConfig | None, s: AgentState) -> Option | None:
    """A LoRA update by policy gradient when the evidence points at the weights: well-formed but wrong answers.

    The algorithm follows the reward's shape. A harness that scores labels by
    likelihood gives each example an exact group (its label set), so GRPO
    applies with one rollout per example. A sampling harness gives groups of G
    samples: GRPO when enough groups are expected to have reward spread, else
    SFT on the successful samples, else nothing to learn from.
    """
    a = s.analysis
    if a.n == 0 or cfg is not None and cfg.mode == "neighbours":  # a neighbour vote makes no call a weight update learns from
        return None
    rel, why = _weights_evidence(s)
    if cfg is not None and cfg.mode == "score":
        algorithm, settings = "grpo", dict(SCORING_PRESET)
        shape = ("the harness scores each label by likelihood, so an example's group is its label set and has reward "
                 "spread whenever one label is right: GRPO over the labels, one rollout per example")
    else:
        G, p = SAMPLING_PRESET["samples"], a.score
        if s.task.spec.score == "binary":
            spread = 1 - p ** G - (1 - p) ** G
        else:  # continuous rewards: spread within groups is likely when the train scores already differ
            spread = 1.0 if len(set(round(x, 6) for x in a.scores)) > 1 else 0.0
            p = max(a.scores, default=0.0)
        settings = fit_to_budget(dict(SAMPLING_PRESET), s)
        if spread >= 0.25:
            algorithm = "grpo"
            shape = f"train score {p:.2f}, so about {spread:.0%} of groups of {G} samples should have reward spread: GRPO"
        elif p > 0:
            algorithm = "sft"
            shape = f"train score {p:.2f} leaves few groups with reward spread ({spread:.0%}): SFT on the successful samples"
        else:
            return None
    return Option(algorithm, f"train the weights ({_where(s)}): {why}; {shape}", rel, algorithm=algorithm, settings=settings)

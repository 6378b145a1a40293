"""The builtin agent's edits for tasks whose output is a program or settings: parse, check, repair, sample, search, fall back.

They switch on steps of the template (`sia.harness.template_programs`) that
use the task's public helper: its `check` (a local check against a public
reference, or a self-supervised split of the input), `neighbours` (settings
around a proposal) and `baseline` (a known-good output). Which edits apply
follows from the functions the helper defines, read from its source; their
relevance from the graded failure types: unparseable replies point at
parsing, programs that crash or are wrong at check-and-repair and at
sampling several, valid settings at a local search, and outputs that almost
never pass at falling back to the baseline.
"""

from __future__ import annotations

import ast
from dataclasses import replace

from sia.agents.builtin_edits import Option, evidence
from sia.agents.contract import AgentState
from sia.harness.template import TemplateConfig


def helper_functions(s: AgentState) -> set[str]:
    """Functions the task's public helper defines (none when it has no helper)."""
    info = s.task.public_info()
    files, name = info.get("files") or {}, info.get("helper")
    source = files.get(f"{name}.py") if name else None
    if not source:
        return set()
    try:
        return {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return set()


def _edit(kind: str, cfg: TemplateConfig, why: str, relevance: float, s: AgentState) -> list[Option]:
    return [Option(kind, f"{why} ({evidence(s.analysis)})", relevance, harness=cfg)]


def edit_robust_parse(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.robust_parse:
        return []
    a = s.analysis
    return _edit("robust_parse", replace(cfg, robust_parse=True),
                 f"read the {cfg.output} out of any fenced block or object in the reply, leniently: "
                 f"{a.rate('unparseable'):.0%} of outputs could not be read", 0.05 + 1.5 * a.rate("unparseable"), s)


def edit_check_repair(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if "check" not in helper_functions(s) or (cfg.check and cfg.attempts >= 3):
        return []
    a = s.analysis
    failing = a.rate("error") + a.rate("wrong")
    return _edit("check_repair", replace(cfg, check=True, attempts=3),
                 f"run each {cfg.output} through the task's local check and show the model the error for up to 2 repairs: "
                 f"{failing:.0%} of outputs failed or were wrong", 0.1 + failing + 0.3 * a.rate("unparseable"), s)


def edit_best_of_n(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if "check" not in helper_functions(s) or cfg.samples > 1:
        return []
    a = s.analysis
    return _edit("best_of_n", replace(cfg, check=True, samples=4),
                 f"sample 4 replies and keep the one the task's local check ranks best: {a.rate('wrong'):.0%} wrong, "
                 f"{a.rate('error'):.0%} failing", 0.1 + 0.6 * a.rate("wrong") + 0.4 * a.rate("error"), s)


def edit_search(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    if cfg.output != "json" or cfg.search or not {"check", "neighbours"} <= helper_functions(s):
        return []
    a = s.analysis
    valid = a.rate("correct") + a.rate("wrong")
    return _edit("search", replace(cfg, check=True, search=12),
                 f"search 12 settings around the best reply with the task's local check: {valid:.0%} of outputs were valid settings "
                 "that a neighbour may improve", 0.1 + 0.6 * valid, s)


def edit_fallback(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    fns = helper_functions(s)
    if cfg.fallback or "baseline" not in fns:
        return []
    a = s.analysis
    zero = sum(1 for x in a.scores if x <= 0) / a.n if a.n else 0.0
    return _edit("fallback", replace(cfg, fallback=True, check=cfg.check or "check" in fns),
                 f"fall back to the task's public baseline when nothing the model wrote passes the local check: {zero:.0%} of "
                 "outputs scored nothing", 0.05 + 1.2 * zero, s)


PROGRAM_EDITS = [edit_robust_parse, edit_check_repair, edit_best_of_n, edit_search, edit_fallback]

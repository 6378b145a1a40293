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
from dataclasses import replace
from typing import Any

from sia.harness.template_config import LATER, OPTIONAL, Demo, TemplateConfig

__all__ = ["Demo", "LATER", "OPTIONAL", "TemplateConfig", "make_config", "read_config", "render", "reply_budget", "show"]


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


def render(cfg: TemplateConfig) -> str:
    """The harness source of `cfg`: a label or free-text harness (`template_text`), or a program/json one
    (`template_programs`)."""
    if cfg.output in ("program", "json"):
        from sia.harness.template_programs import render_program

        return render_program(cfg)
    from sia.harness.template_text import render_text

    return render_text(cfg)

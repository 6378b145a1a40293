"""`sia trace`: recorded trajectories printed for a person (the JSON form is `sia.api.trace`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sia.store.store import Store


def _short(x: Any, n: int | None = 160) -> str:
    s = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    s = s.replace("\n", "⏎")
    return s if n is None or len(s) <= n else s[: n - 1] + "…"


def _prompt(d: dict[str, Any]) -> str:
    """A model call's whole prompt: the chat messages as the model reads them, or the scored prompts."""
    if d.get("messages"):
        return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in d["messages"])
    prompts = d.get("prompts") or []
    return "\n".join(str(p.get("prompt", "")) for p in prompts[:1]) + (f"\n[+{len(prompts) - 1} more scored]" if len(prompts) > 1 else "")


def render_trace(run_dir: Path, limit: int, evaluation: str | None, console: Console, width: int | None = None) -> None:
    """Print rollouts with their events; prompts and replies whole, or cut to `width` characters."""
    with Store(run_dir, write=False) as store:
        rows = store.rollouts(evaluation, limit)
        console.print(f"[bold]{run_dir}[/]: {store.count_rollouts()} rollouts recorded; showing {len(rows)}")
        for r in rows:
            colour = "green" if r.passed else ("red" if r.status == "error" else "yellow")
            console.print(f"\n[bold {colour}]rollout {r.id}[/] example={r.example_id} split={r.split} sample={r.sample} "
                          f"score={r.score:.2f} ({r.duration_s or 0:.1f}s)", highlight=False)
            for ev in store.events(r.id):
                d = ev.data
                if ev.kind == "llm_call":
                    console.print(f"  [cyan]llm_call[/] {d.get('kind')} model={d.get('model')} "
                                  f"prompt_tokens={len(d.get('prompt_token_ids') or [])}", highlight=False)
                    console.print(f"      in: {escape(_short(_prompt(d), width))}", highlight=False)
                    for c in d.get("completions", []):
                        ids = c.get("token_ids") or []
                        lps = c.get("logprobs") or []
                        console.print(f"      out: {escape(_short(c.get('text'), width))}", highlight=False)
                        console.print(
                            f"      token_ids={ids[:8]}{'…' if len(ids) > 8 else ''} "
                            f"logprobs={[round(x, 3) for x in lps[:8] if x is not None]}{'…' if len(lps) > 8 else ''}",
                            highlight=False,
                        )
                    for p in d.get("prompts", []) if d.get("kind") == "score" else []:
                        lps = [x for x in p.get("prompt_logprobs") or [] if x is not None]
                        console.print(
                            f"      scored {len(p.get('prompt_token_ids') or [])} tokens, sum logprob={sum(lps):.2f}", highlight=False
                        )
                elif ev.kind == "grade":
                    console.print(
                        f"  [magenta]grade[/] score={d.get('score')} passed={d.get('passed')} {_short(d.get('feedback', ''))}",
                        highlight=False,
                    )
                elif ev.kind == "error":
                    console.print(f"  [red]error[/] {d.get('error_type')}: {_short(d.get('message') or '', 200)}", highlight=False)
                else:
                    console.print(f"  [blue]{ev.kind}[/] {_short(d)}", highlight=False)

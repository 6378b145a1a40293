"""`RUN_DIR/report.html`: one self-contained page (inline SVG and CSS, no scripts, no fetches)."""

from __future__ import annotations

import difflib
import html
import json
from pathlib import Path
from typing import Any

from sia.store.run import Run
from sia.store.summary import run_summary

LEVER_COLOURS = {"harness": "#2563eb", "weights": "#ea580c", "baseline": "#6b7280"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#111}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f5f5f5}.acc{color:#15803d;font-weight:600}.rej{color:#b91c1c}
pre{background:#f8f8f8;padding:8px;overflow:auto;font-size:12px}.add{color:#15803d}.del{color:#b91c1c}
.big{font-size:20px;font-weight:600}.muted{color:#666}
"""


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return html.escape(str(x))


def _scored(d: dict[str, Any] | None) -> str:
    """A score with its 95% CI and n."""
    if not d:
        return "–"
    return f"{d['score']:.3f} <span class=muted>({d['ci'][0]:.3f}–{d['ci'][1]:.3f}, n={d['n']})</span>"


def _notes(s: dict[str, Any]) -> str:
    """What the scores rest on: the limits used, and the share of timeouts and errors."""
    notes = []
    limits, o = s.get("limits") or {}, s.get("outcomes") or {}
    if limits.get("note"):
        notes.append(f"Limits: {html.escape(limits['note'])}.")
    if o.get("rollouts"):
        notes.append(f"{o['rollouts']} rollouts: {o['timeouts']:.1%} timed out, {o['errors']:.1%} ended in an error.")
    if o.get("first_grader_error"):
        notes.append(f"First grader error: {html.escape(o['first_grader_error'][:300])}")
    return "".join(f"<p class=muted>{n}</p>" for n in notes)


def _plot(summary: dict[str, Any]) -> str:
    """Champion score per generation (step line) and each challenger (dot, coloured by lever)."""
    base = summary["baseline"].get("val")
    if base is None:
        return "<p class=muted>No validation score yet.</p>"
    champ = [base]
    points = []
    for g in summary["generations"]:
        cur = champ[-1]
        # an accepted challenger is drawn at its full validation score; a rejected one at the
        # champion's score plus the paired delta measured on the examples the gate saw
        value = g.get("val") if g["accepted"] and g.get("val") is not None else (cur + g["delta"] if g["delta"] is not None else None)
        if value is not None:
            points.append((g["generation"], value, g["lever"], g["accepted"], g["kind"]))
        champ.append(value if g["accepted"] and value is not None else cur)
    n = max(1, len(champ) - 1)
    ys = champ + [p[1] for p in points]
    lo, hi = max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05) if max(ys) <= 1 else max(ys) + 0.05
    if hi - lo < 1e-6:
        hi = lo + 0.1
    W, H, L, B = 760, 300, 50, 40

    def X(i: float) -> float:
        return L + (W - L - 20) * i / n

    def Y(v: float) -> float:
        return H - B - (H - B - 20) * (v - lo) / (hi - lo)

    parts = [f'<svg id="score-plot" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="champion and challenger validation score per generation">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{L}" x2="{W - 20}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.2f}</text>')
    for i in range(n + 1):
        parts.append(f'<text x="{X(i):.1f}" y="{H - B + 16}" font-size="11" text-anchor="middle">{i}</text>')
    parts.append(
        f'<text x="{(W + L) / 2:.0f}" y="{H - 6}" font-size="12" text-anchor="middle">generation</text>'
        f'<text x="14" y="{(H - B) / 2:.0f}" font-size="12" transform="rotate(-90 14 {(H - B) / 2:.0f})" '
        'text-anchor="middle">validation score</text>'
    )
    path = " ".join(f"{'M' if i == 0 else 'L'}{X(i):.1f},{Y(v):.1f}" for i, v in enumerate(champ))
    parts.append(f'<path d="{path}" fill="none" stroke="#111" stroke-width="2"/>')
    for gen, v, lever, acc, kind in points:
        c = LEVER_COLOURS.get(lever, "#555")
        parts.append(
            f'<circle cx="{X(gen):.1f}" cy="{Y(v):.1f}" r="6" fill="{c if acc else "white"}" stroke="{c}" stroke-width="2">'
            f"<title>gen {gen} {html.escape(kind)}: {v:.3f} {'accepted' if acc else 'rejected'}</title></circle>"
        )
    lx = L + 10
    parts.append(
        f'<line x1="{lx}" x2="{lx + 20}" y1="14" y2="14" stroke="#111" stroke-width="2"/>'
        f'<text x="{lx + 24}" y="18" font-size="11">champion</text>'
    )
    for i, (lever, c) in enumerate([(k, v) for k, v in LEVER_COLOURS.items() if k != "baseline"]):
        x = lx + 100 + i * 250
        parts.append(
            f'<circle cx="{x}" cy="14" r="5" fill="{c}"/><text x="{x + 9}" y="18" font-size="11">{lever} accepted</text>'
            f'<circle cx="{x + 125}" cy="14" r="5" fill="white" stroke="{c}" stroke-width="2"/>'
            f'<text x="{x + 134}" y="18" font-size="11">{lever} rejected</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _diff(old: str, new: str, name: str) -> str:
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), f"{name} (before)", f"{name} (after)", lineterm="", n=2):
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else ""
        )
        lines.append(f'<span class="{cls}">{html.escape(line)}</span>' if cls else html.escape(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _attribution(a: dict[str, Any] | None) -> str:
    """The 2x2 attribution on test, when the champion changed both levers."""
    if not a:
        return ""
    if not a.get("effects"):
        return f"<p class=muted>Attribution skipped: {_fmt(a.get('skipped'))}</p>"
    cells = a["cells"]
    rows = "".join(
        f"<tr><td>{name}</td><td>{_fmt(e['mean'])}</td><td>({_fmt(e['ci'][0])}, {_fmt(e['ci'][1])})</td>"
        f"<td>{_fmt(e['p_value'], 4)}</td></tr>"
        for name, e in ((k, a["effects"][k]) for k in ("harness", "weights", "interaction", "total"))
    )
    return (f"<h2>Attribution (test, n={a['n']})</h2><p>Cells: baseline {_fmt(cells['h0,a0'])}, final harness on the baseline "
            f"adapter {_fmt(cells['h,a0'])}, baseline harness on the final adapter {_fmt(cells['h0,a'])}, both "
            f"{_fmt(cells['h,a'])}. Harness = (h,a0) − (h0,a0); weights = (h0,a) − (h0,a0); interaction = the rest of the "
            "total.</p><table><tr><th>effect</th><th>mean</th><th>95% CI (paired bootstrap)</th><th>p (two-sided, paired "
            f"permutation)</th></tr>{rows}</table>")


GATE_EXAMPLES_SHOWN = 20
"""Examples listed per side of a gate in the report (all of them are counted)."""


def _gate_examples(run: Run, s: dict[str, Any]) -> list[str]:
    """Per gate, the validation examples the challenger won and lost against the champion, with both answers."""
    out = ["<h2>What each gate won and lost</h2>"]
    for g in s["generations"]:
        if not g.get("candidate") or g["lever"] == "stop":
            continue
        o = run.gate_outcomes(g["generation"])
        if not o["judged"]:
            continue
        out.append(f"<details><summary>generation {g['generation']} ({_fmt(g['kind'])}): won {len(o['won'])}, lost "
                   f"{len(o['lost'])} of {len(o['judged'])} examples</summary><table><tr><th></th><th>example</th>"
                   f"<th>challenger {_fmt(o['challenger'])}</th><th>champion {_fmt(o['champion'])}</th></tr>")
        for side, rows in (("won", o["won"]), ("lost", o["lost"])):
            for w in rows[:GATE_EXAMPLES_SHOWN]:
                out.append(f"<tr><td>{side}</td><td>{html.escape(w['example'])}</td>"
                           f"<td>{_fmt(w['challenger']['score'])} {_answer(w['challenger']['output'])} "
                           f"<span class=muted>({html.escape(w['challenger']['rollout'])})</span></td>"
                           f"<td>{_fmt(w['champion']['score'])} {_answer(w['champion']['output'])} "
                           f"<span class=muted>({html.escape(w['champion']['rollout'])})</span></td></tr>")
            if len(rows) > GATE_EXAMPLES_SHOWN:
                out.append(f"<tr><td>{side}</td><td colspan=3 class=muted>and {len(rows) - GATE_EXAMPLES_SHOWN} more "
                           f"(sia ui lists them all)</td></tr>")
        out.append("</table></details>")
    return out if len(out) > 1 else []


def _answer(output: Any) -> str:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return f"<code>{html.escape(text[:160])}</code>"


def render_report(run: Run) -> str:
    store, task = run.store, run.task
    s = run_summary(run)
    b, f = s["baseline"], s["final"]
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>sia report: {html.escape(task.name)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>sia run on <code>{html.escape(task.name)}</code></h1>",
        f"<p class=muted>{html.escape(str(s['run_dir']))} · status {_fmt(s['status'])} · {_fmt(s['stop_reason'])} · "
        f"{s['rollouts']} rollouts · {s['tokens']} tokens · {s['elapsed_s']} s"
        + (
            f" · agent models: {s['agents']['calls']} calls, {s['agents']['tokens']} tokens, ${s['agents']['usd']}"
            if s["agents"]["calls"]
            else ""
        )
        + "</p>",
        "<h2>Baseline versus final</h2><table><tr><th></th><th>version</th><th>validation</th><th>test (held out)</th></tr>",
        f"<tr><td>baseline</td><td>{_fmt(b.get('harness_version'))}</td><td>{_scored(b.get('val_detail'))}</td>"
        f"<td class=big>{_scored(b.get('test_detail'))}</td></tr>",
        f"<tr><td>final</td><td>{_fmt(f.get('harness_version'))}{' + ' + _fmt(f.get('adapter')) if f.get('adapter') else ''}</td>"
        f"<td>{_scored(f.get('val_detail'))}</td><td class=big>{_scored(f.get('test_detail'))}</td></tr></table>",
        _notes(s),
        _attribution(s.get("attribution")),
        "<h2>Scores per generation</h2>",
        _plot(s),
        "<h2>Lineage</h2><table><tr><th>#</th><th>champion</th><th>version</th><th>why</th></tr>",
    ]
    for i, c in enumerate(s["champions"]):
        cand = store.candidate(c["candidate"])
        out.append(
            f"<tr><td>{i}</td><td>{_fmt(c['candidate'])}</td><td>{_fmt(cand.harness_version)}"
            f"{' + ' + _fmt(cand.adapter_version) if cand.adapter_version else ''}</td><td>{_fmt(c['reason'])}</td></tr>"
        )
    out.append("</table><h2>Accepted changes</h2>")
    accepted = [g for g in s["generations"] if g["accepted"]]
    if not accepted:
        out.append("<p class=muted>No change was accepted.</p>")
    for g in accepted:
        cand = store.candidate(g["candidate"])
        old = run.source(cand.parent) if cand.parent else ""
        new = store.harness_source(cand.harness_version)
        out.append(
            f"<h3>generation {g['generation']}: {_fmt(g['kind'])} (Δ {_fmt(g['delta'])}, p {_fmt(g['p_value'], 4)})</h3>"
            f"<p>{_fmt(g['rationale'])}</p>{_diff(old, new, 'harness.py')}"
        )
    out.append(
        "<h2>Decision log</h2><table><tr><th>gen</th><th>lever / kind</th><th>verdict</th><th>prior Δ (records)</th><th>expected Δ</th>"
        "<th>realised Δ (95% CI)</th><th>p</th><th>level α</th><th>n</th><th>served adapter (sha256)</th><th>rationale</th>"
        "<th>gate</th></tr>"
    )
    ec = s.get("error_control")
    if ec:
        out.insert(-1, f"<p><b>Error control</b> (--alpha-scope {_fmt(ec['scope'])}): {_fmt(ec['guarantee'])}</p>")
    for g in s["generations"]:
        verdict = (
            "<span class=acc>accepted</span>"
            if g["accepted"]
            else ("<span class=rej>rejected</span>" if g["delta"] is not None or g["lever"] != "stop" else "stop")
        )
        ci = f" ({_fmt(g['ci'][0])}, {_fmt(g['ci'][1])})" if g.get("ci") else ""
        early = " · stopped early" if g.get("stopped_early") else ""
        prior = _fmt(g.get("prior")) + (f" ({g['prior_records']})" if g.get("prior_records") else "")
        out.append(
            f"<tr><td>{g['generation']}</td><td>{_fmt(g['lever'])} / {_fmt(g['kind'])}</td><td>{verdict}</td>"
            f"<td>{prior}</td>"
            f"<td>{_fmt(g.get('expected_gain'))}</td><td>{_fmt(g['delta'])}{ci}</td><td>{_fmt(g['p_value'], 4)}</td>"
            f"<td>{_fmt(g.get('alpha'), 4)}</td><td>{_fmt(g['n'])}</td>"
            f"<td><code>{_fmt(', '.join(g.get('served_adapters') or []))}</code></td>"
            f"<td>{_fmt(g['rationale'])}</td><td>{_fmt(g['reason'])}{early}</td></tr>"
        )
    out.append("</table>")
    out += _gate_examples(run, s)
    out.append("<h2>Design memory</h2><ul>")
    for g in store.generations():
        out.append(f"<li>gen {g.gen}: {_fmt(g.lesson)}</li>")
    out.append("</ul></body></html>")
    return "\n".join(out)


def write_report(run: Run) -> Path:
    path = run.run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(run), encoding="utf-8")
    tmp.replace(path)
    return path

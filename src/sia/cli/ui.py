"""`sia ui`: runs in the browser, live, read-only, served by sia itself (no CDN, works offline).

A FastAPI app over the run stores, opened read-only per request (SQLite in WAL
mode lets a running `sia run` write meanwhile). The page (`ui_page.html`) asks
the JSON endpoints below and listens on `/api/runs/{i}/events`, a server-sent
event stream that says when a run changed (a rollout, a generation, a verdict, its
status), so a view updates without a reload:

- `/api/runs`: each run's task, status, budget used, baseline -> champion with CIs;
- `/api/runs/{i}`: the summary, the timeline of generations, the score curve, the
  lineage of harness and adapter versions, and each weight update's training log;
- `/api/runs/{i}/gate/{gen}`: the gate's looks (one per chunk of validation examples
  scored, recomputed from the challenger's rollouts as they arrive) and the
  examples the challenger won and lost against the champion, with both rollouts;
- `/api/runs/{i}/diff?a=h0&b=h2`: two harness versions side by side;
- `/api/runs/{i}/rollouts?evaluation=e3&offset=0`: a page of trajectories;
- `/api/runs/{i}/rollout/{id}`: one trajectory whole: prompts, replies with each
  token's logprob, tool calls and the grade.

It binds to 127.0.0.1; bound elsewhere it asks for a token (`?token=` once, then a
cookie), printed with the address.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

PAGE_SIZE = 50
"""Trajectories per page of the trajectory list."""
POLL_S = 1.0
"""How often the event stream looks for changes in a run's store."""


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among `paths`: each one holding a sia.db, or the folders directly inside one that hold one
    (default: ./runs)."""
    out: list[Path] = []
    for p in paths or [Path("runs")]:
        if (p / "sia.db").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(c for c in p.iterdir() if (c / "sia.db").is_file())
    return list(dict.fromkeys(out))


def _open(run_dir: Path):
    from sia.store.run import Run

    return Run.open(run_dir, write=False)


def run_row(i: int, run_dir: Path) -> dict[str, Any]:
    """One line of the run list; a run that cannot be read says why."""
    from sia.errors import SiaError

    try:
        with _open(run_dir) as run:
            store = run.store
            cfg = store.get_meta("run_config", {})
            base, champ = run.baseline(), store.champion()
            return {"i": i, "run_dir": str(run_dir), "task": run.task.name, "status": store.get_meta("status"),
                    "stop_reason": store.get_meta("stop_reason"), "budget_s": cfg.get("budget"),
                    "elapsed_s": round(float(store.get_meta("elapsed_s", 0.0)), 1),
                    "generations": len(store.generations()), "rollouts": store.count_rollouts(),
                    "baseline": run.scored(base, "val") if base else None, "champion": run.scored(champ, "val") if champ else None,
                    "baseline_test": run.scored(base, "test") if base else None,
                    "champion_test": run.scored(champ, "test") if champ else None}
    except SiaError as e:
        return {"i": i, "run_dir": str(run_dir), "error": e.message}


def run_detail(run_dir: Path) -> dict[str, Any]:
    """Everything the run view draws, except the per-gate and per-trajectory detail it asks for on a click."""
    from sia.store.summary import run_summary

    with _open(run_dir) as run:
        store = run.store
        summary = run_summary(run)
        curve, champ_val = [], summary["baseline"].get("val")
        curve.append({"generation": 0, "val": champ_val, "ci": (summary["baseline"].get("val_detail") or {}).get("ci")})
        for g in summary["generations"]:
            if g["accepted"] and g["candidate"]:
                d = run.scored(g["candidate"], "val")
                champ_val = d.get("score")
                curve.append({"generation": g["generation"], "val": champ_val, "ci": d.get("ci")})
            else:
                curve.append({"generation": g["generation"], "val": champ_val, "ci": curve[-1]["ci"]})
        gens = store.generations()
        for g, row in zip(gens, summary["generations"]):
            row["minutes"] = round((g.seconds or 0) / 60, 2)
            c = store.candidate(g.candidate_id) if g.candidate_id else None
            row["harness_version"], row["adapter_version"] = (c.harness_version, c.adapter_version) if c else (None, None)
            row["val_evaluation"] = g.val_eval
        training = {}
        for a in store.adapter_versions():
            try:
                meta = json.loads((store.adapter_path(a.version) / "sia_training.json").read_text())
            except (OSError, ValueError):
                continue
            training[a.version] = {"algorithm": a.algorithm, "stopped": meta.get("stopped_early"), "heldout": meta.get("heldout"),
                                   "steps": [{k: e.get(k) for k in ("step", "loss", "reward_mean", "label_accuracy", "seconds")}
                                             for e in meta.get("log") or []]}
        champions = {c.candidate_id for c in store.champions()}
        lineage = {"harness": store.harness_lineage(),
                   "adapters": [{"version": a.version, "parent": a.parent, "algorithm": a.algorithm} for a in store.adapter_versions()],
                   "champions": sorted(champions)}
        evaluations = [{"id": e.id, "candidate": e.candidate_id, "split": e.split, "n": e.n_examples,
                        "purpose": (e.config or {}).get("purpose")} for e in store.evaluations()]
        return {"summary": summary, "curve": curve, "training": training, "lineage": lineage, "evaluations": evaluations,
                "budget": {"budget_s": summary.get("budget_s"), "elapsed_s": summary.get("elapsed_s")}}


def gate_detail(run_dir: Path, gen: int) -> dict[str, Any]:
    """Generation `gen`'s gate: a look per chunk of validation examples the challenger finished (paired delta, CI and p
    against the champion of that generation, recomputed as the gate computed them, as the rollouts arrive), and the
    examples it won and lost, up to the examples its verdict rests on."""
    from sia.loop.gate import compare

    with _open(run_dir) as run:
        o = run.gate_outcomes(gen)
        g = next((x for x in run.store.generations() if x.gen == gen), None)
        config = run.store.get_meta("run_config", {})
        chunk = int((config.get("gate") or {}).get("chunk") or 20)
        binary = run.task.spec.score == "binary"
        champ = o["champion_rollouts"]
        looks, scores = [], {}
        for k, r in enumerate(o["judged"], 1):
            scores[r.example_id] = r.score
            if k % chunk == 0 or k == len(o["judged"]):
                base = {e: champ[e].score for e in scores if e in champ}
                v = compare(base, {e: s for e, s in scores.items() if e in base}, binary=binary)
                looks.append({"n": v.n, "delta": v.delta, "ci": list(v.ci), "p_value": v.p_value})
        short = lambda rows: [{**w, **{side: {**w[side], "output": _short(w[side]["output"])}  # noqa: E731
                                       for side in ("challenger", "champion")}} for w in rows]
        return {"generation": gen, "chunk": chunk, "looks": looks, "won": short(o["won"]), "lost": short(o["lost"]),
                "verdict": g.verdict if g else None, "champion": o["champion"], "challenger": o["challenger"]}


def harness_diff(run_dir: Path, a: str, b: str) -> dict[str, Any]:
    """Two harness versions side by side: rows of (left line, right line, kind) with kind same, changed, added or removed."""
    with _open(run_dir) as run:
        left, right = run.store.harness_source(a).splitlines(), run.store.harness_source(b).splitlines()
    rows = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right, autojunk=False).get_opcodes():
        if tag == "equal":
            rows += [[left[i], right[j], "same"] for i, j in zip(range(i1, i2), range(j1, j2))]
            continue
        ls, rs = left[i1:i2], right[j1:j2]
        for k in range(max(len(ls), len(rs))):
            lx, rx = (ls[k] if k < len(ls) else None), (rs[k] if k < len(rs) else None)
            rows.append([lx, rx, "changed" if lx is not None and rx is not None else "removed" if rx is None else "added"])
    return {"a": a, "b": b, "rows": rows}


def rollout_page(run_dir: Path, evaluation: str | None, offset: int) -> dict[str, Any]:
    with _open(run_dir) as run:
        store = run.store
        rows = store.rollouts(evaluation, limit=PAGE_SIZE, offset=offset)
        total = store.count_rollouts_of(evaluation) if evaluation else store.count_rollouts()
        return {"offset": offset, "total": total, "page_size": PAGE_SIZE,
                "rollouts": [{"id": r.id, "example": r.example_id, "split": r.split, "evaluation": r.evaluation_id,
                              "candidate": r.candidate_id, "status": r.status, "score": r.score, "output": _short(r.output),
                              "seconds": r.duration_s} for r in rows]}


def trajectory(run_dir: Path, rollout_id: str) -> dict[str, Any] | None:
    """One rollout whole: each model call's prompt and replies, each reply token with its text and logprob."""
    with _open(run_dir) as run:
        store = run.store
        r = store.rollout(rollout_id)
        if r is None:
            return None
        model = store.get_meta("model")
        events = []
        for e in store.events(r.id):
            d = dict(e.data)
            if e.kind == "llm_call":
                for c in d.get("completions") or []:
                    ids, lps = c.get("token_ids") or [], c.get("logprobs") or []
                    texts = _token_texts(model, tuple(ids))
                    c["tokens"] = [{"text": t, "logprob": lps[k] if k < len(lps) else None} for k, t in enumerate(texts)]
                d.pop("prompt_token_ids", None)
                for p in d.get("prompts") or []:
                    p.pop("prompt_token_ids", None)
                    lps = [x for x in p.pop("prompt_logprobs", None) or [] if x is not None]
                    p["logprob_sum"] = sum(lps) if lps else None
            events.append({"seq": e.seq, "kind": e.kind, "t": e.t, "data": d})
        return {"rollout": {"id": r.id, "example": r.example_id, "split": r.split, "candidate": r.candidate_id, "status": r.status,
                            "score": r.score, "output": r.output, "error": r.error, "feedback": r.feedback, "seconds": r.duration_s},
                "example": _example(run, r.example_id), "events": events}


def _example(run, example_id: str) -> dict[str, Any] | None:
    ex = run.task.examples.get(example_id)
    return {"inputs": ex.inputs, "target": ex.target} if ex is not None else None


@lru_cache(maxsize=4)
def _tokenizer(model: str | None):
    """The run's tokenizer (the embedded model's by default), to show each reply token as text; None where there is none
    (a remote model, a folder without tokenizer.json). Read with the `tokenizers` library alone: transformers would take
    seconds to import for what is a lookup."""
    try:
        from tokenizers import Tokenizer

        from sia.policy.embedded import embedded_model_dir

        folder = Path(model) if model and Path(model).is_dir() else embedded_model_dir() if not model else None
        return Tokenizer.from_file(str(folder / "tokenizer.json")) if folder is not None else None
    except Exception:  # noqa: BLE001 (no tokenizer here: tokens are shown by id)
        return None


def _token_texts(model: str | None, ids: tuple[int, ...]) -> list[str]:
    tok = _tokenizer(model)
    if tok is None:
        return [f"#{i}" for i in ids]
    return [tok.decode([i]) for i in ids]


def _short(x: Any, n: int = 200) -> str:
    s = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"


def fingerprint(run_dir: Path) -> list[Any]:
    """What changes when a run moves on: rollouts recorded, generations and their states, status, champion."""
    from sia.store.store import Store

    with Store(run_dir, write=False) as store:
        return [store.count_rollouts(), [(g.gen, g.status) for g in store.generations()], store.get_meta("status"),
                store.champion(), store.get_meta("elapsed_s")]


def make_app(run_dirs: list[Path], token: str | None = None, poll_s: float = POLL_S, stream_s: float | None = None):
    """The app over `run_dirs`; `token`, when set, is asked of every request (a query parameter once, then a cookie).
    `stream_s` ends each event stream after that many seconds (tests); by default it lasts while the page is open."""
    app = FastAPI(title="sia ui", docs_url=None, redoc_url=None, openapi_url=None)
    page = (Path(__file__).parent / "ui_page.html").read_text(encoding="utf-8")

    def run_dir(i: int) -> Path:
        if not 0 <= i < len(run_dirs):
            raise HTTPException(404, f"no run {i}")
        return run_dirs[i]

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get("sia_ui_token")
        if not given or not secrets.compare_digest(given, token):
            return JSONResponse({"detail": "a token is needed: open the address sia ui printed"}, status_code=401)
        response = await call_next(request)
        response.set_cookie("sia_ui_token", token, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return [run_row(i, d) for i, d in enumerate(run_dirs)]

    @app.get("/api/runs/{i}")
    def detail(i: int) -> dict[str, Any]:
        return run_detail(run_dir(i))

    @app.get("/api/runs/{i}/gate/{gen}")
    def gate(i: int, gen: int) -> dict[str, Any]:
        return gate_detail(run_dir(i), gen)

    @app.get("/api/runs/{i}/diff")
    def diff(i: int, a: str, b: str) -> dict[str, Any]:
        from sia.errors import StoreError

        try:
            return harness_diff(run_dir(i), a, b)
        except StoreError as e:
            raise HTTPException(404, e.message) from None

    @app.get("/api/runs/{i}/rollouts")
    def rollouts(i: int, evaluation: str | None = None, offset: int = 0) -> dict[str, Any]:
        return rollout_page(run_dir(i), evaluation, offset)

    @app.get("/api/runs/{i}/rollout/{rid}")
    def one(i: int, rid: str) -> dict[str, Any]:
        t = trajectory(run_dir(i), rid)
        if t is None:
            raise HTTPException(404, f"no rollout {rid}")
        return t

    @app.get("/api/runs/{i}/events")
    async def events(i: int, request: Request) -> StreamingResponse:
        d = run_dir(i)

        async def stream():
            last, waited = None, 0.0
            while not await request.is_disconnected() and (stream_s is None or waited < stream_s):
                now = await asyncio.to_thread(fingerprint, d)
                if now != last:
                    yield f"data: {json.dumps({'run': i, 'state': now}, default=str)}\n\n"
                    last = now
                await asyncio.sleep(poll_s)
                waited += poll_s

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def serve(run_dirs: list[Path], host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          on_ready=None) -> None:
    """Serve until interrupted; a host other than loopback gets a token (made here unless given)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        token = secrets.token_urlsafe(16)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    if on_ready:
        on_ready(url)
    uvicorn.run(make_app(run_dirs, token), host=host, port=port, log_level="warning")

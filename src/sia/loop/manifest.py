"""RUN_DIR/manifest.json: what a run's results rest on, hashed, so that a changed file is caught afterwards (`sia verify`).

The manifest holds the sha256 of the base model's files, every adapter's files, every harness version's source, the
task's spec, grader and data files, and the per-example scores of every sealed test scoring; the run's seeds and
config; sia's version and commit; the packages and the machine that ran it. It is written when a run ends (and again
after a resume or a rollback), atomically.

`verify` recomputes every hash and names what changed. What it cannot see: a remote policy's weights (an endpoint is
recorded by URL and model name only), and a manifest edited together with the files it describes; keep a copy of the
manifest (its own sha256 is printed by `sia verify`) where the run directory's writers cannot reach it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from sia.errors import StoreError
from sia.store.records import scores_sha256
from sia.store.run import Run

FORMAT = 1
PACKAGES = ("torch", "transformers", "peft", "trl", "llama_cpp_python", "numpy", "scipy")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(paths: list[Path], root: Path | None = None) -> dict[str, str]:
    """sha256 by path (relative to `root` when given) of the files among `paths`, folders walked, caches skipped."""
    out: dict[str, str] = {}
    for p in paths:
        found = sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts) if p.is_dir() else [p]
        for q in found:
            if q.is_file():
                out[str(q.relative_to(root) if root else q.resolve())] = file_sha256(q)
    return out


def sia_source() -> dict[str, Any]:
    """sia's version, and the commit of its checkout when it runs from one (a "-dirty" note when src has changes)."""
    tree = Path(__file__).resolve().parents[3]
    try:
        version: str | None = importlib.metadata.version("sia")
    except importlib.metadata.PackageNotFoundError:
        version = None
    out: dict[str, Any] = {"version": version, "commit": None, "dirty": None}
    if (tree / ".git").exists():
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, timeout=30).stdout.strip()

        out["commit"] = git("rev-parse", "HEAD") or None
        out["dirty"] = bool(git("status", "--porcelain", "src"))
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "cpu": cpu}


def packages() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def task_files(run: Run) -> dict[str, dict[str, str]]:
    """The task's files by role: its spec, its grader's source, its data files, and every other file of its folder."""
    task = run.task
    spec = task.spec
    target = spec.grader.entry.rpartition(":")[0]
    if target.endswith(".py"):
        grader = [task.folder / target]
    else:
        found = importlib.util.find_spec(target)
        grader = [Path(found.origin)] if found and found.origin else []
    data = [task.data_dir / f for f in (spec.data.inputs, spec.data.labels, spec.labels_file) if f]
    spec_file = [p for p in (task.folder / "task.toml",) if p.is_file()]
    named = {p.resolve() for p in grader + data + spec_file}
    other = [q for q in sorted(task.folder.rglob("*")) if q.is_file() and "__pycache__" not in q.parts and q.resolve() not in named]
    return {"spec": _files(spec_file), "grader": _files(grader), "data": _files([p for p in data if p.is_file()]),
            "other": _files(other)}


def base_model(run: Run, config: dict[str, Any]) -> dict[str, Any]:
    """The base model's name and files' hashes; an endpoint's URL and model name only (its weights are not here)."""
    from sia.policy.embedded import EMBEDDED_NAME, gguf_path, resolve_model_path

    model, endpoint = config.get("model"), config.get("endpoint")
    if endpoint:
        return {"name": model, "endpoint": endpoint, "files": {}, "note": "served by an endpoint: its weights are not hashed"}
    paths = [resolve_model_path(model)]
    if model in (None, "", EMBEDDED_NAME, "embedded"):
        paths.append(gguf_path())  # what llama.cpp serves; the folder is what training loads
    return {"name": model or EMBEDDED_NAME, "files": _files(paths)}


def build(run: Run) -> dict[str, Any]:
    store = run.store
    config = store.get_meta("run_config") or {}
    harness = {v: hashlib.sha256(store.harness_source(v).encode()).hexdigest() for v in store.harness_versions()}
    adapters = {a.version: _files([store.adapter_path(a.version)], root=store.run_dir) for a in store.adapter_versions()
                if store.adapter_path(a.version).exists()}
    return {
        "format": FORMAT,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sia": sia_source(),
        "packages": packages(),
        "machine": machine(),
        "seeds": {"run": config.get("seed"), "gate": (config.get("gate") or {}).get("seed")},
        "config": config,
        "task": {"name": run.task.name, "folder": str(run.task.folder.resolve()), "files": task_files(run)},
        "base_model": base_model(run, config),
        "adapters": adapters,
        "harness_versions": harness,
        "sealed_test": store.get_meta("sealed_test", {}),
    }


def write(run: Run) -> Path:
    """Write RUN_DIR/manifest.json (atomically) and return its path."""
    path = run.store.run_dir / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(build(run), indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _compare(what: str, recorded: dict[str, str], now: dict[str, str | None]) -> list[str]:
    out = []
    for name, sha in recorded.items():
        got = now.get(name)
        if got is None:
            out.append(f"{what} {name}: missing")
        elif got != sha:
            out.append(f"{what} {name}: changed (sha256 {sha[:12]} -> {got[:12]})")
    return out


def _rehash(files: dict[str, str], root: Path | None = None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in files:
        p = (root / name) if root else Path(name)
        out[name] = file_sha256(p) if p.is_file() else None
    return out


def verify(run: Run) -> tuple[list[str], dict[str, int]]:
    """Recompute every hash of RUN_DIR/manifest.json: (what changed, one line each; how many items were checked, by kind)."""
    store = run.store
    path = store.run_dir / "manifest.json"
    if not path.is_file():
        raise StoreError(f"{store.run_dir} has no manifest.json", "a run writes it when it ends: `sia resume` a run that stopped")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} cannot be read: {e}", "restore it from a copy") from None
    problems: list[str] = []
    checked: dict[str, int] = {}
    for role, files in m["task"]["files"].items():
        problems += _compare(f"task {role} file", files, _rehash(files))
        checked[f"task {role}"] = len(files)
    problems += _compare("base model file", m["base_model"]["files"], _rehash(m["base_model"]["files"]))
    checked["base model"] = len(m["base_model"]["files"])
    for version, files in m["adapters"].items():
        problems += _compare(f"adapter {version} file", files, _rehash(files, store.run_dir))
    checked["adapter files"] = sum(len(f) for f in m["adapters"].values())
    for version, sha in m["harness_versions"].items():
        try:
            now: str | None = hashlib.sha256(store.harness_source(version).encode()).hexdigest()
        except Exception:  # a version gone from the harness repository
            now = None
        problems += _compare("harness version", {version: sha}, {version: now})
    checked["harness versions"] = len(m["harness_versions"])
    for cid, seal in m["sealed_test"].items():
        now = scores_sha256(run.scores(seal["evaluation"])) if store.evaluation(seal["evaluation"]) else None
        problems += _compare(f"test scores of {cid} (evaluation {seal['evaluation']})", {"per-example": seal["sha256"]},
                             {"per-example": now})
    checked["sealed test scorings"] = len(m["sealed_test"])
    integrity = store.integrity()
    if integrity != "ok":
        problems.append(f"sia.db: {integrity}")
    return problems, checked

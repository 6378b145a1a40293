"""`Run`: a run directory opened with its task, and the questions the loop, the agents and the report ask of it.

The store answers with records; `Run` derives what several places need from
them (the scores of an evaluation by example, a candidate's harness source, the
design memory, the summary), so that none of them reads the store row by row
on its own or spells an evaluation key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sia.errors import StoreError
from sia.store.memory import Entry, Memory
from sia.store.store import Store
from sia.task.loading import Task, builtin_tasks, load_task


class Run:
    def __init__(self, store: Store, task: Task) -> None:
        self.store, self.task = store, task

    @classmethod
    def open(cls, run_dir: Path | str, write: bool = False, need_run: bool = True) -> Run:
        """Open a run directory and load its task; `need_run`: refuse a directory that holds only `sia eval` work."""
        store = Store(run_dir, write=write, create=False)
        try:
            info = store.get_meta("task")
            if info is None or (need_run and store.get_meta("run_config") is None):
                raise StoreError(f"{run_dir} holds no `sia run`", "pass the --run-dir of a run")
            store.check_harness_repo()
            return cls(store, _recorded_task(info))
        except BaseException:
            store.close()
            raise

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- candidates and scores ----------------------------------------------------------------
    def source(self, cid: str) -> str:
        """The harness source of candidate `cid`."""
        return self.store.harness_source(self.store.candidate(cid).harness_version)

    def adapter(self, cid: str) -> str | None:
        return self.store.candidate(cid).adapter_version

    def scores(self, eid: str | None) -> dict[str, float]:
        """Score per example of evaluation `eid` (the first sample's, as the gate pairs them)."""
        return {r.example_id: r.score for r in self.store.rollouts(eid)} if eid else {}

    def scores_of(self, cid: str, purpose: str = "val") -> dict[str, float]:
        return self.scores(self.store.evaluation_id(cid, purpose))

    def mean_of(self, cid: str, purpose: str = "val") -> float | None:
        s = self.scores_of(cid, purpose)
        return sum(s.values()) / len(s) if s else None

    def score(self, cid: str | None, split: str) -> float | None:
        """The finished score of `cid` on `split` (val or test), or None while incomplete."""
        eid = self.store.evaluation_id(cid, split) if cid else None
        ev = self.store.evaluation(eid) if eid else None
        if ev is None:
            return None
        if ev.score is not None:
            return ev.score
        rows = self.store.rollouts(eid)
        return sum(r.score for r in rows) / len(rows) if rows and len(rows) == ev.n_examples else None

    def scored(self, cid: str | None, split: str) -> dict[str, Any]:
        """Score, 95% CI and n of `cid` on `split`, for reports: {} while the evaluation is incomplete."""
        eid = self.store.evaluation_id(cid, split) if cid else None
        ev = self.store.evaluation(eid) if eid else None
        if ev is None or ev.score is None:
            return {}
        return {"score": ev.score, "ci": [ev.ci_lo, ev.ci_hi], "n": ev.n_examples}

    def outcome_shares(self) -> dict[str, Any]:
        """Share of timeouts and errors over every rollout of the run, and the first grader error (a broken task shows here)."""
        rows = self.store.rollouts()
        n = len(rows) or 1
        grader = next((r.error for r in rows if r.error_type == "grader"), None)
        return {"rollouts": len(rows), "timeouts": sum(r.error_type == "timeout" for r in rows) / n,
                "errors": sum(bool(r.error_type) and r.error_type != "timeout" for r in rows) / n, "first_grader_error": grader}

    def seconds_of(self, cid: str, purpose: str = "val") -> tuple[float, int]:
        """(wall seconds the evaluation of `cid` for `purpose` took, rollouts): from the first rollout's start to the last's end.

        The start is the first finished rollout's end less its duration, so a
        chunk of concurrent rollouts that all end together still counts the
        time they ran (not the moments between their ends).
        """
        eid = self.store.evaluation_id(cid, purpose)
        rows = self.store.rollouts(eid) if eid else []
        if not rows:
            return 0.0, 0
        return max(r.created for r in rows) - min(r.created - (r.duration_s or 0.0) for r in rows), len(rows)

    def fresh_seconds_of(self, cid: str, purpose: str = "val") -> tuple[float, int]:
        """`seconds_of`, counting only the rollouts that computed something: what `cid` costs on inputs the policy
        service has not scored before (a test set, the next harness edit's prompts).

        A harness edit that keeps each example's prompts (a calibration change) has its evaluation served almost whole
        from the service's memo of its parent's scorings: on LawBench such a champion measured 1.7 rollouts/s on
        validation and ran its test at 0.72/s, so a test reserve taken from validation overran the budget by 105 s.
        Rollouts served from the memo count as free; when they are the majority the evaluation says little about fresh
        work, and the champion before `cid` (whose prompts those were) answers instead."""
        eid = self.store.evaluation_id(cid, purpose)
        span, n = self.seconds_of(cid, purpose)
        fresh = n - (self.store.served_from_memo(eid) if eid else 0)
        if n == 0 or fresh >= max(2, n / 2):
            return span, fresh
        before = [c.candidate_id for c in self.store.champions()]
        before = before[: before.index(cid)] if cid in before else before
        for earlier in reversed(before):
            if (got := self.fresh_seconds_of(earlier, purpose))[1]:
                return got
        return span, n

    def finished(self, cid: str, purpose: str) -> bool:
        eid = self.store.evaluation_id(cid, purpose)
        ev = self.store.evaluation(eid) if eid else None
        return bool(ev and ev.finished)

    # -- history --------------------------------------------------------------------------------
    def baseline(self) -> str | None:
        champs = self.store.champions()
        return champs[0].candidate_id if champs else None

    def served_adapters(self, eid: str | None, sample: int = 20) -> list[str]:
        """Which adapters answered evaluation `eid`'s model calls, by content hash (12 characters), read from the first
        `sample` rollouts' recorded calls: "base" for the base model, "unrecorded" for calls recorded before sia kept it."""
        found: list[str] = []
        for r in self.store.rollouts(eid, limit=sample) if eid else []:
            for e in self.store.events(r.id):
                if e.kind == "llm_call":
                    h = e.data.get("adapter_sha256", "unrecorded")
                    key = h[:12] if h and h != "unrecorded" else ("unrecorded" if h else "base")
                    if key not in found:
                        found.append(key)
        return found

    def gate_outcomes(self, gen: int) -> dict[str, Any]:
        """Generation `gen`'s gate, example by example: the challenger's validation rollouts the verdict rests on (in the
        order they were scored; an accepted challenger's scores are completed after its gate), and of those the examples
        it won and lost against the champion it was compared with, each with both rollouts."""
        g = next((x for x in self.store.generations() if x.gen == gen), None)
        if g is None or not g.candidate_id:
            return {"generation": gen, "champion": None, "challenger": None, "judged": [], "champion_rollouts": {},
                    "won": [], "lost": []}
        champ_eid, mine_eid = self.store.evaluation_id(g.champion, "val"), self.store.evaluation_id(g.candidate_id, "val")
        champ = {r.example_id: r for r in self.store.rollouts(champ_eid)} if champ_eid else {}
        mine = self.store.rollouts(mine_eid) if mine_eid else []
        if g.verdict and g.verdict.get("n"):
            mine = mine[: int(g.verdict["n"])]
        won, lost = [], []
        for r in mine:
            c = champ.get(r.example_id)
            if c is not None and c.score != r.score:
                row = {"example": r.example_id, "challenger": {"rollout": r.id, "score": r.score, "output": r.output},
                       "champion": {"rollout": c.id, "score": c.score, "output": c.output}}
                (won if r.score > c.score else lost).append(row)
        return {"generation": gen, "champion": g.champion, "challenger": g.candidate_id, "judged": mine,
                "champion_rollouts": champ, "won": won, "lost": lost}

    def memory(self) -> Memory:
        """Design memory: every decided generation that tried a change, with its outcome and cost."""
        entries = []
        for g in self.store.generations():
            if not g.decided or not g.verdict or g.proposal["lever"] == "stop":
                continue
            v = g.verdict
            update = {k: g.proposal.get(k) for k in ("algorithm", "config", "data")} if g.proposal["lever"] == "weights" else None
            entries.append(Entry(g.gen, g.proposal["lever"], g.proposal["kind"], v["accept"], v["delta"], v["p_value"],
                                 g.rollouts or 0, g.seconds or 0.0, g.lesson or "", self.adapter(g.champion), update))
        return Memory(entries)


def _recorded_task(info: dict[str, Any]) -> Task:
    """The task a run recorded: its folder, or, where that folder is gone (sia reinstalled or run from another checkout),
    the builtin task of that name."""
    folder = Path(info["folder"])
    if folder.is_dir() or info.get("name") not in builtin_tasks():
        return load_task(folder)
    return load_task(info["name"])

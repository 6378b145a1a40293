"""Groups concurrent policy requests into batches that share forward passes.

Requests from many rollouts arrive on HTTP threads. One worker thread owns the
model: it takes whatever is queued, waits a few milliseconds for stragglers,
and runs each group of compatible jobs (same kind, same model) as one batch.
Generation, when the backend offers sessions, is continuous: new requests join
the running decode between two steps, and each request returns as soon as its
own rows finish.

Requests of one rollout cannot fail another's: a row the session cannot admit
(its prompt does not fit, say) fails its own request only, and a failed step
fails the rows in it and returns everything they held to the engine
(`release`). A rollout's requests are cancelled when it ends (`cancel`): queued
ones are dropped and its rows leave the session at the next step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class Cancelled(Exception):
    """The request's rollout ended before it was served."""


@dataclass(eq=False)
class Job:
    kind: str  # "generate" | "score" | "embed"
    model: str
    items: list[Any]  # GenRequest or token-id lists; one job may hold several rows (n > 1)
    owner: str = ""
    """The rollout the request belongs to ("" for none), for `Batcher.cancel`."""
    future: Future = field(default_factory=Future)
    cancelled: bool = False


class Batcher:
    def __init__(self, run_group: Callable[[str, str, list[Any]], list[Any]], max_batch: int = 32, window_s: float = 0.005,
                 open_session: Callable[[str], Any] | None = None) -> None:
        self._run_group = run_group
        self._open_session = open_session
        self._session = None
        self._backlog: list[Job] = []
        self._progress: dict[int, list[Any]] = {}
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        self.batches = 0
        self.jobs = 0
        self.cancelled = 0
        self._lock = threading.Lock()
        self._owned: dict[str, list[Job]] = {}
        self._thread = threading.Thread(target=self._loop, name="sia-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, model: str, items: list[Any], owner: str = "") -> Future:
        job = Job(kind, model, items, owner)
        if owner:
            with self._lock:
                self._owned.setdefault(owner, []).append(job)
        self._queue.put(job)
        return job.future

    def cancel(self, owner: str) -> int:
        """Fail every unfinished request of `owner` with `Cancelled`; the worker drops their rows. How many there were."""
        with self._lock:
            jobs = self._owned.pop(owner, [])
        for job in jobs:
            job.cancelled = True
            self.cancelled += self._settle(job, error=Cancelled(f"cancelled: rollout {owner} ended"))
        return len(jobs)

    def _settle(self, job: Job, result: Any = None, error: BaseException | None = None) -> bool:
        """Finish `job`'s future once (a cancelled job's late result is dropped); whether this call finished it."""
        with self._lock:
            if job.future.done():
                return False
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
            if job.owner and job in self._owned.get(job.owner, ()):
                self._owned[job.owner].remove(job)
                if not self._owned[job.owner]:
                    del self._owned[job.owner]
            return True

    def active_rows(self) -> int:
        """Rows decoding or waiting to (a snapshot, from any thread)."""
        session = self._session
        return (session.active if session is not None else 0) + sum(len(job.items) for job in list(self._backlog))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _collect(self, block: bool = True) -> list[Job]:
        try:
            first = self._queue.get(timeout=0.1) if block else self._queue.get_nowait()
        except queue.Empty:
            return []
        jobs, rows = [first], len(first.items)
        deadline = time.monotonic() + self.window_s
        while rows < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get_nowait() if timeout <= 0 else self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            jobs.append(job)
            rows += len(job.items)
        return jobs

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = self._session is not None or bool(self._backlog)
            jobs = self._collect(block=not busy)
            groups: dict[tuple[str, str], list[Job]] = {}
            for job in jobs:
                if job.cancelled:
                    continue
                if job.kind == "generate" and self._open_session is not None:
                    self._backlog.append(job)
                else:
                    groups.setdefault((job.kind, job.model), []).append(job)
            for (kind, model), group in groups.items():
                self._run_static(kind, model, group)
            if self._open_session is not None:
                self._decode_step()

    def _run_static(self, kind: str, model: str, group: list[Job]) -> None:
        group = [job for job in group if not job.cancelled]
        items = [it for job in group for it in job.items]
        if not items:
            return
        try:
            results = self._run_group(kind, model, items)
        except Exception as e:  # one bad batch fails its callers, never the worker
            for job in group:
                self._settle(job, error=e)
            return
        self.batches += 1
        self.jobs += len(group)
        start = 0
        for job in group:
            self._settle(job, results[start : start + len(job.items)])
            start += len(job.items)

    def _decode_step(self) -> None:
        """Drop cancelled rows, admit waiting generation jobs into the session, then run one decode step."""
        admitted: list[Job] = []
        self._backlog = [job for job in self._backlog if not job.cancelled]
        try:
            if self._session is not None and any(job.cancelled for job, _ in self._tags()):
                for job, _ in self._tags():
                    if job.cancelled:
                        self._progress.pop(id(job), None)
                self._session.drop(lambda tag: tag[0].cancelled)
                if not self._session.active:
                    self._session = None
            if self._session is None and self._backlog and self._open_session is not None:
                try:
                    self._session = self._open_session(self._backlog[0].model)
                except Exception as e:
                    self._settle(self._backlog.pop(0), error=e)
                    return
                self.batches += 1
            if self._session is None:
                return
            finished, waiting, items, tags = [], [], [], []
            for job in self._backlog:
                fits = self._session.active + len(items) + len(job.items) <= self.max_batch
                if fits and hasattr(self._session, "fits"):  # a session that also counts its memory (llama.cpp's KV cells)
                    fits = self._session.fits(items + job.items)
                if job.model == self._session.model and (fits or (self._session.active == 0 and not items)):
                    self._progress[id(job)] = [None] * len(job.items)
                    admitted.append(job)
                    items += job.items
                    tags += [(job, i) for i in range(len(job.items))]
                else:
                    waiting.append(job)
            self._backlog = waiting
            if items:  # all newly admitted rows share one prefill
                finished += self._session.add(items, tags)
            if self._session.active:
                finished += self._session.step()
        except Exception as e:
            self._fail_session(e, admitted)
            return
        for (job, i), result in finished:
            if id(job) not in self._progress:
                continue  # failed or cancelled already
            if isinstance(result, BaseException):  # this request could not be admitted: it alone fails
                job.cancelled = True
                self._progress.pop(id(job), None)
                self._settle(job, error=result)
                continue
            slots = self._progress[id(job)]
            slots[i] = result
            if all(r is not None for r in slots):
                del self._progress[id(job)]
                self.jobs += 1
                self._settle(job, slots)
        if not self._session.active:
            self._session = None

    def _tags(self) -> list[Any]:
        return [row.tag for row in getattr(getattr(self._session, "inner", None), "rows", [])]

    def _fail_session(self, e: Exception, admitted: list[Job]) -> None:
        """A failed prefill or step fails every job in the session and those being admitted, and gives the engine back
        all the session held; the worker lives on."""
        for job in admitted + [job for job, _ in self._tags()]:
            self._settle(job, error=e)
            self._progress.pop(id(job), None)
        release = getattr(self._session, "release", None)
        if release is not None:
            release()
        self._session = None

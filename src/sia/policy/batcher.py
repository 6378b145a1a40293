"""Groups concurrent policy requests into batches that share forward passes.

Requests from many rollouts arrive on HTTP threads. One worker thread owns the
model: it takes whatever is queued, waits a few milliseconds for stragglers,
and runs each group of compatible jobs (same kind, same model) as one batch.
Generation, when the backend offers sessions, is continuous: new requests join
the running decode between two steps, and each request returns as soon as its
own rows finish.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Job:
    kind: str  # "generate" | "score"
    model: str
    items: list[Any]  # GenRequest or token-id lists; one job may hold several rows (n > 1)
    future: Future = field(default_factory=Future)


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
        self._thread = threading.Thread(target=self._loop, name="sia-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, model: str, items: list[Any]) -> Future:
        job = Job(kind, model, items)
        self._queue.put(job)
        return job.future

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
                if job.kind == "generate" and self._open_session is not None:
                    self._backlog.append(job)
                else:
                    groups.setdefault((job.kind, job.model), []).append(job)
            for (kind, model), group in groups.items():
                self._run_static(kind, model, group)
            if self._open_session is not None:
                self._decode_step()

    def _run_static(self, kind: str, model: str, group: list[Job]) -> None:
        items = [it for job in group for it in job.items]
        try:
            results = self._run_group(kind, model, items)
        except Exception as e:  # one bad batch fails its callers, never the worker
            for job in group:
                job.future.set_exception(e)
            return
        self.batches += 1
        self.jobs += len(group)
        start = 0
        for job in group:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)

    def _decode_step(self) -> None:
        """Admit waiting generation jobs into the session, then run one decode step."""
        admitted: list[Job] = []
        try:
            if self._session is None and self._backlog:
                try:
                    self._session = self._open_session(self._backlog[0].model)
                except Exception as e:
                    self._backlog.pop(0).future.set_exception(e)
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
            slots = self._progress[id(job)]
            slots[i] = result
            if all(r is not None for r in slots):
                del self._progress[id(job)]
                self.jobs += 1
                job.future.set_result(slots)
        if not self._session.active:
            self._session = None

    def _fail_session(self, e: Exception, admitted: list[Job]) -> None:
        """A failed prefill or step fails every job in the session and those being admitted; the worker lives on."""
        rows = getattr(getattr(self._session, "inner", None), "rows", [])
        for job in admitted + [row.tag[0] for row in rows]:
            if not job.future.done():
                job.future.set_exception(e)
            self._progress.pop(id(job), None)
        self._session = None

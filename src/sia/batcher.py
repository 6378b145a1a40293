"""Groups concurrent policy requests into batches that share forward passes.

Requests from many rollouts arrive on HTTP threads. One worker thread owns the
model: it takes whatever is queued, waits a few milliseconds for stragglers,
and runs each group of compatible jobs (same kind, same model) as one batch.
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
    def __init__(self, run_group: Callable[[str, str, list[Any]], list[Any]], max_batch: int = 32, window_s: float = 0.005) -> None:
        self._run_group = run_group
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

    def _collect(self) -> list[Job]:
        try:
            first = self._queue.get(timeout=0.1)
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
            jobs = self._collect()
            groups: dict[tuple[str, str], list[Job]] = {}
            for job in jobs:
                groups.setdefault((job.kind, job.model), []).append(job)
            for (kind, model), group in groups.items():
                items = [it for job in group for it in job.items]
                try:
                    results = self._run_group(kind, model, items)
                except Exception as e:  # one bad batch fails its callers, never the worker
                    for job in group:
                        job.future.set_exception(e)
                    continue
                self.batches += 1
                self.jobs += len(group)
                start = 0
                for job in group:
                    job.future.set_result(results[start : start + len(job.items)])
                    start += len(job.items)

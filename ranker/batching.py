"""Dynamic batching: one model run at a time; requests that queue meanwhile share the next run.

On 2 cores two concurrent runs only fight over them (measured: model 13-20 ms at the tail instead of
4 ms), so runs are serialised. When the engine frees up, the request at the head of the queue leads:
it takes everyone waiting (up to `max_batch`), and only if it is alone does it wait up to its window
for company. A batch of one runs with the request's own output buffers (zero copy into a ring slot).

A run's CPU (the leader's thread and the engine's own threads) is split across its requests by candidates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mesh.timing import cpu_ns, split_cpu

__all__ = ["Batcher", "Job"]

Run = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None]


@dataclass
class Job:
    """One request's model inputs (user [1, d], context [1, c], ids [n], cross [n, x]) and its output buffers."""

    user: np.ndarray
    context: np.ndarray
    ids: np.ndarray
    cross: np.ndarray
    scores: np.ndarray
    heads: np.ndarray
    window_s: float
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    started_ns: int = 0  # when its model run began: the time before it was spent queued
    cpu_ns: int = 0  # its share of its run's CPU


class Batcher:
    def __init__(self, run: Run, fixed: Mapping[str, np.ndarray], max_batch: int = 8,
                 engine_cpu_ns: Callable[[], int] = lambda: 0) -> None:
        self.run, self.fixed, self.max_batch = run, fixed, max_batch
        self.engine_cpu_ns = engine_cpu_ns  # the engine's own threads' CPU so far (runs never overlap: all ours)
        self._queue: list[Job] = []
        self._leading = False
        self._cond = threading.Condition()
        self.batch_sizes: dict[int, int] = {}  # batch size -> how many runs had it

    def submit(self, job: Job) -> None:
        """Score `job` (blocking), alone or in a batch."""
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()  # a leader may be waiting for a fuller batch
            while not job.done.is_set():
                if self._leading or not self._queue or self._queue[0] is not job:
                    self._cond.wait()  # the engine is busy, or our batch is running; the queue's head leads next
                    continue
                self._leading = True  # held until our batch has run: runs never overlap
                deadline = time.monotonic() + job.window_s
                while len(self._queue) == 1 and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)  # alone on an idle engine: wait up to the window for company
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error

    def run_now(self, jobs: list[Job]) -> None:
        """Run `jobs` as one batch on the calling thread, without the queue: for a batcher only one thread uses
        (background scoring on a version's one-thread engine)."""
        self._run(jobs)
        for job in jobs:
            if job.error is not None:
                raise job.error

    def _run(self, jobs: list[Job]) -> None:
        started, cpu = time.monotonic_ns(), cpu_ns() + self.engine_cpu_ns()
        for job in jobs:
            job.started_ns = started
        try:
            if len(jobs) == 1:
                job = jobs[0]
                self.run({**self.fixed, "user": job.user, "context": job.context, "request_of": np.zeros(len(job.ids), np.int64),
                          "ids": job.ids, "cross": job.cross}, {"scores": job.scores, "heads": job.heads})
            else:
                sizes = [len(j.ids) for j in jobs]
                total = sum(sizes)
                scores, heads = np.empty(total, np.float32), np.empty((total, jobs[0].heads.shape[1]), np.float32)
                self.run({**self.fixed, "user": np.concatenate([j.user for j in jobs]),
                          "context": np.concatenate([j.context for j in jobs]),
                          "request_of": np.repeat(np.arange(len(jobs), dtype=np.int64), sizes),
                          "ids": np.concatenate([j.ids for j in jobs]), "cross": np.concatenate([j.cross for j in jobs])},
                         {"scores": scores, "heads": heads})
                start = 0
                for job, n in zip(jobs, sizes):
                    job.scores[...] = scores[start:start + n]
                    job.heads[...] = heads[start:start + n]
                    start += n
        except BaseException as exc:  # noqa: BLE001 - every waiter must wake, with the error
            for job in jobs:
                job.error = exc
        finally:
            shares = split_cpu(cpu_ns() + self.engine_cpu_ns() - cpu, [len(job.ids) for job in jobs])
            for job, share in zip(jobs, shares):
                job.cpu_ns = share
            self.batch_sizes[len(jobs)] = self.batch_sizes.get(len(jobs), 0) + 1  # written by the one running leader
            for job in jobs:
                job.done.set()

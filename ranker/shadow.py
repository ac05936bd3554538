"""Shadow scoring: a sampled request's candidates scored again by the shadow version, after the answer has gone and
only while the ranker has nothing else to do; how the two rankings differ (Spearman, overlap@20, score shift)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from feedserve.v1 import common_pb2
from mesh.logging import get_logger
from ranker.batching import Job
from ranker.features import HEADS
from ranker.versions import ModelVersion

__all__ = ["ShadowJob", "ShadowMetricsCollector", "ShadowScorer", "spearman", "overlap_at"]

QUEUE = 16  # sampled requests waiting for spare capacity; more are let go (counted)
BATCH = 8  # jobs scored in one run of the shadow's engine (fewer wake-ups and GIL hand-offs than one by one)
IDLE_GAP_S = 0.002  # the ranker must have been idle this long: the gateway is still finishing the last feed
MAX_AGE_S = 5.0  # a job older than this is let go: the shadow must not fall ever further behind


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (ranks by a stable sort: ties are rare in float scores)."""
    if len(a) < 2:
        return 1.0
    ra, rb = np.empty(len(a)), np.empty(len(b))
    ra[np.argsort(a, kind="stable")] = np.arange(len(a))
    rb[np.argsort(b, kind="stable")] = np.arange(len(b))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 1.0


def overlap_at(k: int, a: np.ndarray, b: np.ndarray) -> float:
    """The share of a's top k (by score) that is in b's top k."""
    k = min(k, len(a))
    if k == 0:
        return 1.0
    top_a = np.argpartition(-a, k - 1)[:k]
    top_b = np.argpartition(-b, k - 1)[:k]
    return len(np.intersect1d(top_a, top_b)) / k


@dataclass
class ShadowJob:
    """What the answering version scored, copied: the shadow scores exactly these rows."""

    shadow: ModelVersion
    answered_by: str
    user_part: np.ndarray
    context_part: np.ndarray
    ids: np.ndarray
    cross: np.ndarray
    scores: np.ndarray
    queued_at: float


class ShadowScorer:
    """A worker thread that scores queued jobs once no request has been ranked for a moment (the ranker brackets
    each request with `ranking()`); the figures it keeps are means over the jobs compared since the shadow changed."""

    def __init__(self) -> None:
        self._idle = threading.Condition()  # notified when no request is being ranked
        self._busy = 0  # requests being ranked
        self._idle_since = 0.0  # when that count last fell to 0
        self._queue: deque[ShadowJob] = deque()
        self._wake = threading.Event()
        self._stop = False
        self.pair = ("", "")  # (answering, shadow) the figures are about
        self.compared = self.dropped = 0
        self._sums = np.zeros(3)  # spearman, overlap@20, score shift
        self._progress = threading.Condition()  # notified after each job (compared or let go)
        self._thread = threading.Thread(target=self._run, name="shadow-scoring", daemon=True)
        self._thread.start()

    def offer(self, job: ShadowJob) -> None:
        """Queue a job (never blocks): when the queue is full the oldest waiting job is let go."""
        if len(self._queue) >= QUEUE:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(job)
        self._wake.set()

    def figures(self) -> common_pb2.ShadowMetrics:
        n = max(self.compared, 1)
        spear, overlap, shift = (self._sums / n).tolist()
        return common_pb2.ShadowMetrics(primary=self.pair[0], shadow=self.pair[1], compared=self.compared,
                                        dropped=self.dropped, spearman=spear, overlap_at_20=overlap, score_shift=shift)

    def wait_until_handled(self, compared: int, timeout: float) -> bool:
        """Wait until `compared` jobs of the current pair were scored (True) or `timeout` passes (False)."""
        with self._progress:
            return self._progress.wait_for(lambda: self.compared >= compared, timeout)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()

    @contextmanager
    def ranking(self) -> Iterator[None]:
        """Around each request the ranker ranks: the shadow's work waits until none is under way."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                if not self._busy:
                    self._idle_since = time.monotonic()
                    self._idle.notify_all()

    def _wait_until_idle(self) -> None:
        """Until no request has been ranked for IDLE_GAP_S."""
        with self._idle:
            while not self._stop:
                quiet_for = time.monotonic() - self._idle_since
                if self._busy == 0 and quiet_for >= IDLE_GAP_S:
                    return
                self._idle.wait(IDLE_GAP_S - quiet_for if self._busy == 0 else 0.1)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            while self._queue and not self._stop:
                self._wait_until_idle()  # spare capacity only: requests go first
                jobs: list[ShadowJob] = []
                while self._queue and len(jobs) < BATCH:
                    job = self._queue.popleft()
                    if time.monotonic() - job.queued_at > MAX_AGE_S or (jobs and job.shadow is not jobs[0].shadow):
                        self.dropped += 1  # too old, or for a shadow that has just been replaced
                        continue
                    jobs.append(job)
                if not jobs:
                    continue
                try:
                    self._score(jobs)
                except Exception as exc:  # a failing shadow is reported, and never reaches a response
                    self.dropped += len(jobs)
                    get_logger("ranker").warning("shadow scoring failed", shadow=jobs[0].shadow.key, error=str(exc))
                with self._progress:
                    self._progress.notify_all()

    def _score(self, jobs: list[ShadowJob]) -> None:
        runs = [Job(j.user_part, j.context_part, j.ids, j.cross, np.empty(len(j.ids), np.float32),
                    np.empty((len(j.ids), len(HEADS)), np.float32), 0.0) for j in jobs]
        jobs[0].shadow.quiet_batcher.run_now(runs)
        for job, run in zip(jobs, runs):
            pair = (job.answered_by, job.shadow.key)
            if pair != self.pair:  # a new comparison: the figures start again
                self.pair, self.compared, self.dropped, self._sums = pair, 0, 0, np.zeros(3)
            scores = run.scores
            self._sums += (spearman(job.scores, scores), overlap_at(20, job.scores, scores),
                           float(scores.mean() - job.scores.mean()) if len(scores) else 0.0)
            self.compared += 1


class ShadowMetricsCollector:
    """Prometheus: the shadow's comparison figures, labelled by the two versions."""

    def __init__(self, scorer: ShadowScorer) -> None:
        self.scorer = scorer

    def collect(self):
        figures = self.scorer.figures()
        labels = ["primary", "shadow"]
        values = [figures.primary, figures.shadow]
        for name, help_text, value in (
                ("feedserve_shadow_spearman", "mean rank correlation of shadow and answering scores", figures.spearman),
                ("feedserve_shadow_overlap_at_20", "mean share of the top 20 both versions agree on", figures.overlap_at_20),
                ("feedserve_shadow_score_shift", "mean shadow score minus answering score", figures.score_shift)):
            gauge = GaugeMetricFamily(name, help_text, labels=labels)
            gauge.add_metric(values, value)
            yield gauge
        compared = CounterMetricFamily("feedserve_shadow_compared", "requests the shadow scored", labels=labels)
        compared.add_metric(values, figures.compared)
        yield compared
        dropped = CounterMetricFamily("feedserve_shadow_dropped", "sampled requests let go for want of spare capacity",
                                      labels=labels)
        dropped.add_metric(values, figures.dropped)
        yield dropped

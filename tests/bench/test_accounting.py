"""The load benchmark's accounting: a degraded answer is never counted as a served feed."""

from __future__ import annotations

import math

from bench.accounting import DEGRADED, FULL, Tally, outcome_of


def test_degraded_answers_and_errors_are_never_served_feeds() -> None:
    """Of 100 answers, 90 full, 8 degraded and 2 failed: 90 are served, the degraded share is 10%, and only the full
    answers' latencies enter the percentiles (the fast degraded fallbacks cannot flatter them)."""
    tally = Tally(seconds=2.0)
    for _ in range(90):
        tally.record(outcome_of(False), 40.0)
    for _ in range(8):
        tally.record(outcome_of(True), 1.0)
    tally.record(outcome_of(None, "DEADLINE_EXCEEDED"), 1000.0)
    tally.record(outcome_of(None, "RESOURCE_EXHAUSTED"), 0.5)
    assert tally.answered == 100 and tally.served == 90
    assert tally.outcomes[DEGRADED] == 8 and tally.outcomes[FULL] == 90
    assert math.isclose(tally.degraded_share, 0.10)
    assert tally.served_rps == 45.0
    assert tally.percentiles() == (40.0, 40.0)


def test_a_rate_is_sustained_only_with_99_percent_full_answers_within_the_tail_limit() -> None:
    """All-degraded answers in 1 ms do not sustain a rate; 99% full within 50 ms do; 98% full do not; a P99 over the
    limit does not."""
    fast_but_degraded = Tally(seconds=1.0)
    for _ in range(100):
        fast_but_degraded.record(DEGRADED, 1.0)
    assert not fast_but_degraded.sustained() and math.isnan(fast_but_degraded.percentiles()[0])

    def tally(full: int, degraded: int, latency: float) -> Tally:
        t = Tally(seconds=1.0)
        for _ in range(full):
            t.record(FULL, latency)
        for _ in range(degraded):
            t.record(DEGRADED, 1.0)
        return t

    assert tally(99, 1, 30.0).sustained()
    assert not tally(98, 2, 30.0).sustained()
    assert not tally(100, 0, 60.0).sustained()


def test_merged_blocks_keep_every_outcome() -> None:
    """Blocks merged for a configuration add their seconds, outcomes and full latencies."""
    a, b = Tally(seconds=1.0), Tally(seconds=3.0)
    a.record(FULL, 10.0)
    b.record(DEGRADED, 2.0)
    b.record(FULL, 20.0)
    a.merge(b)
    assert a.seconds == 4.0 and a.served == 2 and a.answered == 3 and a.full_ms == [10.0, 20.0]

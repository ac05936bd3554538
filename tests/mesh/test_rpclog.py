"""The RPC log: a flood of quota refusals is logged at a bounded rate, each logged line saying how many it left
out, while the metrics count every refusal."""

from __future__ import annotations

from mesh.rpclog import _RefusalLines


def test_a_flood_of_refusals_is_logged_ten_lines_a_second_with_the_count_left_out() -> None:
    """1,000 refusals within one second: 10 lines; the first line a second later says 990 were left out."""
    now = [100.0]
    lines = _RefusalLines(10.0, clock=lambda: now[0])
    taken = [lines.take() for _ in range(1_000)]
    assert [t for t in taken if t is not None] == [0] * 10
    now[0] += 1.0
    assert lines.take() == 990
    assert lines.take() == 0  # the count starts again from the line that reported it

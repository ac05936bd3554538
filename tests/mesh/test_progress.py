"""Progress output for long CLI work: a step says when it begins, keeps saying so while it runs, and stops when done."""

from __future__ import annotations

import io
import threading

from mesh.progress import Progress, working


class _Lines(io.StringIO):
    """A log that tells a waiting test each time a line arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0
        self.arrived = threading.Condition()

    def write(self, text: str) -> int:
        with self.arrived:
            self.lines += text.count("\n")
            self.arrived.notify_all()
        return super().write(text)


def test_a_bar_draws_when_it_begins_and_ticks_while_no_step_completes() -> None:
    """Off a terminal a bar writes its first line at once, then more lines while its only step is still running
    (a slow step is not silence), and a last line at 100%."""
    log = _Lines()
    progress = Progress("fitting", 1, stream=log, tick_s=0.01)
    with log.arrived:
        assert log.arrived.wait_for(lambda: log.lines >= 3, timeout=30)
    assert log.getvalue().splitlines()[0].startswith("fitting [")
    progress.advance(note="done")
    assert log.getvalue().splitlines()[-1].split()[2] == "100%"


def test_a_finished_bar_stops_ticking() -> None:
    """Once complete, a bar writes nothing more: its ticker has ended."""
    log = _Lines()
    progress = Progress("counting", 2, stream=log, tick_s=0.01)
    progress.advance(2)
    ticker = [t for t in threading.enumerate() if t.name == "progress-tick"]
    for thread in ticker:
        thread.join(timeout=30)
    written = log.getvalue()
    assert not any(t.is_alive() for t in ticker)
    assert log.getvalue() == written and written.count("\n") == 2


def test_working_wraps_one_uncounted_step_and_reports_it_done() -> None:
    """`working` draws its label at 0% on entry and at 100% on a normal exit; an error leaves it unfinished."""
    log = _Lines()
    with working("exporting", stream=log):
        assert "  0%" in log.getvalue()
    assert log.getvalue().splitlines()[-1].split()[2] == "100%"
    failed = _Lines()
    try:
        with working("exporting", stream=failed):
            raise ValueError("broken")
    except ValueError:
        pass
    assert "100%" not in failed.getvalue()

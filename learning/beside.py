"""Work run beside the caller's own, in a spawned child process: its notes and its result come back over a pipe, and
its failure is raised in the caller, naming the work."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from errors import Internal

__all__ = ["Beside", "caller_threads"]

NICE = 19


def caller_threads() -> int:
    """Threads the caller's own parallel work takes while a one-thread child runs beside it: a core fewer."""
    return max((os.cpu_count() or 1) - 1, 1)


def _run(send: Connection, target: Callable[..., Any], args: tuple[Any, ...], nice: int) -> None:
    try:
        os.nice(nice)
        result = target(lambda *note: send.send(("note", note)), *args)
    except BaseException:  # noqa: BLE001 - whatever ended the work is the caller's to raise
        send.send(("failed", traceback.format_exc()))
    else:
        send.send(("result", result))
    finally:
        send.close()


class Beside:
    """One call of `target(tell, *args)` in a spawned child process (spawned, not forked: the caller's OpenMP and
    BLAS threads do not survive a fork). `tell(*note)` sends a note back; `result` hands each note on and returns
    what the call returned. `target` and `args` must pickle; the child is killed with the caller.

    The child runs at `nice` (default 19, the lowest priority): the caller's own work keeps every core it can use,
    and the child takes the time it leaves idle. At equal priority a child on one of two cores made the caller's
    two-thread phases (PyTorch, ONNX Runtime) wait at every parallel step for a thread the child had displaced:
    training the ranker beside GRU4Rec took 410 s instead of 154 s."""

    def __init__(self, name: str, target: Callable[..., Any], *args: Any, nice: int = NICE) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_run, args=(send, target, args, nice), name=name, daemon=True)
        self._process.start()
        send.close()  # the child holds the only sending end: its exit ends the pipe
        self._notes: list[tuple[Any, ...]] = []  # read by `done`, not yet handed on
        self._ending: tuple[str, Any] | None = None  # ("result" or "failed", value), once read

    def _read(self) -> None:
        """Read one message (waiting for it); the end of the pipe is read as a failure."""
        try:
            kind, value = self._receive.recv()
        except EOFError:
            self._process.join()
            kind, value = "ended", self._process.exitcode
        if kind == "note":
            self._notes.append(value)
        else:
            self._ending = (kind, value)

    def done(self) -> bool:
        """Whether the call has ended (its result is in), without waiting."""
        while self._ending is None and self._receive.poll():
            self._read()
        return self._ending is not None

    def result(self, on_note: Callable[[tuple[Any, ...]], None] = lambda note: None) -> Any:
        """Wait for the call's result, handing on each note as it comes. Raises Internal, naming the work, if the call
        raised (with its traceback) or its process ended without a result (killed, out of memory)."""
        while True:
            while self._notes:
                on_note(self._notes.pop(0))
            if self._ending is not None:
                break
            self._read()
        kind, value = self._ending
        self._process.join()
        if kind == "ended":
            raise Internal(f"{self.name}: its process ended without a result (exit code {value})")
        if kind == "failed":
            raise Internal(f"{self.name} failed in its process:\n{value}")
        return value

    def close(self) -> None:
        """Stop the child if it still runs (the caller no longer wants its result)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receive.close()

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

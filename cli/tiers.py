"""What generation needs, prepared beside a first run: `feedserve tiers` as a lowest-priority child process, waited
for only before the generator starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from generator.llm_import import REAL_TIER
from generator.training import FORMAT as TIER_FORMAT
from generator.training import TIERS
from mesh.progress import Progress

__all__ = ["BackgroundTiers", "tiers_installed"]


def tiers_installed(home: Path, real_tier: str) -> bool:
    """Whether HOME holds every generation tier and SmolLM2 in `real_tier` (unless none)."""
    wanted = [home / "generator" / f"{name}-v{TIER_FORMAT}" for name in TIERS]
    if real_tier != "none":
        wanted.append(home / "generator" / f"{REAL_TIER}-{real_tier}")
    return all((path / "manifest.json").exists() for path in wanted)


class BackgroundTiers:
    """`feedserve tiers` running as a child at nice 19 and SCHED_IDLE, its output in HOME/logs/tiers.log."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    @classmethod
    def start(cls, home: Path, real_tier: str, stream: TextIO) -> BackgroundTiers | None:
        """Start preparing what HOME lacks; None when everything is installed already."""
        if tiers_installed(home, real_tier):
            return None
        log = home / "logs" / "tiers.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "cli", "tiers", "--home", str(home), "--real-tier",
                                        real_tier], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:  # the lowest priority there is: it runs on what the first run leaves idle (set before it starts threads)
            os.setpriority(os.PRIO_PROCESS, process.pid, 19)
            os.sched_setscheduler(process.pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # a sandbox may refuse; it then competes at the priority it has
        print(f"preparing the generation tiers (SmolLM2-135M-Instruct, {real_tier}) in the background at the lowest "
              f"priority (log: {log})", file=stream)
        return cls(process, log)

    def wait(self, stream: TextIO) -> None:
        """Until the child is done; raises RuntimeError with its log's tail if it failed."""
        if self.process.poll() is None:
            progress = Progress("waiting for the generation tiers", 1, stream=stream)
            try:
                self.process.wait()
            finally:
                progress.close()
            progress.advance()
        if self.process.returncode != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"preparing the generation tiers failed (exit {self.process.returncode}); "
                               f"{self.log}:\n{tail}")

    def stop(self) -> None:
        """End the child if it still runs (the stack is stopping)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

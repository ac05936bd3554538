"""The C core's own tests, built plain and with -fsanitize=address,undefined, then run case by case."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"
SOURCES = [NATIVE / "tests" / "test_ring.c", NATIVE / "fs_ring.c", NATIVE / "fs_msg.c"]
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]


def _build(out: Path, flags: list[str]) -> Path:
    subprocess.run(["cc", "-std=c11", *WARNINGS, *flags, *map(str, SOURCES), "-o", str(out), "-lpthread", "-lrt"],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("c") / "test_ring", ["-O2"])


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("c") / "test_ring_asan", SANITIZE)


def _run(binary: Path, *args: str) -> str:
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300,
                            env={"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


CASES = ["round_trip", "backpressure", "peer_death", "reap", "validator", "layout", "reap_busy", "release"]
# The racing fuzz: 100,000 cases in `make test`, 1,000,000 in `make fuzz` (FEEDSERVE_FUZZ_CASES).
FUZZ_CASES = int(os.environ.get("FEEDSERVE_FUZZ_CASES", "100000"))


@pytest.mark.parametrize("case", CASES)
def test_case_passes_under_address_and_undefined_sanitizers(sanitized: Path, case: str) -> None:
    """Round trip, backpressure/abandon, peer death, reaping (also of a slot a dispatcher holds), the hostile-header
    validator, a wrapped or rewritten ring layout, and foreign releases are clean under ASan/UBSan."""
    assert "ok" in _run(sanitized, case)


@pytest.mark.parametrize("case", CASES)
def test_case_passes_optimised(plain: Path, case: str) -> None:
    assert "ok" in _run(plain, case)


def test_racing_fuzz_reads_one_snapshot_under_sanitizers(sanitized: Path) -> None:
    """A thread rewrites the message (tensor_count up to 65,535, ndim, unterminated names, random bytes)
    while the reader snapshots, validates and uses it: what it uses always keeps the validator's promises."""
    assert f"race: ok ({FUZZ_CASES} cases" in _run(sanitized, "race", str(FUZZ_CASES))


def test_multiprocess_stress_loses_and_duplicates_nothing_under_sanitizers(sanitized: Path) -> None:
    """4 client processes, 40,000 messages, every one answered exactly once, with ASan/UBSan on."""
    assert "40000 messages from 4 processes, none lost or duplicated" in _run(sanitized, "stress", "40000", "4")


def test_one_million_messages_from_several_processes_arrive_exactly_once(plain: Path) -> None:
    """The stress test of issue 3: 1,000,000 messages from 4 processes, none lost or duplicated."""
    assert "1000000 messages from 4 processes, none lost or duplicated" in _run(plain, "stress", "1000000", "4")

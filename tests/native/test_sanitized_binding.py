"""The Python binding itself, built with ASan/UBSan and preloaded: hostile ring slots and the cuckoo table."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[2] / "native"


def test_binding_decodes_hostile_slots_cleanly_under_sanitizers(tmp_path: Path) -> None:
    """20,000 mutated headers through Ring.decode, then 50,000 decodes (1,000,000 in `make fuzz`) racing a process
    that rewrites the slot: ValueError or a valid result, never an ASan/UBSan report."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    module = tmp_path / f"_native{suffix}"
    subprocess.run(
        ["cc", "-std=c11", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", f"-I{sysconfig.get_paths()['include']}",
         *(str(NATIVE / f) for f in ("_native.c", "py_ring.c", "py_cuckoo.c", "fs_ring.c", "fs_msg.c", "fs_cuckoo.c")), "-o", str(module),
         "-lpthread", "-lrt", "-lm"],
        check=True, capture_output=True, text=True,
    )
    libasan = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "LD_PRELOAD": libasan, "PYTHONPATH": str(tmp_path),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("sanitized_binding.py"))],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sanitized binding: ok" in result.stdout
    assert "sanitized cuckoo: ok" in result.stdout
    cases = os.environ.get("FEEDSERVE_FUZZ_CASES", "50000")
    assert f"sanitized race: ok ({cases} cases" in result.stdout  # decodes raced by a rewriting process

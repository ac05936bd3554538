"""Every service runs BLAS on one thread: a pool of its own would busy-wait beside the service's request threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json
import numpy
from threadpoolctl import threadpool_info
from mesh.grpc_server import single_blas_thread
def blas():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
before = blas()
single_blas_thread()
print(json.dumps([before, blas()]))
"""


def test_single_blas_thread_leaves_numpy_blas_one_thread() -> None:
    """After single_blas_thread (run_service calls it before a service builds anything), numpy's BLAS reports one
    thread where it would otherwise use two (checked in a child process: the limit is process-wide)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    ran = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert ran.returncode == 0, ran.stderr
    before, after = json.loads(ran.stdout)
    assert before and all(threads == 2 for threads in before), ran.stdout
    assert after and all(threads == 1 for threads in after), ran.stdout

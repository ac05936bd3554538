"""A wheel, not the editable checkout: it is built without warnings, it carries the data files feedserve reads at
run time (schema presets, the default generation tiers, held-out text, the native extension, the contracts), and,
installed on its own, it serves them from the install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(out: Path) -> tuple[Path, str]:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("feedserve-*.whl")), built.stdout + built.stderr


def test_the_wheel_carries_every_data_file_and_builds_without_warnings(tmp_path: Path) -> None:
    """setuptools warns of no package left out; the presets, tiers, held-out text, the native module and the
    generated contracts are in the wheel; the tests and benchmarks are not."""
    wheel, log = _build(tmp_path / "wheel")
    assert "is absent from the `packages` configuration" not in log, log[-3000:]
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("catalog/schemas/simulator.toml", "catalog/schemas/movielens.toml", "generator/data/heldout.txt",
                     "generator/tiers/small-v1/model.onnx", "generator/tiers/large-v1/tokenizer.json",
                     "feedserve/v1/gateway_pb2.py", "feedserve/v1/gateway.proto"):
        assert expected in names, expected
    assert any(name.startswith("native/_native.") and name.endswith(".so") for name in names)
    assert not any(name.startswith(("tests/", "bench/")) for name in names)

    # installed alone (its dependencies from this environment), run from outside the checkout
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # a fresh home gets the shipped tiers copied from the install (a missing one would be trained: minutes)
    probe = ("import sys, pathlib, catalog, native\n"
             "from catalog import preset_schema\n"
             "from generator.training import ensure_tiers\n"
             "print(catalog.__file__)\n"
             "print(preset_schema('simulator').name)\n"
             "print(sorted(ensure_tiers(pathlib.Path(sys.argv[1]), shipped=True)))\n")
    ran = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert ran.returncode == 0, ran.stderr[-3000:]
    where, schema, tiers = ran.stdout.splitlines()[:3]
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    assert schema == "simulator" and "small" in tiers and "large" in tiers

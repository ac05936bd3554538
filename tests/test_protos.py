"""The committed generated code is exactly what the .proto files generate."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    """Regenerating into a scratch dir gives byte-identical files: run `make protos` if this fails."""
    sources = sorted((PROTOS / "feedserve" / "v1").glob("*.proto"))
    scratch = tmp_path / "protos"
    shutil.copytree(PROTOS, scratch, ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{scratch}", f"--python_out={scratch}",
         f"--pyi_out={scratch}", f"--grpc_python_out={scratch}",
         *(str(scratch / "feedserve" / "v1" / s.name) for s in sources)],
        check=True,
    )
    generated = sorted(p.name for p in (scratch / "feedserve" / "v1").glob("*_pb2*.py*"))
    committed = sorted(p.name for p in (PROTOS / "feedserve" / "v1").glob("*_pb2*.py*"))
    assert generated == committed
    _, mismatch, errors = filecmp.cmpfiles(scratch / "feedserve" / "v1", PROTOS / "feedserve" / "v1", generated, shallow=False)
    assert mismatch == [] and errors == [], f"stale generated code, run `make protos`: {mismatch + errors}"


def test_every_service_contract_exists() -> None:
    """The four services expose the RPCs the design names."""
    from feedserve.v1 import gateway_pb2, generator_pb2, paramserver_pb2, ranker_pb2

    def methods(module, service: str) -> set[str]:
        return {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}

    assert methods(gateway_pb2, "Gateway") == {"Feed", "Interact", "Generate"}
    assert methods(ranker_pb2, "Ranker") == {"Rank", "Models"}
    assert methods(paramserver_pb2, "ParamServer") == {"Lookup", "Upsert", "Drift", "Remove", "Snapshot"}
    assert methods(generator_pb2, "Generator") == {"Generate"}
    streaming = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name["Generate"]
    assert streaming.server_streaming

"""The ghz configs call methods that exist, with fields that exist, and find their proto files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from feedserve.v1 import gateway_pb2, generator_pb2

GHZ = Path(__file__).resolve().parent.parent / "bench" / "ghz"


@pytest.mark.parametrize("name", ["feed.json", "interact.json", "generate.json"])
def test_ghz_config_matches_the_contract(name: str) -> None:
    """The call names a Gateway method and its data (templates filled in) parses as that method's request."""
    config = json.loads((GHZ / name).read_text())
    package_service, method = config["call"].rsplit(".", 1)
    service = gateway_pb2.DESCRIPTOR.services_by_name[package_service.rsplit(".", 1)[1]]
    descriptor = service.methods_by_name[method].input_type
    assert (GHZ / config["proto"]).resolve().exists()
    request_class = {"FeedRequest": gateway_pb2.FeedRequest, "InteractRequest": gateway_pb2.InteractRequest,
                     "GenerateRequest": generator_pb2.GenerateRequest}[descriptor.name]
    data = {k: (1 if isinstance(v, str) and v.startswith("{{") else v) for k, v in config["data"].items()}
    json_format.ParseDict(data, request_class())


@pytest.mark.parametrize("name", ["feed.json", "interact.json", "generate.json"])
def test_ghz_configs_speak_tls_and_the_wrapper_sends_the_ca_and_the_key(name: str) -> None:
    """No config asks for plaintext; bench/ghz/ghz.sh adds the stack's CA and its API key as metadata."""
    config = json.loads((GHZ / name).read_text())
    assert not config.get("insecure") and config["cname"] == "gateway"
    wrapper = (GHZ / "ghz.sh").read_text()
    assert '--cacert "$home/tls/ca.pem"' in wrapper and 'authorization' in wrapper and 'Bearer $key' in wrapper

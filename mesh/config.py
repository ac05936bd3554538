"""Addresses, ports and paths of the stack, read from the environment with sane defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_PORTS", "StackConfig", "default_home", "transport_mode", "TRANSPORTS"]

DEFAULT_PORTS = {"gateway": 50051, "paramserver": 50052, "ranker": 50053, "generator": 50054}


def default_home() -> Path:
    """Where the synthetic world and models are cached: $FEEDSERVE_HOME or ~/.cache/feedserve."""
    env = os.environ.get("FEEDSERVE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "feedserve"


@dataclass(frozen=True)
class StackConfig:
    """Where each service listens; one host unless the addresses say otherwise."""

    host: str = "127.0.0.1"
    gateway_port: int = DEFAULT_PORTS["gateway"]
    paramserver_port: int = DEFAULT_PORTS["paramserver"]
    ranker_port: int = DEFAULT_PORTS["ranker"]
    generator_port: int = DEFAULT_PORTS["generator"]

    @property
    def gateway_address(self) -> str:
        return f"{self.host}:{self.gateway_port}"

    @property
    def paramserver_address(self) -> str:
        return f"{self.host}:{self.paramserver_port}"

    @property
    def ranker_address(self) -> str:
        return f"{self.host}:{self.ranker_port}"

    @property
    def generator_address(self) -> str:
        return f"{self.host}:{self.generator_port}"


TRANSPORTS = ("auto", "grpc")


def transport_mode() -> str:
    """$FEEDSERVE_TRANSPORT: "auto" uses a colocated service's ring when it has one, "grpc" never does."""
    mode = os.environ.get("FEEDSERVE_TRANSPORT", "auto")
    if mode not in TRANSPORTS:
        raise ValueError(f"FEEDSERVE_TRANSPORT is expected to be one of {TRANSPORTS}, got {mode!r}")
    return mode

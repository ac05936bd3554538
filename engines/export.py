"""Exporting PyTorch modules to ONNX the way every graph of this project is exported."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["legacy_export"]


@contextmanager
def legacy_export() -> Iterator[None]:
    """Quiet the TorchScript exporter's deprecation and tracer notices. It is chosen on purpose: the newer
    exporter needs onnxscript, a dependency this project does not otherwise carry, for the same graphs."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield

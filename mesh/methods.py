"""One handler shape for every transport: (request, tensors, outputs) -> response, synchronous."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message

from feedserve.v1 import common_pb2
from mesh.tensors import from_tensor, to_tensor

__all__ = ["Outputs", "HeapOutputs", "Handler", "Method", "methods_of", "tensor_fields", "split", "join", "serve_unary",
           "wrap_handler"]


def wrap_handler(handler: grpc.RpcMethodHandler, unary: Callable[[Callable], Callable],
                 stream: Callable[[Callable], Callable],
                 deserializer: Callable[[Callable | None], Callable | None] = lambda d: d) -> grpc.RpcMethodHandler | None:
    """The same handler with its behaviour wrapped (what a server interceptor returns): `unary` wraps a
    unary-unary behaviour, `stream` a unary-stream one, `deserializer` the request's parser. None for the
    client-streaming kinds, which feedserve does not serve."""
    parse = deserializer(handler.request_deserializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), request_deserializer=parse,
                                                   response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), request_deserializer=parse,
                                                    response_serializer=handler.response_serializer)
    return None

Tensors = Mapping[str, np.ndarray]


class Outputs(Protocol):
    """Where a handler puts its output tensors: the response slot on the ring, the heap on gRPC."""

    def empty(self, field: str, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised array the handler fills; it becomes the response's `field` tensor."""
        ...


class HeapOutputs:
    """Outputs in ordinary memory, serialised into the response message afterwards."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def empty(self, field: str, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.ndarray:
        array = np.empty(shape, dtype=dtype)
        self.arrays[field] = array
        return array


# A service's core for one method. It reads tensors from `tensors`, never from the request's Tensor fields.
Handler = Callable[[Message, Tensors, Outputs], Message]


@dataclass(frozen=True)
class Method:
    """One unary method of a service, as both transports see it."""

    path: str  # /feedserve.v1.Ranker/Rank
    ident: int  # the ring's method id: position in the service definition
    request_type: type[Message]
    response_type: type[Message]


def methods_of(service: ServiceDescriptor) -> dict[str, Method]:
    """Every unary method of `service`, keyed by its short name."""
    methods = {}
    for ident, method in enumerate(service.methods):
        if method.client_streaming or method.server_streaming:
            continue  # streams travel over gRPC only
        methods[method.name] = Method(
            path=f"/{service.full_name}/{method.name}",
            ident=ident,
            request_type=message_factory.GetMessageClass(method.input_type),
            response_type=message_factory.GetMessageClass(method.output_type),
        )
    return methods


_TENSOR = common_pb2.Tensor.DESCRIPTOR.full_name


def tensor_fields(descriptor: Descriptor) -> tuple[str, ...]:
    """The top-level fields of a message that hold a Tensor: these travel out of band on the ring."""
    return tuple(
        f.name for f in descriptor.fields if f.message_type is not None and f.message_type.full_name == _TENSOR
    )


def split(message: Message) -> dict[str, np.ndarray]:
    """The tensors of a message received over gRPC, as read-only views of its bytes."""
    return {name: from_tensor(getattr(message, name), name) for name in tensor_fields(message.DESCRIPTOR) if message.HasField(name)}


def join(message: Message, tensors: Tensors) -> Message:
    """Put tensors into their Tensor fields (one copy each), as gRPC carries them."""
    for name, array in tensors.items():
        getattr(message, name).CopyFrom(to_tensor(array, name))
    return message


def serve_unary(handler: Handler, request: Message) -> Message:
    """Run a handler for a gRPC call: tensors from the message, outputs back into the message."""
    outputs = HeapOutputs()
    response = handler(request, split(request), outputs)
    return join(response, outputs.arrays)

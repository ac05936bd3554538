from feedserve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("context", "prompt", "max_tokens", "model", "user_id", "stop", "banned_words", "pattern", "allowed_words", "item_ids")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    BANNED_WORDS_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_WORDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    prompt: str
    max_tokens: int
    model: str
    user_id: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    banned_words: _containers.RepeatedScalarFieldContainer[str]
    pattern: str
    allowed_words: _containers.RepeatedScalarFieldContainer[str]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., prompt: _Optional[str] = ..., max_tokens: _Optional[int] = ..., model: _Optional[str] = ..., user_id: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., banned_words: _Optional[_Iterable[str]] = ..., pattern: _Optional[str] = ..., allowed_words: _Optional[_Iterable[str]] = ..., item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("tokens_in", "tokens_out", "models", "ttft_ms", "inter_token_ms", "cost", "cache", "escalated", "compute_seconds", "mean_logprob", "token_cost")
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    INTER_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COST_FIELD_NUMBER: _ClassVar[int]
    tokens_in: int
    tokens_out: int
    models: _containers.RepeatedScalarFieldContainer[str]
    ttft_ms: float
    inter_token_ms: float
    cost: float
    cache: str
    escalated: bool
    compute_seconds: float
    mean_logprob: float
    token_cost: float
    def __init__(self, tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., ttft_ms: _Optional[float] = ..., inter_token_ms: _Optional[float] = ..., cost: _Optional[float] = ..., cache: _Optional[str] = ..., escalated: _Optional[bool] = ..., compute_seconds: _Optional[float] = ..., mean_logprob: _Optional[float] = ..., token_cost: _Optional[float] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("text", "stage", "usage", "final", "hops")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    text: str
    stage: int
    usage: Usage
    final: bool
    hops: _containers.RepeatedCompositeFieldContainer[_common_pb2.HopTiming]
    def __init__(self, text: _Optional[str] = ..., stage: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., final: _Optional[bool] = ..., hops: _Optional[_Iterable[_Union[_common_pb2.HopTiming, _Mapping]]] = ...) -> None: ...

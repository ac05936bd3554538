"""Generate end to end through real gRPC servers: gateway -> generator (-> paramserver for user interests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2, paramserver_pb2
from gateway.keys import KeyStore
from generator.decoding import LanguageModel
from generator.residency import ModelSpec
from mesh.methods import serve_unary
from mesh.tensors import to_tensor
from tests.stack import generation_stack

TAG = common_pb2.RequestContext(feature_tag="post-writer")


async def _collect(stub: gateway_pb2_grpc.GatewayStub, request: generator_pb2.GenerateRequest, key: str = ""):
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    chunks = [chunk async for chunk in stub.Generate(request, timeout=30, metadata=metadata)]
    assert chunks[-1].final and not any(c.final for c in chunks[:-1])
    return "".join(c.text for c in chunks), chunks[-1]


class _GatedDecoder:
    """The real decoder, paused at its third step until the test opens the gate."""

    def __init__(self, decoder, gate: threading.Event) -> None:
        self.decoder, self.gate, self.steps = decoder, gate, 0

    def __getattr__(self, name: str):
        return getattr(self.decoder, name)

    def step(self, token, state):
        self.steps += 1
        if self.steps == 3:
            self.gate.wait(30)
        return self.decoder.step(token, state)


@dataclass(frozen=True)
class _GatedSpec(ModelSpec):
    gate: threading.Event = threading.Event()

    def load(self) -> LanguageModel:
        model = super().load()
        model.decoder = _GatedDecoder(model.decoder, self.gate)
        return model


class TestStreaming:
    def test_the_first_chunk_arrives_before_generation_ends(self, generation_home, specs, catalog, tmp_path, run) -> None:
        """The client holds the first chunk while the model is paused mid-generation: chunks stream as tokens
        are produced, not after. Opening the gate lets the same stream finish."""
        gate = threading.Event()
        gated = {name: _GatedSpec(**{**spec.__dict__, "gate": gate}) for name, spec in specs.items()}

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path, gated) as stack:
                # the pattern keeps even the tiny test tier writing for at least seven words
                request = generator_pb2.GenerateRequest(prompt="Write a headline about music.", max_tokens=40,
                                                        model="small", pattern="[a-z]+( [a-z]+){6,9}", context=TAG)
                stream = stack.gateway.Generate(request, timeout=30).__aiter__()
                first = await stream.__anext__()
                assert not first.final and first.text
                assert not gate.is_set()  # the model is still paused inside this very generation
                gate.set()
                rest = [chunk async for chunk in stream]
                assert rest[-1].final and rest[-1].usage.tokens_out >= 3

        try:
            run(body())
        finally:
            gate.set()

    def test_past_the_in_flight_limit_a_generation_is_refused_not_queued(self, generation_home, specs, catalog,
                                                                         tmp_path, run) -> None:
        """With one generation paused mid-stream and a limit of one, the next gets RESOURCE_EXHAUSTED at once;
        when the first finishes, generation answers again."""
        gate = threading.Event()
        gated = {name: _GatedSpec(**{**spec.__dict__, "gate": gate}) for name, spec in specs.items()}

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path, gated) as stack:
                stack.generator.max_in_flight = 1
                held = generator_pb2.GenerateRequest(prompt="Write a headline about music.", max_tokens=40,
                                                     model="small", pattern="[a-z]+( [a-z]+){6,9}")
                stream = stack.gateway.Generate(held, timeout=30).__aiter__()
                await stream.__anext__()  # the first generation is now inside the model, paused
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _collect(stack.gateway, generator_pb2.GenerateRequest(prompt="Hello there.", max_tokens=8))
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "in flight" in caught.value.details()
                # a pattern is built and judged before a slot is asked for: a hostile one is refused as such
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _collect(stack.gateway, generator_pb2.GenerateRequest(
                        prompt="Hello there.", max_tokens=8, pattern="(a|b)*a(a|b){20}"))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith("pattern:")
                gate.set()
                assert [chunk async for chunk in stream][-1].final
                _, final = await _collect(stack.gateway, generator_pb2.GenerateRequest(prompt="Hello there.",
                                                                                       max_tokens=8))
                assert final.final

        try:
            run(body())
        finally:
            gate.set()

    def test_the_final_chunk_carries_usage_and_hops(self, generation_home, catalog, tmp_path, run) -> None:
        """Tokens in and out, the models, TTFT, inter-token time, cost, and both services' hops."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                text, final = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="Write a post about travel.", max_tokens=40, context=TAG))
                usage = final.usage
                assert usage.tokens_in > 0 and 0 < usage.tokens_out <= 40
                assert list(usage.models) == ["small", "large"]  # headline on small, body on large
                assert usage.ttft_ms > 0 and usage.inter_token_ms > 0 and usage.cost > usage.token_cost > 0
                assert {h.service for h in final.hops} == {"gateway", "generator"}
                assert "\n" in text  # headline, then body

        run(body())


class TestBadInput:
    @pytest.mark.parametrize("fields, field", [
        (dict(prompt="", max_tokens=10), "prompt"),
        (dict(prompt="   ", max_tokens=10), "prompt"),
        (dict(prompt="hi", max_tokens=0), "max_tokens"),
        (dict(prompt="hi", max_tokens=5000), "max_tokens"),
        (dict(prompt="hi", max_tokens=1000), "max_tokens"),  # within 1..1024, beyond the tiers' context
        (dict(prompt="hi", max_tokens=10, model="gpt-9"), "model"),
        (dict(prompt="hi", max_tokens=10, pattern="(unclosed"), "pattern"),
        (dict(prompt="hi", max_tokens=10, pattern="(a|b)*a(a|b){20}"), "pattern"),  # 2^21 states
        (dict(prompt="hi", max_tokens=10, pattern="((.{999}){999}){999}"), "pattern"),
        (dict(prompt="hi", max_tokens=10, banned_words=["two words"]), "banned_words"),
        (dict(prompt="hi", max_tokens=10, stop=[""]), "stop"),
        (dict(prompt="hi", max_tokens=10, context=common_pb2.RequestContext(feature_tag="t" * 65)), "context.feature_tag"),
    ])
    def test_bad_requests_get_invalid_argument_naming_the_field(self, generation_home, catalog, tmp_path, run,
                                                                fields: dict, field: str) -> None:
        """Through the gateway, before any chunk: INVALID_ARGUMENT whose message starts with the field."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _collect(stack.gateway, generator_pb2.GenerateRequest(**fields))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith(f"{field}:"), caught.value.details()
                assert stack.generator.pool.loads == 0  # nothing was loaded for it

        run(body())


class TestModesCachesAndCost:
    def test_emergency_mode_turns_generation_off_and_normal_turns_it_back_on(
            self, generation_home, catalog, tmp_path, run) -> None:
        """Forced emergency: UNAVAILABLE saying so. Back to automatic: generation answers again."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                request = generator_pb2.GenerateRequest(prompt="Write a headline about food.", max_tokens=12)
                await stack.admin.SetMode(gateway_pb2.SetModeRequest(mode=gateway_pb2.MODE_EMERGENCY))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _collect(stack.gateway, request)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "emergency" in caught.value.details()
                await stack.admin.SetMode(gateway_pb2.SetModeRequest(mode=gateway_pb2.MODE_UNSPECIFIED))
                _, final = await _collect(stack.gateway, request)
                assert final.usage.tokens_out > 0

        run(body())

    def test_a_repeat_is_an_exact_hit_and_a_paraphrase_a_semantic_hit(self, generation_home, catalog, tmp_path,
                                                                       run) -> None:
        """The second identical request is answered at the gateway, a reworded one by the generator's semantic
        cache; both replay the first answer without model tokens, and the generator sees only the second."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                first_text, first = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="How do I reset my password?", max_tokens=20))
                assert first.usage.cache == "" and first.usage.tokens_out > 0
                text, again = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="How do I reset my password?", max_tokens=20))
                assert (again.usage.cache, again.usage.tokens_out, text) == ("exact", 0, first_text)
                assert {h.service for h in again.hops} == {"gateway"}  # one hop
                text, reworded = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="How can I reset my password?", max_tokens=20))
                assert (reworded.usage.cache, text) == ("semantic", first_text)
                _, other = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="How can I reset my password?", max_tokens=21))
                assert other.usage.cache == ""  # another max_tokens is another request

        run(body())

    def test_no_answer_crosses_tenants_in_either_cache(self, generation_home, catalog, tmp_path, run) -> None:
        """acme's answer is not globex's: the same prompt and a paraphrase under globex's key miss both the
        gateway's exact cache and the generator's semantic cache, while acme's own repeat hits."""
        keys = KeyStore(tmp_path / "keys.db")
        _, acme = keys.create("acme")
        _, globex = keys.create("globex")
        ask = generator_pb2.GenerateRequest(prompt="How do I reset my password?", max_tokens=20)
        reworded = generator_pb2.GenerateRequest(prompt="How can I reset my password?", max_tokens=20)

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path, keys=keys) as stack:
                assert (await _collect(stack.gateway, ask, acme))[1].usage.cache == ""
                assert (await _collect(stack.gateway, ask, globex))[1].usage.cache == ""
                assert (await _collect(stack.gateway, reworded, globex))[1].usage.cache == "semantic"  # globex's own
                spoofed = generator_pb2.GenerateRequest(prompt="How can I reset my password?", max_tokens=20,
                                                        context=common_pb2.RequestContext(tenant="acme"))
                assert (await _collect(stack.gateway, ask, acme))[1].usage.cache == "exact"
                assert (await _collect(stack.gateway, spoofed, globex))[1].usage.cache == "exact"  # globex's, as globex

        run(body())
        keys.close()

    def test_an_interaction_drops_the_users_cached_answers(self, generation_home, catalog, tmp_path, run) -> None:
        """Interact moves the user's vector, so their cached post (about their top interest) is written afresh."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                user, item = int(catalog.user_ids[5]), 1
                request = generator_pb2.GenerateRequest(prompt="Write a post for me about my top interest.",
                                                        user_id=user, max_tokens=30)
                await _collect(stack.gateway, request)
                assert (await _collect(stack.gateway, request))[1].usage.cache == "exact"
                await stack.gateway.Interact(gateway_pb2.InteractRequest(
                    user_id=user, item_id=item, event=common_pb2.EVENT_TYPE_LIKE), timeout=10)
                assert (await _collect(stack.gateway, request))[1].usage.cache == ""  # neither cache answers

        run(body())

    def test_generation_cost_and_tokens_are_booked_to_the_feature_tag(self, generation_home, catalog, tmp_path,
                                                                      run) -> None:
        """GetCost (what `feedserve cost` prints) shows the tag's requests, tokens and cost."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                _, final = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="Write a headline about cars.", max_tokens=12, context=TAG))
                report = await stack.admin.GetCost(gateway_pb2.GetCostRequest(window_s=60))
                (row,) = [f for f in report.features if f.feature_tag == "post-writer"]
                assert row.requests == 1 and row.tokens == final.usage.tokens_in + final.usage.tokens_out
                assert row.cost == pytest.approx(final.usage.cost)

        run(body())


class TestEvidence:
    def test_their_top_interest_follows_the_users_current_vector_in_the_paramserver(
            self, generation_home, catalog, tmp_path, run) -> None:
        """"about my top interest" reads the user's vector from the paramserver on each request: the topic is
        the catalog's category whose embedding is nearest, and after the vector moves the next request sees the new one."""

        async def body() -> None:
            async with generation_stack(generation_home, catalog, tmp_path) as stack:
                user = int(catalog.user_ids[3])
                for category in (7, 12):
                    _upsert_user(stack.paramserver_core, user, stack.generator.centroids[category])
                    assert await stack.generator._topic(user, None) == stack.generator.topics[category]
                _, final = await _collect(stack.gateway, generator_pb2.GenerateRequest(
                    prompt="Write a post for me about my top interest, at most 30 words.", user_id=user,
                    max_tokens=60))
                assert "evidence" in {h.stage for h in final.hops}

        run(body())


def _upsert_user(core, user: int, vector: np.ndarray) -> None:
    request = paramserver_pb2.UpsertRequest(table=paramserver_pb2.TABLE_USER,
                                            keys=to_tensor(np.array([user], np.int64), "keys"),
                                            values=to_tensor(vector[None].astype(np.float32), "values"))
    serve_unary(core.upsert, request)

"""Issue 22, items 2-5: gateway/vllm_progress.py under load and abuse.

The handler's own rules run here against the vLLM stand-in on loopback, without the proxy (fast);
the items that depend on the proxy (its connection pool beside the probe, client disconnects) run
through the real proxy in tests/test_drill_abuse.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import litellm
import pytest
from aiohttp import web

from core.chain import VLLM_DEFAULT_MAX_NUM_SEQS, vllm_connections, vllm_max_num_seqs
from core.litellm_config import litellm_config
from core.names import PROGRESS_PROVIDER
from drill.runner import free_port
from drill.standins import OpenAIStandIn
from tests.test_failover_bench import progress_handler
from tests.test_fallback import settings_for
from tests.test_same_tier_retry import serve_chat

MODEL = "stand-in-model"


@pytest.fixture
def vllm():
    standin = OpenAIStandIn("vllm", MODEL, free_port(), tokens=8).start()
    yield standin
    standin.stop()


def deployment_params(**overrides) -> dict:
    """The vLLM deployment's litellm_params as the chain renders them, as LiteLLM hands them over."""
    params = litellm_config(settings_for())["model_list"][0]["litellm_params"]
    return {**params, "custom_llm_provider": PROGRESS_PROVIDER, **overrides}


def complete(
    standin: OpenAIStandIn, stream: bool = False, block_connect_for: float = 0.0, **request
) -> tuple[object, float]:
    """One call of the handler (as LiteLLM's custom provider path calls it); the result and seconds.
    `block_connect_for`: seconds the handler's event loop is blocked right after its first connect."""
    handler = progress_handler().handler
    params = deployment_params(**request.pop("litellm_params", {}))
    call = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "api_base": f"{standin.url}/v1",
        "api_key": "none",
        "optional_params": request,
        "litellm_params": params,
        "timeout": params["timeout"],
    }

    async def run():
        if not stream:
            return await handler.acompletion(**call)
        return [chunk async for chunk in handler.astreaming(**call)]

    started = time.monotonic()
    with asyncio.Runner(loop_factory=lambda: loop_blocked_after_first_connect(block_connect_for)) as runner:
        return runner.run(run()), time.monotonic() - started


def loop_blocked_after_first_connect(seconds: float) -> asyncio.AbstractEventLoop:
    """An event loop that blocks for `seconds` once, just after it issued its first connect (the
    kernel finishes a loopback connect at once; the loop learns of it only when it runs again)."""
    loop = asyncio.new_event_loop()
    if not seconds:
        return loop
    connect = loop.sock_connect

    async def connect_then_block(sock, address):
        connecting = asyncio.ensure_future(connect(sock, address))
        await asyncio.sleep(0)  # connect(2) issued
        loop.sock_connect = connect
        time.sleep(seconds)  # the point: a loop that cannot run
        return await connecting

    loop.sock_connect = connect_then_block
    return loop


# --- item 2: the pool is sized from what vLLM runs ----------------------------------------------------


def test_the_pool_to_vllm_holds_its_batch_and_queue_from_extra_args_or_vllms_default():
    assert vllm_max_num_seqs(()) == VLLM_DEFAULT_MAX_NUM_SEQS == 1024
    assert vllm_max_num_seqs(("--gpu-memory-utilization", "0.9", "--max-num-seqs", "64")) == 64
    assert vllm_max_num_seqs(("--max_num_seqs=32",)) == 32
    assert vllm_connections(("--max-num-seqs", "64")) == 128
    rendered = litellm_config(settings_for())["model_list"][0]["litellm_params"]
    assert rendered["max_connections"] == 2048  # far above httpx's default 100


def test_the_probe_and_counters_have_a_client_of_their_own():
    progress = progress_handler()

    async def clients():
        traffic = progress._sessions.get(150)
        try:
            return traffic.connector.limit, progress._probe_clients.get(progress.PROBE_CONNECTIONS)
        finally:
            await traffic.close()

    traffic_pool, probes = asyncio.run(clients())
    assert traffic_pool == 150
    assert probes._transport._pool._max_connections == progress.PROBE_CONNECTIONS


# --- item 4: every field vLLM produced, or a refusal up front -----------------------------------------


def test_n_choices_and_logprobs_come_back_as_vllm_produced_them(vllm):
    answer, _ = complete(vllm, n=2, logprobs=True)
    choices = answer.model_dump()["choices"]
    assert [choice["index"] for choice in choices] == [0, 1]
    assert choices[0]["message"]["content"] == "[vllm] c0w1 c0w2 c0w3 c0w4 c0w5 c0w6 c0w7"
    assert choices[1]["message"]["content"] == "[vllm] c1w1 c1w2 c1w3 c1w4 c1w5 c1w6 c1w7"
    tokens = [entry["token"] for entry in choices[1]["logprobs"]["content"]]
    assert tokens == ["[vllm]", "c1w1", "c1w2", "c1w3", "c1w4", "c1w5", "c1w6", "c1w7"]
    assert choices[1]["logprobs"]["content"][0]["logprob"] == -0.01


def test_one_choice_without_logprobs_is_unchanged(vllm):
    answer, _ = complete(vllm)
    choices = answer.model_dump()["choices"]
    assert len(choices) == 1 and choices[0]["message"]["content"] == "[vllm] w1 w2 w3 w4 w5 w6 w7"
    assert choices[0].get("logprobs") is None


@pytest.mark.parametrize("field", [{"n": 2}, {"logprobs": True}])
def test_what_a_stream_cannot_carry_is_refused_before_vllm_is_asked(vllm, field):
    with pytest.raises(litellm.BadRequestError, match=next(iter(field))):
        complete(vllm, stream=True, **field)
    assert vllm.served["client-received"] == 0


# --- item 5: the whole-answer cap holds while tokens flow --------------------------------------------


def test_the_whole_answer_cap_holds_while_tokens_flow(vllm):
    # A token every 0.1 s: never quiet for the quarter second after which the quiet checks look.
    vllm.set_mode("slow", delay=15, tokens=150)
    started = time.monotonic()
    # Not a litellm.Timeout: a long answer is not a hung GPU, so vLLM is not cooled down for it.
    with pytest.raises(litellm.APIConnectionError, match="whole-answer cap of 5 s") as capped:
        complete(vllm, litellm_params={"timeout": 5})
    took = time.monotonic() - started
    assert not isinstance(capped.value, litellm.Timeout)  # a Timeout is an APIConnectionError too
    print(f"\n[cap] vllm.timeoutSeconds 5, a 15 s answer with tokens flowing: given up after {took:.2f} s")
    assert 5 <= took < 6


# --- a blocked event loop is not a dropped SYN --------------------------------------------------------


def test_a_connect_the_gateways_own_blocked_loop_made_late_is_tried_again_not_judged_dropped(vllm):
    # The gateway's loop blocked for 1.5 s while the connect ran (CPU throttled at the pod's limit, a
    # lazy import at first use): the 1 s connect timer fires in the same loop turn as the finished
    # connect and wins. Once judged "dropped packets", a replica's first probe cooled vLLM down in CI.
    answer, took = complete(vllm, block_connect_for=1.5)
    assert answer.model_dump()["choices"][0]["message"]["content"] == "[vllm] w1 w2 w3 w4 w5 w6 w7"
    print(f"\n[connect] loop blocked 1.5 s during the connect: vLLM answered after {took:.2f} s")


def test_a_dropped_syn_is_judged_after_two_connect_tries(vllm):
    vllm.set_mode("blackhole")  # the kernel drops every SYN: a connect neither succeeds nor is refused
    progress = progress_handler()
    started = time.monotonic()
    with pytest.raises(litellm.Timeout, match="did not accept a connection in 2 tries of 1 s"):
        complete(vllm)
    took = time.monotonic() - started
    print(f"\n[connect] dropped SYNs: judged after {took:.2f} s")
    assert progress.CONNECT_TRIES * progress.CONNECT_TIMEOUT_SECONDS <= took < 2.5


# --- what vLLM streams, assembled whole or refused --------------------------------------------------


def events_of(*events: dict):
    async def stream():
        for event in events:
            yield event

    return stream()


def test_tool_calls_streamed_in_pieces_are_assembled_whole():
    progress = progress_handler()
    pieces = [{"index": 0, "id": "call-1", "function": {"name": "get_", "arguments": ""}}]
    pieces += [
        {"index": 0, "function": {"name": "weather" if i == 0 else "", "arguments": part}}
        for i, part in enumerate(['{"city": ', '"Oslo"', "}"])
    ]
    pieces.append({"index": 1, "id": "call-2", "function": {"name": "now", "arguments": "{}"}})
    events = [{"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]} for piece in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    answer = asyncio.run(progress.assemble_completion(events_of(*events)))
    message = answer["choices"][0]["message"]
    assert message["content"] is None and answer["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {"id": "call-1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call-2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {"error": {"message": "CUDA error: an illegal memory access", "type": "InternalServerError", "code": 500}},
            litellm.InternalServerError,
        ),
        (
            {"object": "error", "message": "engine dead", "type": "EngineDeadError", "code": 503},
            litellm.ServiceUnavailableError,
        ),
        ({"error": {"message": "bad", "type": "BadRequestError", "code": 400}}, litellm.BadRequestError),
    ],
    ids=["error-object", "flat-error-response", "client-mistake"],
)
def test_an_error_vllm_sends_inside_the_stream_ends_the_answer_as_an_error_not_as_a_whole_answer(event, error):
    # vLLM's serving_chat sends `data: {"error": ...}` then `[DONE]` when the engine fails mid-answer.
    progress = progress_handler()
    assert isinstance(progress._in_band_error(event, "m", "vllm-progress"), error)
    ordinary = {"choices": [{"index": 0, "delta": {"content": "w"}}]}
    assert progress._in_band_error(ordinary, "m", "vllm-progress") is None
    assert progress._in_band_error({"usage": {"total_tokens": 3}, "choices": []}, "m", "vllm-progress") is None


def test_answers_one_after_another_reuse_one_connection_to_vllm():
    # Closed half-read after `[DONE]`, every request opened a new TCP connection (~0.5 ms of CPU).
    progress = progress_handler()
    handler = progress.handler
    peers: list[int] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[1])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = {
            "id": "x",
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        }
        await response.write(f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    async def run() -> list[str]:
        runner, api_base = await serve_chat(chat)
        params = deployment_params()
        try:
            answers = []
            for _ in range(3):
                answer = await handler.acompletion(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hello"}],
                    api_base=api_base,
                    api_key="none",
                    optional_params={},
                    litellm_params=params,
                    timeout=params["timeout"],
                )
                answers.append(answer.choices[0].message.content)
            return answers
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == ["hi", "hi", "hi"]
    assert len(set(peers)) == 1, peers

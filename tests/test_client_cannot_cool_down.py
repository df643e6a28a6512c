"""Issue 22 item 1: no client request cools a tier down; only the tier's own failure to answer does.

Reproduced before the front door (commit 1e74dc2, dev stack, real proxy): `POST /v1/embeddings`,
`/v1/images/generations` (answered 200 with empty `data`) and `/v1/moderations` with model `chat`
each cooled vLLM down, and the next chat request was answered by Ollama. Today the door refuses
every route but chat (404). Chat requests vLLM's provider cannot serve as asked go through the real
proxy here too: a user content part of a type LiteLLM does not know walked the whole chain and came
back 503 "no tier available" (now a 400 naming it); the others are answered or refused as the
client's mistake, and none counts as vLLM's failure. After each, the next normal chat requests are
answered by vLLM, on this gateway and, with Redis, on the other replica of a fleet. The controls at
the end show the same checks see a cooldown when vLLM itself fails.
"""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest
from test_fallback import _gateway_module

from core.names import REQUEST_CHECK_FILE
from core.stack_files import stack_settings
from drill.client import DRILL_MASTER_KEY, chat
from drill.redis_server import RedisServer
from drill.runner import Drill, free_port

door = _gateway_module(REQUEST_CHECK_FILE)

DEV = stack_settings("dev")
KEYED = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
# LiteLLM's Redis-backed cooldowns reach the other replicas within a second (README, "Fleet").
FLEET_SYNC_SECONDS = 1.5


def part(kind: str, **fields) -> list[dict]:
    return [{"role": "user", "content": [{"type": kind, **fields}]}]


# (what, method, path, body, the status a client gets)
ROUTES = [
    ("embeddings", "POST", "/v1/embeddings", {"model": "chat", "input": "hi"}, 404),
    ("images", "POST", "/v1/images/generations", {"model": "chat", "prompt": "a cat"}, 404),
    ("moderations", "POST", "/v1/moderations", {"model": "chat", "input": "hi"}, 404),
    ("speech", "POST", "/v1/audio/speech", {"model": "chat", "input": "hi", "voice": "alloy"}, 404),
    ("completions", "POST", "/v1/completions", {"model": "chat", "prompt": "hi"}, 404),
    ("responses", "POST", "/v1/responses", {"model": "chat", "input": "hi"}, 404),
    ("rerank", "POST", "/v1/rerank", {"model": "chat", "query": "hi", "documents": ["a"]}, 404),
]
CHATS = [
    ("unknown content part", {"messages": part("bogus")}, 400),
    ("n=2", {"messages": HELLO, "n": 2}, None),  # issue 22 item 4 decides answered or refused
    ("n=2 streaming", {"messages": HELLO, "n": 2, "stream": True}, None),
    ("tools", {"messages": HELLO, "tools": TOOLS, "tool_choice": "auto"}, 200),
    ("tool without a function", {"messages": HELLO, "tools": [{"type": "function", "function": "x"}]}, 400),
    ("tool choice without a name", {"messages": HELLO, "tool_choice": {"type": "function"}}, 400),
    ("image part", {"messages": part("image_url", image_url={"url": "http://127.0.0.1:9/x.png"})}, 200),
    ("audio part", {"messages": part("input_audio", input_audio={"data": "AAAA", "format": "wav"})}, 200),
    ("reasoning_effort", {"messages": HELLO, "reasoning_effort": "high"}, 400),
    ("logprobs", {"messages": HELLO, "logprobs": True, "top_logprobs": 2}, 200),
    ("longer than the context", {"messages": HELLO, "max_tokens": 100_000}, 400),
]
ODD = [(what, method, path, body, status) for what, method, path, body, status in ROUTES] + [
    (what, "POST", "/v1/chat/completions", {"model": "chat", **body}, status) for what, body, status in CHATS
]


def send_odd(url: str, method: str, path: str, body: dict) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", json=body, headers=KEYED, timeout=60)


def next_tiers(url: str, count: int = 3) -> list[str | None]:
    """The tiers answering the next normal chat requests, over about a second (a cooldown is written
    by LiteLLM's failure callback, which may run just after the client got its answer)."""
    tiers = []
    for _ in range(count):
        tiers.append(chat(url, "chat").tier)
        time.sleep(0.3)
    return tiers


def test_a_user_content_part_litellm_does_not_know_is_the_clients_mistake():
    assert door.problem_with({"messages": part("bogus")})[0] == "messages[0].content"
    assert door.problem_with({"messages": part("text", text="hi")}) is None
    assert door.problem_with({"messages": part("image_url", image_url={"url": "x"})}) is None  # the tier decides
    # LiteLLM checks user messages only (utils.validate_chat_completion_user_messages): so does the door.
    assert door.problem_with({"messages": [{"role": "assistant", "content": [{"type": "bogus"}]}]}) is None


@pytest.fixture(scope="module")
def gateway():
    with Drill(DEV) as running:
        yield running


@pytest.mark.drill
@pytest.mark.parametrize(("what", "method", "path", "body", "status"), ODD, ids=[case[0] for case in ODD])
def test_after_a_request_the_chain_cannot_serve_vllm_answers_the_next(gateway, what, method, path, body, status):
    gateway.wait_for_tier("vllm")
    gateway.reset_counts()
    response = send_odd(gateway.url, method, path, body)
    assert response.status_code < 500, response.text  # never "retry later" for the client's own request
    if status is not None:
        assert response.status_code == status, response.text
    if response.status_code >= 400:
        assert {"message", "type", "param", "code"} <= response.json()["error"].keys()  # OpenAI's format
        assert gateway.counts() == {"vllm": 0, "ollama": 0, "openai": 0}, what  # refused before any tier
    assert next_tiers(gateway.url) == ["vllm"] * 3


@pytest.mark.drill
def test_control_vllms_own_failure_does_cool_it_down(gateway):
    """The checks above can fail: a 500 from vLLM itself sends the next request to Ollama."""
    gateway.wait_for_tier("vllm")
    gateway.reset_counts()
    gateway.standins["vllm"].set_mode("error", status=500)
    try:
        assert chat(gateway.url, "chat").tier == "ollama"
    finally:
        gateway.standins["vllm"].set_mode("up")
    assert gateway.standins["vllm"].served["client-received"] == 2  # the 500, and the one retry on vLLM
    assert next_tiers(gateway.url)[0] == "ollama"  # vLLM is up again, but cooling down


@pytest.fixture
def fleet():
    with RedisServer(free_port()) as redis:
        settings = dataclasses.replace(DEV, redis=dataclasses.replace(DEV.redis, mode="deploy"))
        drill = Drill(settings, redis_url=redis.url, replicas=2).start()
        try:
            yield drill
        finally:
            drill.stop()


@pytest.mark.drill
def test_with_redis_no_request_cools_vllm_down_for_the_other_replica(fleet):
    first, second = (gateway.url for gateway in fleet.gateways)
    fleet.wait_for_tier("vllm")
    for what, method, path, body, _ in ODD:
        assert send_odd(first, method, path, body).status_code < 500, what
    time.sleep(FLEET_SYNC_SECONDS)
    assert next_tiers(second) == ["vllm"] * 3
    assert next_tiers(first) == ["vllm"] * 3
    # Control: vLLM's own failure, seen by the first replica, is skipped by the second.
    fleet.standins["vllm"].set_mode("error", status=500)
    try:
        assert chat(first, "chat").tier == "ollama"
    finally:
        fleet.standins["vllm"].set_mode("up")
    time.sleep(FLEET_SYNC_SECONDS)
    assert chat(second, "chat").tier == "ollama"

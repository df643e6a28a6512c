"""Issue 22 item 8: the front door buffers a body in linear time, and only up to
`gateway.maxRequestBytes`; a larger body is answered 413 before any work, at the gateway and at an
ingress-nginx Ingress.

Reproduced before the fix (real proxy, loopback, dev stack): a 50 MB chat body cost 4.1-6.5 s of
gateway CPU (`body += chunk` in the front door copies the whole body at every chunk). After: with
the limit raised to 64 MiB the same body cost 0.65-1.05 s (the parse and the context check that
follow); with the default limit it is answered 413 for 0.02-0.08 s. Figures are printed (pytest -s).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from test_fallback import _gateway_module

from components.ingress import NGINX_BODY_SIZE
from core.chain import chains
from core.gateway_pod import gateway_environment
from core.names import MAX_REQUEST_BYTES_ENV, REQUEST_CHECK_FILE
from core.settings import CONTEXT_TOKENS, PROMPT_BYTES_PER_TOKEN, parse_settings
from core.stack_files import stack_settings
from drill.client import DRILL_MASTER_KEY
from drill.runner import Drill
from pulumi_harness import run_program, run_program_expecting_error

door = _gateway_module(REQUEST_CHECK_FILE)

KEY = {"openaiApiKey": "sk-body-limit-test"}
CHUNK = 65_536  # what uvicorn hands over per read on loopback, about
LIMIT = 4 * 1024 * 1024
LARGE = 48 * 1024 * 1024  # the body


# --- the front door, in process ------------------------------------------------------------------


def chunks_of(size: int) -> list[dict]:
    count = size // CHUNK
    return [{"type": "http.request", "body": b"x" * CHUNK, "more_body": index < count - 1} for index in range(count)]


class Client:
    """An ASGI client side: hands over `messages` one per receive, records what is sent back."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = list(messages)
        self.received = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        self.received += 1
        return self.messages.pop(0) if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def error(self) -> dict:
        return json.loads(self.sent[1]["body"])["error"]


async def never_called(scope, receive, send):
    raise AssertionError("the request went past the door")


def scope_of(headers: dict[str, str], path: str = "/v1/chat/completions", method: str = "POST") -> dict:
    encoded = [(name.encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "method": method, "path": path, "headers": [(b"authorization", b"Bearer k"), *encoded]}


def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read():
    client = Client(chunks_of(LARGE))
    asyncio.run(
        door.FrontDoor(never_called, limit=LIMIT)(scope_of({"content-length": str(LARGE)}), client.receive, client.send)
    )
    assert client.status == 413 and client.received == 0
    assert client.error["code"] == "request_too_large" and str(LIMIT) in client.error["message"]
    assert {"message", "type", "param", "code"} <= client.error.keys()  # OpenAI's error format


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/key/generate"])  # chat, and the admin UI's routes
def test_a_chunked_body_is_read_only_up_to_the_limit(monkeypatch, path):
    monkeypatch.delenv("DISABLE_ADMIN_UI", raising=False)  # the console's routes pass the door
    client = Client(chunks_of(LARGE))
    asyncio.run(door.FrontDoor(never_called, limit=LIMIT)(scope_of({}, path), client.receive, client.send))
    assert client.status == 413
    assert client.received == LIMIT // CHUNK + 1  # reading stopped at the first chunk past the limit


def test_a_body_within_the_limit_reaches_the_proxy_whole_and_in_one_message():
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    client = Client(
        [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    )
    seen: list[dict] = []

    async def proxy(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())  # then what the client sends: here, its disconnect

    front = door.FrontDoor(proxy, limit=LIMIT)
    front.names.get = lambda mode="chat": {"chat": "chat"} if mode in ("chat", None) else {}
    asyncio.run(front(scope_of({"content-length": str(len(body))}), client.receive, client.send))
    assert seen == [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]


@pytest.mark.parametrize("body", [b"null", b"[1, 2]", b'"chat"'])
def test_a_body_that_is_not_a_json_object_is_refused_at_the_door(body):
    """`null` parsed to None and went on to LiteLLM, whose auth crashed on it (a bare 500)."""
    client = Client([{"type": "http.request", "body": body, "more_body": False}])
    front = door.FrontDoor(never_called, limit=LIMIT)
    asyncio.run(front(scope_of({"content-length": str(len(body))}), client.receive, client.send))
    assert client.status == 400 and client.error["param"] == "request_body"


def test_buffering_is_linear():
    """48 MiB in 64 KiB chunks: `body += chunk` copies ~18 GB (seconds); a join copies 48 MiB."""
    client = Client(chunks_of(LARGE))

    async def buffered() -> tuple[bytes, float]:
        # Timed inside the loop (starting a loop here costs more than the join), on this thread:
        # LiteLLM's import left threads of its own running.
        started = time.thread_time()
        body = await door._whole_body(client.receive, None)
        return body, time.thread_time() - started

    body, spent = asyncio.run(buffered())
    print(f"\n[body limit] buffering {len(body) / 1e6:.0f} MB in {CHUNK // 1024} KiB chunks: {spent * 1000:.0f} ms CPU")
    assert len(body) == LARGE
    assert spent < 0.5, spent


# --- the setting --------------------------------------------------------------------------------


def test_the_default_holds_a_prompt_filling_the_largest_context(monkeypatch):
    settings = parse_settings({}, openai_key="secret")
    assert settings.gateway.max_request_bytes >= CONTEXT_TOKENS.high * PROMPT_BYTES_PER_TOKEN
    environment = gateway_environment(settings.gateway, chains(settings))
    assert environment[MAX_REQUEST_BYTES_ENV] == str(settings.gateway.max_request_bytes)
    monkeypatch.setenv(MAX_REQUEST_BYTES_ENV, environment[MAX_REQUEST_BYTES_ENV])  # as the pod sets it
    assert door.max_request_bytes() == settings.gateway.max_request_bytes


def test_a_limit_below_what_the_context_takes_is_refused_naming_both_keys():
    error, registered = run_program_expecting_error({"gateway": {"maxRequestBytes": 100_000}}, KEY)
    assert str(error).startswith("llm-gateway:gateway.maxRequestBytes = 100000 is invalid"), error
    assert "gateway.contextTokens=8192" in str(error) and "at least 131072" in str(error)
    assert registered == []


# --- the ingress ----------------------------------------------------------------------------------

EDGE = {"enabled": True, "host": "llm.example.com"}
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


def annotations_of(config: dict) -> dict[str, str]:
    (ingress,) = run_program(config, KEY).of_type(INGRESS)
    return ingress.inputs["metadata"]["annotations"]


def test_the_nginx_ingress_carries_the_gateways_limit_and_the_operator_may_override_it():
    assert annotations_of({"ingress": EDGE})[NGINX_BODY_SIZE] == str(LIMIT)
    raised = {"ingress": EDGE, "gateway": {"maxRequestBytes": 8 * 1024 * 1024}}
    assert annotations_of(raised)[NGINX_BODY_SIZE] == str(8 * 1024 * 1024)
    mine = {"ingress": {**EDGE, "annotations": {NGINX_BODY_SIZE: "1m"}}}
    assert annotations_of(mine)[NGINX_BODY_SIZE] == "1m"


def test_traefik_gets_no_buffering_middleware_that_would_hold_streams_back():
    run = run_program({"ingress": {**EDGE, "kind": "IngressRoute"}}, KEY)
    assert run.of_type("kubernetes:traefik.io/v1alpha1:Middleware") == []
    (route,) = run.of_type("kubernetes:traefik.io/v1alpha1:IngressRoute")
    assert "middlewares" not in route.inputs["spec"]["routes"][0]


# --- the real proxy -------------------------------------------------------------------------------


def gateway_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def gateway():
    with Drill(stack_settings("dev")) as running:
        yield running


def post_body(drill: Drill, body: bytes, chunked: bool) -> tuple[httpx.Response, float]:
    content = (body[i : i + CHUNK] for i in range(0, len(body), CHUNK)) if chunked else body
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}", "Content-Type": "application/json"}
    before = gateway_cpu_seconds(drill.proxy.pid)
    response = httpx.post(f"{drill.url}/v1/chat/completions", content=content, headers=headers, timeout=60)
    time.sleep(0.3)  # what the gateway still does after answering counts too
    return response, gateway_cpu_seconds(drill.proxy.pid) - before


def chat_body(size: int) -> bytes:
    return json.dumps({"model": "chat", "messages": [{"role": "user", "content": "word " * (size // 5)}]}).encode()


@pytest.mark.drill
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_proxy_answers_a_large_body_413_for_almost_no_cpu(gateway, chunked):
    gateway.reset_counts()
    response, cpu = post_body(gateway, chat_body(LARGE), chunked)
    print(f"\n[body limit] {LARGE / 1e6:.0f} MB, {'chunked' if chunked else 'Content-Length'}: {response.status_code}, "
          f"gateway CPU {cpu:.2f} s (before the fix: 4.1-6.5 s)")  # fmt: skip
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert cpu < 0.5, cpu
    assert gateway.counts() == {"vllm": 0, "ollama": 0, "openai": 0}  # nothing was sent anywhere


@pytest.mark.drill
def test_a_body_just_within_the_limit_goes_on_to_the_checks(gateway):
    gateway.reset_counts()
    response, cpu = post_body(gateway, chat_body(LIMIT - 4096), chunked=True)
    print(f"\n[body limit] {(LIMIT - 4096) / 1e6:.1f} MB chunked: {response.status_code}, gateway CPU {cpu:.2f} s")
    # A prompt of 4 MB is far beyond 8192 tokens: the context check's 400, not the door's 413.
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages", response.text
    assert gateway.counts() == {"vllm": 0, "ollama": 0, "openai": 0}

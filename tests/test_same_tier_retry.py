"""NFR65 holds across vLLM's one same-tier retry (gateway/vllm_progress.py `vllm_events_retried`).

A vLLM stand-in on loopback answers the first request with an error that asks to be retried (a
503, with a Retry-After or after a slow head), then hangs every later one. The handler must give up
on vLLM within one first-token limit of the first send, retry or not: both tries share one deadline.
Before the fix the retry got a fresh deadline, and Ollama was asked after ~8 s.
"""

from __future__ import annotations

import asyncio
import time

import litellm
import pytest
from aiohttp import web

from drill.runner import free_port
from tests.test_failover_bench import progress_handler

FIRST_TOKEN = 4.0
# The handler looks at the clock every CHECK_EVERY_SECONDS (0.25 s); the rest is loop noise.
SLACK = 0.6


async def vllm_that_fails_once_then_hangs(head_after: float, retry_after: str | None):
    """(the server's runner, its URL, the times requests arrived). The first chat request gets a 503
    after `head_after` seconds; later ones never get a head (a hung engine)."""
    arrived: list[float] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        arrived.append(time.monotonic())
        if len(arrived) > 1:
            await asyncio.sleep(60)
        await asyncio.sleep(head_after)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = {"error": {"message": "The engine is overloaded.", "type": "server_error", "code": 503}}
        return web.json_response(body, status=503, headers=headers)

    runner, api_base = await serve_chat(chat)
    return runner, api_base, arrived


async def serve_loopback(method: str, path: str, handler) -> tuple[web.AppRunner, str]:
    """A loopback server whose `method path` is `handler`: its runner and its api_base."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1"


async def serve_chat(chat) -> tuple[web.AppRunner, str]:
    """A loopback server whose POST /v1/chat/completions is `chat`: its runner and its api_base."""
    return await serve_loopback("POST", "/v1/chat/completions", chat)


def given_up_after(head_after: float, retry_after: str | None) -> tuple[float, int, type]:
    """(seconds from the first send until the handler gave up on vLLM, requests vLLM got, error)."""
    progress = progress_handler()
    limits = progress.Limits(first_token=FIRST_TOKEN, stall=4, max_queue=0, total=600, provider="vllm-progress")

    async def run():
        runner, api_base, arrived = await vllm_that_fails_once_then_hangs(head_after, retry_after)
        payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        try:
            async for _ in progress.vllm_events_retried(api_base, "none", payload, limits, "m"):
                pass
        except Exception as failed:  # the kind is asserted by the caller
            return time.monotonic() - started, len(arrived), type(failed)
        finally:
            await runner.cleanup()
        raise AssertionError("vLLM answered")

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("head_after", "retry_after"),
    [(0.0, "4"), (3.5, None), (0.0, "3")],
    ids=["retry-after-4s", "head-at-3.5s", "retry-after-3s"],
)
def test_no_retry_that_would_not_fit_the_first_token_limit(head_after, retry_after):
    seconds, requests, error = given_up_after(head_after, retry_after)
    assert requests == 1 and issubclass(error, litellm.ServiceUnavailableError), (requests, error)
    assert seconds <= head_after + SLACK, seconds  # on to the next tier as soon as the 503 came


def test_a_retry_that_fits_keeps_the_first_tries_deadline():
    seconds, requests, error = given_up_after(0.0, "1")
    assert requests == 2 and issubclass(error, litellm.Timeout), (requests, error)
    assert seconds <= FIRST_TOKEN + SLACK, seconds  # not 1 s + a fresh 4 s

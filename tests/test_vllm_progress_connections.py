"""gateway/vllm_progress.py's connections to vLLM: pooled connections vLLM has closed, answers
aiohttp cannot read, a client that reads slowly and one that leaves (review of the progress provider).

vLLM's uvicorn closes a keep-alive connection idle for 5 s; aiohttp kept idle ones 15 s. A request
sent on one the server closes at that moment gets no answer, and went to the next tier. The
stand-in here is a raw HTTP/1.1 server that plays that moment deterministically: a request arriving
on a connection idle longer than its limit is dropped unanswered, as a closing uvicorn drops it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import litellm
import pytest
from aiohttp import web

from drill.runner import free_port
from tests.test_failover_bench import progress_handler
from tests.test_same_tier_retry import serve_chat

MODEL = "m"
LIMIT_PARAMS = {
    "first_token_timeout": 4,
    "stall_timeout": 4,
    "max_queue_seconds": 0,
    "max_connections": 16,
    "custom_llm_provider": "vllm-progress",
}
UVICORN_KEEP_ALIVE_SECONDS = 5  # uvicorn/config.py Config(timeout_keep_alive=5); vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE
IDLE_CLOSE_SECONDS = 0.5  # the stand-in's keep-alive limit, uvicorn's scaled down


def chat_event(content: str) -> bytes:
    event = {"id": "x", "model": MODEL, "choices": [{"index": 0, "delta": {"content": content}}]}
    return f"data: {json.dumps(event)}\n\n".encode()


class IdleClosingVllm:
    """vLLM's chat and embeddings routes over raw HTTP/1.1 keep-alive. A request that arrives on a
    connection idle for `idle_close` s or more is dropped unanswered (`dropped`), as a uvicorn that
    closes the connection just then drops it; `drop_every_request` drops them all."""

    def __init__(self, idle_close: float = IDLE_CLOSE_SECONDS, drop_every_request: bool = False) -> None:
        self.idle_close = idle_close
        self.drop_every_request = drop_every_request
        self.dropped = 0
        self.answered: list[int] = []  # the client's port of each answered request
        self.server: asyncio.Server | None = None
        self.api_base = ""

    async def start(self) -> IdleClosingVllm:
        port = free_port()
        self.server = await asyncio.start_server(self.connection, "127.0.0.1", port)
        self.api_base = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idle_since = time.monotonic()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
                await reader.readexactly(length)
                if self.drop_every_request or time.monotonic() - idle_since >= self.idle_close:
                    self.dropped += 1
                    return  # closed unanswered (finally)
                self.answered.append(writer.get_extra_info("peername")[1])
                writer.write(self.answer(lines[0].split(" ")[1]))
                await writer.drain()
                idle_since = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    @staticmethod
    def answer(path: str) -> bytes:
        if path.endswith("/embeddings"):
            body, kind = json.dumps({"object": "list", "model": MODEL, "data": [{"index": 0, "embedding": [1.0]}]}), ""
            kind = "application/json"
        else:
            body = (chat_event("hi") + b"data: [DONE]\n\n").decode()
            kind = "text/event-stream"
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
        return (head + body).encode()


def streamed(progress, api_base: str, params: dict[str, Any]):
    """The provider's stream of one short chat request, as LiteLLM calls it."""
    messages = [{"role": "user", "content": "hi"}]
    return progress.handler.astreaming(
        model=MODEL, messages=messages, api_base=api_base, api_key="none", optional_params={}, litellm_params=params,
        timeout=600,
    )  # fmt: skip


async def ask(progress, api_base: str, path: str) -> Any:
    """One call of the handler as LiteLLM makes it: the answer's text (or vector), or the error."""
    common = {
        "model": MODEL,
        "api_base": api_base,
        "api_key": "none",
        "optional_params": {},
        "litellm_params": LIMIT_PARAMS,
        "timeout": 600,
    }
    try:
        if path == "embeddings":
            answer = await progress.handler.aembedding(input=["x"], **common)
            return answer.data[0]["embedding"]
        answer = await progress.handler.acompletion(messages=[{"role": "user", "content": "hi"}], **common)
        return answer.choices[0].message.content
    except Exception as failed:
        return failed


async def close_pools(progress) -> None:
    for session in progress._sessions.by_loop.values():
        await session.close()
    for client in progress._probe_clients.by_loop.values():
        await client.aclose()


def twice_with_a_pause(progress, server: IdleClosingVllm, path: str, pause: float) -> list[Any]:
    """Two requests, `pause` s apart (the pool keeps the first one's connection meanwhile)."""

    async def run():
        await server.start()
        try:
            first = await ask(progress, server.api_base, path)
            await asyncio.sleep(pause)
            return [first, await ask(progress, server.api_base, path)]
        finally:
            await close_pools(progress)
            await server.stop()

    return asyncio.run(run())


EXPECTED = {"chat": "hi", "embeddings": [1.0]}


async def probe_client_keepalive(progress) -> float:
    """How long the /health and /metrics client keeps an idle connection (httpx's own: 5 s)."""
    try:
        return progress._probe_clients.get(progress.PROBE_CONNECTIONS)._transport._pool._keepalive_expiry
    finally:
        await close_pools(progress)


def test_pooled_connections_are_let_go_before_vllms_uvicorn_closes_them():
    assert progress_handler().KEEPALIVE_SECONDS < UVICORN_KEEP_ALIVE_SECONDS
    assert asyncio.run(probe_client_keepalive(progress_handler())) == progress_handler().KEEPALIVE_SECONDS
    progress = progress_handler()
    progress.KEEPALIVE_SECONDS = IDLE_CLOSE_SECONDS * 0.6  # below the server's limit, as the real one is
    server = IdleClosingVllm()
    answers = twice_with_a_pause(progress, server, "chat", pause=IDLE_CLOSE_SECONDS * 1.4)
    assert answers == ["hi", "hi"]
    # The idle connection was not offered to the server after its limit: a new one, nothing dropped.
    assert server.dropped == 0 and len(set(server.answered)) == 2, (server.dropped, server.answered)


@pytest.mark.parametrize("path", ["chat", "embeddings"])
def test_a_request_dropped_on_a_pooled_connection_is_sent_once_more_before_the_next_tier(path):
    # The server closes sooner than the pool thinks (aiohttp's own 15 s, or a vLLM started with a
    # shorter VLLM_HTTP_TIMEOUT_KEEP_ALIVE): the request lands on a connection being closed.
    progress = progress_handler()
    progress.KEEPALIVE_SECONDS = 15.0
    server = IdleClosingVllm()
    answers = twice_with_a_pause(progress, server, path, pause=IDLE_CLOSE_SECONDS * 1.4)
    assert answers == [EXPECTED[path], EXPECTED[path]], answers
    assert server.dropped == 1 and len(server.answered) == 2


def test_a_connection_that_drops_every_request_is_tried_twice_then_handed_on():
    progress = progress_handler()
    server = IdleClosingVllm(drop_every_request=True)

    async def run():
        await server.start()
        started = time.monotonic()
        try:
            return await ask(progress, server.api_base, "chat"), time.monotonic() - started
        finally:
            await close_pools(progress)
            await server.stop()

    failed, took = asyncio.run(run())
    # An APIConnectionError: the next tier, and no cooldown for a connection that broke.
    assert isinstance(failed, litellm.APIConnectionError) and not isinstance(failed, litellm.Timeout), failed
    assert server.dropped == 2 and took < 0.5


# --- an answer aiohttp cannot read -----------------------------------------------------------------


def test_an_event_longer_than_the_read_buffer_is_a_broken_answer_not_a_crash():
    progress = progress_handler()
    progress.EVENT_BUFFER_BYTES = 1024  # aiohttp reads a line of up to twice this (StreamReader's high water)

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chat_event("x" * 4096))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def run():
        runner, api_base = await serve_chat(chat)
        try:
            return await ask(progress, api_base, "chat")
        finally:
            await close_pools(progress)
            await runner.cleanup()

    failed = asyncio.run(run())
    # aiohttp raises its LineTooLong (an HttpProcessingError, not a ClientError): mapped, not let out.
    assert isinstance(failed, litellm.APIConnectionError) and not isinstance(failed, litellm.Timeout), failed
    assert "LineTooLong" in str(failed)


# --- a client that reads slowly, a client that leaves ----------------------------------------------


def test_a_slow_reader_neither_holds_vllm_up_nor_looks_like_a_stall():
    # 8 MB of events: the gateway reads vLLM's answer to its end while its client dawdles (past the
    # stall limit, after its first chunk), and the events it read meanwhile are not judged a stall.
    progress = progress_handler()
    stall = 1.0
    params = {**LIMIT_PARAMS, "first_token_timeout": stall, "stall_timeout": stall}
    finished: list[float] = []
    piece = "y" * 4000

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(2000):
            await response.write(chat_event(piece))
        await response.write(b"data: [DONE]\n\n")
        finished.append(time.monotonic())
        return response

    async def run():
        runner, api_base = await serve_chat(chat)
        chunks, first_at, read_during_pause = [], None, None
        try:
            stream = streamed(progress, api_base, params)
            async for chunk in stream:
                chunks.append(chunk)
                if first_at is None:
                    first_at = time.monotonic()
                    await asyncio.sleep(3 * stall)  # a client that reads slowly
                    read_during_pause = next(iter(progress._watches.by_base.values())).last_event_at
            return chunks, first_at, read_during_pause
        finally:
            await close_pools(progress)
            await runner.cleanup()

    chunks, first_at, read_during_pause = asyncio.run(run())
    assert "".join(chunk["text"] for chunk in chunks) == piece * 2000  # whole, no verdict
    print(f"\n[slow reader] vLLM finished writing {finished[0] - first_at:.2f} s after the first chunk")
    assert finished[0] - first_at < 2 * stall  # not held up by the client's 3 s pause
    assert read_during_pause >= finished[0] - 0.1  # the last events were read during the pause


def test_a_client_that_leaves_mid_stream_leaves_no_task_and_no_connection_behind():
    progress = progress_handler()
    server_saw_close: list[float] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(200):  # 20 s of tokens, if nobody leaves
                await response.write(chat_event("t"))
                await asyncio.sleep(0.1)
        except ConnectionError:
            server_saw_close.append(time.monotonic())
        return response

    async def run():
        runner, api_base = await serve_chat(chat)
        chunks: list[Any] = []

        async def client() -> None:
            stream = streamed(progress, api_base, LIMIT_PARAMS)
            async for chunk in stream:
                chunks.append(chunk)

        try:
            consumer = asyncio.ensure_future(client())
            while len(chunks) < 3:
                await asyncio.sleep(0.05)
            consumer.cancel()
            left = time.monotonic()
            await asyncio.gather(consumer, return_exceptions=True)
            await asyncio.sleep(0.5)  # the server's next write notices the closed connection
            ours = [
                task
                for task in asyncio.all_tasks()
                if task is not asyncio.current_task() and "_WatchedLines" in task.get_coro().__qualname__
            ]
            session = next(iter(progress._sessions.by_loop.values()))
            pooled = sum(len(conns) for conns in session.connector._conns.values())
            watch = next(iter(progress._watches.by_base.values()))
            return ours, len(session.connector._acquired), pooled, watch.open_requests, left
        finally:
            await close_pools(progress)
            await runner.cleanup()

    pending, acquired, pooled, open_requests, left = asyncio.run(run())
    assert pending == [] and open_requests == 0
    assert acquired == 0 and pooled == 0  # closed, not handed back half-read
    assert server_saw_close and server_saw_close[0] - left < 0.5

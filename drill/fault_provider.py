"""A fake OpenAI-compatible provider that breaks in Failover Bench's sixteen documented ways.

Our own stand-in for the bench's "wall", built from the public catalogue (failoverbench/failoverbench
`scenarios/catalogue.yaml` at commit 77a253095c3c, methodology v0.1, and the timing profiles its
README and METHODOLOGY.md publish). The fault is chosen per scenario with `configure`: the primary
model (the vLLM tier's served name) gets the scenario's fault, the fallback model (the cloud tier's)
gets `ok`, or `ok_noprefill` in S14. Every healthy answer is the catalogue's sixty-word text, so a
cut answer can never pass for a whole one.

A raw asyncio HTTP/1.1 server on purpose: a framework cannot reset a connection before the response
head, keep a stream open and silent, or end a chunked body without its last chunk, and those are the
faults. It listens on 127.0.0.1 only and has no `/metrics`, like the bench's wall: the gateway's
busy-versus-hung watch has no engine counters to read here.

The request log is the provider's view the scorer reads: every chat request since `configure`, its
model, time and what was done to it. LiteLLM's background health probes (recognised by its probe
prompt, never the bench's) are logged apart and never counted as attempts; they meet the fault too,
except the one-off faults, which are kept for the client's first attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from drill.standins import LOOPBACK, PROBE_PROMPTS, _Loop

# failoverbench/__init__.py CANONICAL_ANSWER: sixty words, so forty of them are visibly incomplete.
CANONICAL_ANSWER = (
    "A gateway earns trust only when the provider behind it misbehaves. "
    "Rate limits arrive without warning, streams die halfway through a sentence, "
    "servers answer with malformed bytes, and a healthy model returns to service "
    "while the breaker is still open. This answer contains exactly sixty words so "
    "that a truncated response can never be mistaken for a complete one again."
)
WORDS = CANONICAL_ANSWER.split()


@dataclass(frozen=True)
class Timing:
    """The wall's timing profile (failoverbench/wall.py TIMING_PROFILES)."""

    retry_after_s: float
    slow_ttft_s: float
    stall_s: float
    no_response_s: float
    flap_down_s: float
    token_interval_s: float
    cut_after_tokens: int = 40
    stall_after_tokens: int = 20
    malformed_at_token: int = 10


PROFILES = {
    "full": Timing(
        retry_after_s=2, slow_ttft_s=20, stall_s=30, no_response_s=120, flap_down_s=60, token_interval_s=0.015
    ),
    "fast": Timing(retry_after_s=2, slow_ttft_s=3, stall_s=4, no_response_s=15, flap_down_s=6, token_interval_s=0.005),
}

# The faults, by the catalogue's wording. One-off faults hit the first client attempt only.
ONE_OFF = {"429_retry_after_once", "500_once", "reset_once"}
FAULTS = {
    "ok",
    "ok_noprefill",
    "429_persistent",
    "503_persistent",
    "no_response",
    "slow_ttft",
    "stream_cut",
    "stream_stall",
    "malformed_chunk",
    "no_done",
    "context_length",
    "content_filter",
    "flap",
    *ONE_OFF,
}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
REASONS |= {503: "Service Unavailable"}
IDLE_SECONDS = 75.0  # a keep-alive connection with no request for this long is closed


def tag(model: str | None) -> str:
    """How the wall keys a model: the part after the last slash, lower case (a provider prefix is ignored)."""
    return (model or "").rsplit("/", 1)[-1].strip().lower()


@dataclass
class Attempt:
    t: float  # seconds since `configure`
    model: str
    attempt: int  # this model's client attempt number (0 for a probe)
    probe: bool
    last_role: str | None
    prompt_tokens: int
    action: str = ""


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return "close" not in self.headers.get("connection", "").lower()


@dataclass
class FaultProvider:
    primary_model: str
    fallback_model: str
    timing: Timing = PROFILES["full"]
    port: int = 0
    fault: str = "ok"
    fallback_fault: str = "ok"
    log: list[Attempt] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)
    _counts: dict[str, int] = field(default_factory=dict)
    _server: asyncio.base_events.Server | None = None

    # ---- control (from the bench's thread) ----
    def start(self) -> FaultProvider:
        _Loop.get().run(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            _Loop.get().run(self._stop())

    def configure(self, fault: str, fallback_fault: str = "ok") -> None:
        """A scenario begins: its faults, an empty log, attempt counts and the clock from zero."""
        if fault not in FAULTS or fallback_fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} / {fallback_fault!r}")
        self.fault, self.fallback_fault = fault, fallback_fault
        self.log = []
        self._counts = {}
        self._t0 = time.monotonic()

    def heal(self) -> None:
        """Both models healthy from now on; the log is kept (the alive probe comes after it is read)."""
        self.fault = self.fallback_fault = "ok"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 4)

    # ---- server (on the stand-ins' loop) ----
    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._connection, LOOPBACK, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await self._read(reader)) is not None:
                if not await self._dispatch(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the gateway hung up: part of the game
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_SECONDS)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        first, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = first.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        return _Request(method, path.split("?", 1)[0], headers, body)

    async def _dispatch(self, request: _Request, reader, writer) -> bool:
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            return await self._chat(request, reader, writer)
        if request.path in ("/health", "/v1/health"):
            return await self._json(writer, 200, {"ok": True}, request.keep_alive)
        if request.path.endswith("/models"):
            models = [{"id": name, "object": "model"} for name in (self.primary_model, self.fallback_model)]
            return await self._json(writer, 200, {"object": "list", "data": models}, request.keep_alive)
        error = {"message": f"No route for {request.method} {request.path}", "type": "invalid_request_error"}
        return await self._json(writer, 404, {"error": error}, request.keep_alive)

    # ---- writing ----
    @staticmethod
    def _head(status: int, headers: dict[str, str], keep: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}", f"Connection: {'keep-alive' if keep else 'close'}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _json(self, writer, status: int, body: dict, keep: bool, extra: dict | None = None) -> bool:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}
        writer.write(self._head(status, headers, keep) + data)
        await writer.drain()
        return keep

    async def _error(self, writer, status: int, message: str, kind: str, code: Any, keep: bool, **extra) -> bool:
        error = {"message": message, "type": kind, "param": extra.pop("param", None), "code": code}
        return await self._json(writer, status, {"error": error}, keep, extra.pop("headers", None))

    @staticmethod
    async def _reset(writer) -> None:
        """Abort with a TCP RST (SO_LINGER 0) instead of a FIN, before any response byte."""
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    @staticmethod
    async def _wait_or_gone(reader: asyncio.StreamReader, seconds: float) -> None:
        """Say nothing for `seconds`, or until the client hangs up."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(1), seconds)

    # ---- the chat route ----
    def _record(self, model: str, probe: bool, messages: list) -> Attempt:
        number = 0
        if not probe:
            number = self._counts[tag(model)] = self._counts.get(tag(model), 0) + 1
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        tokens = sum(len(str(m.get("content") or "").split()) + 4 for m in messages if isinstance(m, dict))
        entry = Attempt(self.now(), model, number, probe, last.get("role"), tokens)
        self.log.append(entry)
        return entry

    def _fault_for(self, model: str, entry: Attempt) -> str | None:
        if tag(model) == tag(self.primary_model):
            fault = self.fault
        elif tag(model) == tag(self.fallback_model):
            fault = self.fallback_fault
        else:
            return None
        if fault in ONE_OFF and (entry.probe or entry.attempt > 1):
            return "ok"
        return fault

    async def _chat(self, request: _Request, reader, writer) -> bool:
        keep = request.keep_alive
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return await self._error(writer, 400, "Request body is not valid JSON", "invalid_request_error", None, keep)
        model = str(body.get("model") or "")
        messages = body.get("messages") or []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        entry = self._record(model, text in PROBE_PROMPTS, messages)
        fault = self._fault_for(model, entry)
        if fault is None:
            entry.action = "404 model_not_found"
            return await self._error(
                writer,
                404,
                f"The model `{model}` does not exist",
                "invalid_request_error",
                "model_not_found",
                keep,
                param="model",
            )
        words, answered = await self._before_answer(fault, entry, messages, reader, writer, keep)
        if answered is not None:
            return answered
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if body.get("stream"):
            return await self._stream(writer, model, keep, words, fault, usage, entry)
        return await self._plain(writer, model, keep, words, fault, entry)

    async def _before_answer(self, fault, entry: Attempt, messages, reader, writer, keep) -> tuple[list[str], Any]:
        """The faults that answer instead of the model (or cut the line); else the words to send."""
        words = WORDS
        if entry.last_role == "assistant":  # a prefill: the remainder, or a 400 where it is refused
            if fault == "ok_noprefill":
                entry.action = "400 prefill_rejected"
                message = "This model does not support assistant message prefill."
                return words, await self._error(writer, 400, message, "invalid_request_error", "invalid_prefill", keep)
            partial = str(messages[-1].get("content") or "").strip()
            if partial and CANONICAL_ANSWER.startswith(partial):
                rest = CANONICAL_ANSWER[len(partial) :].split()
                words = [f" {rest[0]}", *rest[1:]] if rest else []  # it continues the sentence
        timing = self.timing
        if fault == "429_retry_after_once":
            entry.action = f"429 retry-after={timing.retry_after_s:g}"
            retry = {"Retry-After": str(int(timing.retry_after_s))}
            message = f"Rate limit reached. Please retry after {timing.retry_after_s:g} seconds."
            answered = await self._error(
                writer, 429, message, "rate_limit_error", "rate_limit_exceeded", keep, headers=retry
            )
            return words, answered
        if fault == "429_persistent":
            entry.action = "429"
            return words, await self._error(
                writer, 429, "Rate limit reached.", "rate_limit_error", "rate_limit_exceeded", keep
            )
        if fault == "500_once":
            entry.action = "500"
            return words, await self._error(writer, 500, "The server had an error.", "server_error", None, keep)
        if fault == "503_persistent" or (fault == "flap" and self.now() < timing.flap_down_s):
            entry.action = "503" if fault != "flap" else "503 (down window)"
            return words, await self._error(
                writer, 503, "The engine is overloaded.", "server_error", "overloaded", keep
            )
        if fault == "reset_once":
            entry.action = "tcp-reset"
            await self._reset(writer)
            return words, False
        if fault == "no_response":
            entry.action = f"no-response {timing.no_response_s:g}s"
            await self._wait_or_gone(reader, timing.no_response_s)
            return words, False
        if fault == "context_length":
            entry.action = "400 context_length_exceeded"
            message = "This model's maximum context length is 8192 tokens. Please reduce the length of the messages."
            code = "context_length_exceeded"
            return words, await self._error(writer, 400, message, "invalid_request_error", code, keep, param="messages")
        if fault == "content_filter":
            entry.action = "400 content_policy_violation"
            message = "Your request was rejected as a result of our safety system."
            code = "content_policy_violation"
            return words, await self._error(writer, 400, message, "invalid_request_error", code, keep)
        if fault == "flap":
            entry.action = "200 (recovered)"
        return words, None

    def _completion(self, model: str, text: str, entry: Attempt, words: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-bench-{len(self.log)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": words,
                "total_tokens": entry.prompt_tokens + words,
            },
        }

    async def _plain(self, writer, model: str, keep: bool, words: list[str], fault: str, entry: Attempt) -> bool:
        if fault == "slow_ttft":
            await asyncio.sleep(self.timing.slow_ttft_s)
        body = json.dumps(self._completion(model, " ".join(words), entry, len(words))).encode()
        entry.action = entry.action or "200"
        if fault in ("stream_cut", "stream_stall", "malformed_chunk"):
            # The plain-body forms of the stream faults: 60 % of a declared length, silence, bad JSON.
            head = self._head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, False)
            if fault == "stream_stall":
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(self.timing.stall_s)
            else:
                writer.write(head + (body[: len(body) * 6 // 10] if fault == "stream_cut" else body[: len(body) // 2]))
                await writer.drain()
            entry.action = f"200 {fault} (plain body)"
            return False
        writer.write(
            self._head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, keep) + body
        )
        await writer.drain()
        return keep

    async def _stream(self, writer, model, keep, words, fault: str, include_usage: bool, entry: Attempt) -> bool:
        timing = self.timing
        ident, created = f"chatcmpl-bench-{len(self.log)}", int(time.time())

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
            event: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
            event["choices"] = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
            if usage:
                event["usage"] = usage
            return f"data: {json.dumps(event)}\n\n".encode()

        async def send(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        writer.write(self._head(200, {**headers, "Transfer-Encoding": "chunked"}, keep))
        await writer.drain()
        entry.action = entry.action or "200 stream"
        if fault == "slow_ttft":
            entry.action = f"200 stream, first token after {timing.slow_ttft_s:g}s"
            await asyncio.sleep(timing.slow_ttft_s)
        await send(chunk({"role": "assistant", "content": ""}))
        for index, word in enumerate(words):
            if fault == "stream_cut" and index == timing.cut_after_tokens:
                entry.action = f"200 stream cut after {index} tokens (no terminating chunk)"
                writer.close()  # a FIN where the last chunk should be
                return False
            if fault == "stream_stall" and index == timing.stall_after_tokens:
                entry.action = f"200 stream stalled after {index} tokens for {timing.stall_s:g}s then close"
                await asyncio.sleep(timing.stall_s)
                writer.close()
                return False
            if fault == "malformed_chunk" and index == timing.malformed_at_token:
                entry.action = f"200 stream with malformed chunk at token {index}"
                await send(b'data: {"id": "' + ident.encode() + b'", "choices": [{"delta": {"content": \n\n')
            await send(chunk({"content": word if index == 0 else f" {word}"}))
            await asyncio.sleep(timing.token_interval_s)
        await send(chunk({}, finish="stop"))
        if include_usage:
            tokens = len(words)
            usage = {
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": tokens,
                "total_tokens": entry.prompt_tokens + tokens,
            }
            await send(chunk({}, usage=usage))
        if fault == "no_done":
            entry.action = "200 stream complete, [DONE] omitted"
        else:
            await send(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep

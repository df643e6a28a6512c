"""Stand-in backends on 127.0.0.1 with fault modes switchable at run time.

- `OpenAIStandIn`: the OpenAI chat-completion API, as vLLM and the cloud tier serve it.
- `OllamaStandIn`: Ollama's native `/api/chat` (NDJSON when streaming), as `ollama_chat/` calls it.

Answers name their model as the real servers do: vLLM its served model name, Ollama the name the
request asked for, OpenAI (`snapshot`) the dated model behind the alias that was asked for.

Each tags its answers with its tier name ("[vllm] ...") and counts the client requests it served,
apart from LiteLLM's health-check probes (recognised by LiteLLM's probe prompt). Modes:
  up             answers at once
  down           port closed: connection refused, like a Service with 0 replicas; requests in
                 flight finish first (a graceful scale-down: SIGTERM, drain)
  crash          like down, but every open connection is cut at once (OOM kill, GPU reset, node loss)
  blackhole      like crash, but new connections never complete: the SYN is dropped, as some CNIs
                 treat a Service without endpoints (Gaming Mode) instead of refusing
  hang           accepts the request and never answers
  slow           a correct answer spread over `delay` seconds (streams send tokens as they go)
  error          HTTP `status` with a realistic body
  stall          streams `stall_after` chunks, then goes silent (hangs)
  garbage        streams `stall_after` chunks, then one event that is not JSON (cut off), then the
                 rest as usual (a proxy or CDN that rewrote the body; Failover Bench S10)
  freeze         the engine stops: every open stream goes silent, queued requests never start,
                 the token counters stop; `/health` still answers (a GPU hung inside a kernel)

Any mode may set `slots`: at most that many requests generate at once, the rest wait in a queue,
as vLLM's does once its batch is full. A streaming request gets its response headers at once and
no event while it waits (vLLM's OpenAI server does the same); probes queue like any request.
`OpenAIStandIn` serves vLLM-style `/metrics` (requests running and waiting, token counters that
move as tokens are produced). `OllamaStandIn(cold_load=…)` pays a model load on the first chat
after it starts, unless the model was loaded first (`POST /api/generate` with no prompt, what
`ollama run <model> ""` sends); `/api/ps` lists the loaded model. Its context is `context_tokens`
(Ollama's default 4096 unless the drill gives it the chain's), and a longer chat prompt is cut as
Ollama 0.12.6 cuts it, without an error, unless the request says `truncate: false` (then a 400).

All servers run on one private event loop in a daemon thread; nothing here listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from drill import tokenizer

# A crash cuts connections mid-write on purpose; aiohttp would log each as an unhandled error.
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

LOOPBACK = "127.0.0.1"
# The accept queue of the real servers: vLLM's API server runs uvicorn (its default `backlog` is
# 2048); aiohttp's own default of 128 dropped the SYNs of a 130-stream burst on a busy CI machine, and
# the gateway, which reads a connect slower than 1 s as dropped packets, sent those requests to Ollama.
LISTEN_BACKLOG = 2048
# LiteLLM's health-check prompts (proxy/health_check.py:_get_random_llm_message).
PROBE_PROMPTS = ("Hey how's it going?", "What's 1 + 1?")
HANG_LIMIT_SECONDS = 600  # a hung request is released at the latest after this, or at stop()

ERROR_BODIES = {
    400: {"message": "This model's maximum context length is 32768 tokens.", "type": "BadRequestError"},
    401: {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"},
    429: {"message": "Rate limit reached. Please try again later.", "type": "rate_limit_error"},
    500: {"message": "Internal server error", "type": "InternalServerError"},
    503: {"message": "The server is overloaded or not ready yet.", "type": "ServiceUnavailableError"},
}


@dataclass
class Mode:
    name: str = "up"
    delay: float = 0.0
    status: int = 500
    stall_after: int = 2
    tokens: int | None = None  # answer length in this mode (default: the stand-in's own)
    slots: int | None = None  # requests generating at once (None: no limit)


class _Loop:
    """One asyncio loop in a daemon thread, shared by every stand-in of a drill."""

    _instance: _Loop | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="standins", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _Loop:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def run(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


class StandIn:
    """Base: a loopback HTTP server whose behaviour the test sets with `set_mode`."""

    def __init__(self, tier: str, model: str, port: int, tokens: int = 8) -> None:
        self.tier = tier
        self.model = model
        self.port = port
        self.tokens = tokens
        self.mode = Mode()
        self.served: Counter[str] = Counter()  # "client", "probe", "client-received", "health"
        self.received_at: list[float] = []  # time.monotonic() of each client request
        self._runner: web.AppRunner | None = None
        self._release = None
        self._slots: asyncio.Semaphore | None = None
        self._blackhole: list[socket.socket] = []
        self.running = 0  # requests generating now
        self.waiting = 0  # requests queued for a slot
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.context_tokens: int | None = None  # the served model's context; None: the server's default
        self.last_token_at: float | None = None  # time.monotonic() of the last answer token sent
        self.peak_running = 0  # most requests generating at once since the last reset_counts
        # (time.monotonic(), "queued" or "generating") of each request its client (the gateway)
        # abandoned: like vLLM, the stand-in aborts a request whose connection closed.
        self.abandoned: list[tuple[float, str]] = []
        self.aborts_when_client_leaves = False  # read when the port opens (see _open_port)

    # ---- control (called from the test thread) ----
    def start(self) -> StandIn:
        _Loop.get().run(self._start())
        return self

    def stop(self) -> None:
        _Loop.get().run(self._stop())

    def set_mode(self, name: str, **options: Any) -> None:
        previous = self.mode.name
        self.mode = Mode(name=name, **options)
        closed = ("down", "crash", "blackhole")
        if previous == "blackhole":
            self._close_blackhole()
        if name in closed and previous not in closed:
            _Loop.get().run(self._close_port(abort=name != "down"))
        if name == "blackhole":
            self._open_blackhole()
        elif name not in closed and previous in closed:
            _Loop.get().run(self._open_port())
        if name not in ("hang", "stall", "freeze"):
            _Loop.get().run(self._release_hung())
        _Loop.get().run(self._set_slots(options.get("slots")))

    def _open_blackhole(self) -> None:
        """A listener that never accepts, its queue (of 1 on Linux with backlog 0) already full:
        the kernel drops every further SYN, so a connect neither succeeds nor is refused."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(0)
        self._blackhole = [listener]
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((LOOPBACK, self.port))
            self._blackhole.append(filler)
        time.sleep(0.1)  # let the fillers take the queue

    def _close_blackhole(self) -> None:
        for sock in self._blackhole:
            sock.close()
        self._blackhole = []

    def reset_counts(self) -> None:
        self.served.clear()
        self.received_at.clear()
        self.last_token_at = None
        self.peak_running = 0
        self.abandoned.clear()

    @property
    def client_requests(self) -> int:
        return self.served["client"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # ---- server internals (on the stand-in loop) ----
    async def _start(self) -> None:
        self._release = asyncio.Event()
        await self._open_port()

    async def _open_port(self) -> None:
        app = web.Application()
        self.routes(app)
        # handler_cancellation: a closed client connection cancels its handler, as vLLM aborts the
        # request of a client that left (queued or generating). Off unless a test asks for it
        # (`aborts_when_client_leaves`, then reopen the port): with it on, a frozen engine's
        # abandoned handlers slowed every stand-in on the shared loop (freeze settled in 36 s, not 4.5).
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=self.aborts_when_client_leaves
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port, reuse_address=True, backlog=LISTEN_BACKLOG).start()

    async def _close_port(self, abort: bool = False) -> None:
        """Like a pod going away: the listener and every open keep-alive connection close."""
        await self._release_hung()
        if abort and self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                if connection.transport is not None:
                    connection.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _set_slots(self, slots: int | None) -> None:
        self._slots = asyncio.Semaphore(slots) if slots else None

    @contextlib.asynccontextmanager
    async def _engine_slot(self):
        """A place in the running batch: queued (no events) until a slot frees, as vLLM does. A request
        whose client left (handler cancelled, or a write to a closed connection) is recorded."""
        state = "queued"
        try:
            self.waiting += 1
            try:
                if self.mode.name == "freeze":
                    await self._hang()
                slots = self._slots
                if slots is not None:
                    await slots.acquire()
            finally:
                self.waiting -= 1
            state = "generating"
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            self.prompt_tokens += 5
            try:
                yield
            finally:
                self.running -= 1
                if slots is not None:
                    slots.release()
        except (asyncio.CancelledError, ConnectionResetError):
            self.abandoned.append((time.monotonic(), state))
            raise

    async def _release_hung(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    async def _stop(self) -> None:
        self._close_blackhole()
        await self._release_hung()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hang(self) -> None:
        release = self._release
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), HANG_LIMIT_SECONDS)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], str, web.Response | None]:
        """Read and count a chat request; the error response its fault mode calls for, if any."""
        body = await request.json()
        kind = self._count(body)
        return body, kind, await self._fault(kind)

    async def _pace_whole_answer(self, words: list[str]) -> None:
        """A non-streaming answer takes as long as its stream would have."""
        for index in range(len(words)):
            await self._pace(index)

    def _count(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        kind = "probe" if text in PROBE_PROMPTS else "client"
        self.served[f"{kind}-received"] += 1
        if kind == "client":
            self.received_at.append(time.monotonic())
        return kind

    async def _fault(self, kind: str) -> web.Response | None:
        """Applies hang / error modes. Returns an error response, or None to go on answering."""
        mode = self.mode
        if mode.name == "hang":
            await self._hang()
            return web.json_response({"error": {"message": "released"}}, status=503)
        if mode.name == "error":
            body = ERROR_BODIES.get(mode.status, {"message": f"HTTP {mode.status}", "type": "error"})
            return web.json_response({"error": {**body, "param": None, "code": body.get("code")}}, status=mode.status)
        return None

    def words(self) -> list[str]:
        count = self.mode.tokens or self.tokens
        return [f"[{self.tier}]"] + [f"w{i}" for i in range(1, count)]

    def garbage_before(self, index: int) -> bool:
        """In `garbage` mode, whether a malformed event goes out before the chunk at `index`."""
        return self.mode.name == "garbage" and index == self.mode.stall_after

    async def _pace(self, index: int) -> None:
        """Spread a slow answer's tokens over `delay` seconds; stall after `stall_after` chunks;
        freeze with the engine."""
        if self.mode.delay > 0 and self.mode.name in ("slow", "freeze"):
            await asyncio.sleep(self.mode.delay / (self.mode.tokens or self.tokens))
        if self.mode.name == "freeze" or (self.mode.name == "stall" and index >= self.mode.stall_after):
            await self._hang()
        self.generated_tokens += 1


CONTEXT_TOKENS = 32768  # the stand-in model's context length, as vLLM reports it
# OpenAI answers an alias (`gpt-4o-mini`) with the dated model it points to (`gpt-4o-mini-2024-07-18`).
CLOUD_SNAPSHOT_DATE = "2024-07-18"


def cloud_snapshot(model: str) -> str:
    return f"{model}-{CLOUD_SNAPSHOT_DATE}"


def vllm_validation_error(body: Any) -> str | None:
    """What vLLM's request model (`ChatCompletionRequest`, pydantic) and its context check refuse
    with a 400, in the stand-in's own words; None for a request vLLM would take. Unknown fields are
    ignored, as vLLM ignores them."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        return "messages: Input should be a valid list of messages with a role"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return "max_tokens must be at least 1"
    if isinstance(max_tokens, int) and max_tokens + 5 > CONTEXT_TOKENS:
        return (
            f"This model's maximum context length is {CONTEXT_TOKENS} tokens. However, you requested "
            f"{max_tokens + 5} tokens (5 in the messages, {max_tokens} in the completion)."
        )
    top_p = body.get("top_p")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        return f"top_p must be in (0, 1], got {top_p}."
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or temperature < 0):
        return f"temperature must be non-negative, got {temperature}."
    top_k = body.get("top_k")  # a sampling extra only vLLM knows: the gateway passes it through
    if top_k is not None and (not isinstance(top_k, int) or top_k < -1):
        return f"top_k must be -1 (disable), 0 or at least 1, got {top_k}."
    return None


def sample_word(word: str, choice: int, samples: int) -> str:
    """The word of choice `choice` (one answer: the word itself; several: `c<choice><word>`)."""
    return word if samples == 1 or word.startswith("[") else f"c{choice}{word}"


def token_logprob(token: str, position: int) -> dict[str, Any]:
    """vLLM's per-token logprob entry (OpenAI's ChatCompletionTokenLogprob shape)."""
    logprob = -0.01 * (position + 1)
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}


class OpenAIStandIn(StandIn):
    """POST /v1/chat/completions (streaming and not), GET /v1/models, GET /health. Answers carry
    `snapshot` if given (the cloud), else the served model name (vLLM's `--served-model-name`)."""

    def __init__(self, tier: str, model: str, port: int, tokens: int = 8, snapshot: str | None = None) -> None:
        super().__init__(tier, model, port, tokens)
        self.answers_as = snapshot or model

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)

    async def metrics(self, request: web.Request) -> web.Response:
        """vLLM's names (vllm/v1/metrics/loggers.py, v0.11), as prometheus_client exposes them."""
        labels = f'{{engine="0",model_name="{self.model}"}}'
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{labels} {self.running}.0",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{labels} {self.waiting}.0",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{labels} {self.prompt_tokens}.0",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{labels} {self.generated_tokens}.0",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def health(self, request: web.Request) -> web.Response:
        self.served["health"] += 1  # a busy engine's probe asks only this and /metrics
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, kind, failed = await self._begin(request)
        if failed is not None:
            return failed
        invalid = vllm_validation_error(body)
        if invalid is not None:
            self.served["invalid"] += 1
            error = {"object": "error", "message": invalid, "type": "BadRequestError", "param": None, "code": 400}
            return web.json_response(error, status=400)
        created = int(time.time())
        ident = f"chatcmpl-{self.tier}-{self.served[kind + '-received']}"
        words = self.words()
        samples = int(body.get("n") or 1)  # `n`: that many choices, each its own sample (c<i>w<k> words)
        with_logprobs = bool(body.get("logprobs"))
        produced = samples * len(words)
        usage = {"prompt_tokens": 5, "completion_tokens": produced, "total_tokens": 5 + produced}
        if not body.get("stream"):
            async with self._engine_slot():
                await self._pace_whole_answer(words)
            self.served[kind] += 1
            choices = []
            for index in range(samples):
                sample = [sample_word(word, index, samples) for word in words]
                choice = {
                    "index": index,
                    "message": {"role": "assistant", "content": " ".join(sample)},
                    "finish_reason": "stop",
                }
                if with_logprobs:
                    choice["logprobs"] = {"content": [token_logprob(word, k) for k, word in enumerate(sample)]}
                choices.append(choice)
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": self.answers_as,
                    "choices": choices,
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(
            delta: dict[str, Any], finish: str | None = None, choice: int = 0, logprobs: dict | None = None
        ) -> None:
            # vLLM interleaves the choices of `n` > 1 in one stream, each event naming its `index`.
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.answers_as,
                "choices": [{"index": choice, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        async with self._engine_slot():
            for choice in range(samples):
                await event({"role": "assistant", "content": ""}, choice=choice)
            for index, word in enumerate(words):
                await self._pace(index)
                if self.garbage_before(index):
                    await response.write(f'data: {{"id": "{ident}", "choices": [{{"delta": {{"content": \n\n'.encode())
                for choice in range(samples):
                    token = sample_word(word, choice, samples)
                    logprobs = {"content": [token_logprob(token, index)]} if with_logprobs else None
                    await event({"content": token if index == 0 else f" {token}"}, choice=choice, logprobs=logprobs)
                self.last_token_at = time.monotonic()
        # Counted before the finish is sent: a client (the gateway) may answer its own client on the
        # finish event, before the lines below are written, and a test then reads the counts.
        self.served[kind] += 1
        for choice in range(samples):
            await event({}, "stop", choice=choice)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_event = {"id": ident, "model": self.answers_as, "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(usage_event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


OLLAMA_DEFAULT_CONTEXT = 4096  # ollama v0.12.6 envconfig/config.go OLLAMA_CONTEXT_LENGTH
OLLAMA_NUM_KEEP = 4  # api/types.go DefaultOptions NumKeep: the prompt's first tokens survive a cut
TOO_LONG = "the input length exceeds the context length"  # runner/ollamarunner/runner.go errorInputTooLong


class OllamaStandIn(StandIn):
    """Ollama's native API: POST /api/chat (NDJSON stream or one JSON), /api/generate (a preload
    without prompt), /api/ps, /api/tags, /api/version. With `cold_load`, the model is not in memory
    after a (re)start until a preload or the first chat loads it."""

    def __init__(self, tier: str, model: str, port: int, tokens: int = 8, cold_load: float = 0.0) -> None:
        super().__init__(tier, model, port, tokens)
        self.cold_load = cold_load
        self.loaded = cold_load == 0
        self.truncations: list[dict[str, int]] = []  # what Ollama logs as `truncating input prompt`
        # The tokenizer loads once, here: on the first request it would delay that request by seconds
        # (tiktoken building its ranks), which a test would take for a slow failover.
        tokenizer.tokens("warm")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/version", self.version)
        app.router.add_post("/api/show", self.show)

    def restart(self, preload: bool) -> None:
        """The pod restarts: the model is gone from memory. With `preload`, the start-up hook
        loads it before the pod is ready, so the port (the Service's endpoint) opens only then."""
        self.set_mode("crash")
        self.loaded = self.cold_load == 0
        if preload:
            _Loop.get().run(self._load(), timeout=self.cold_load + 10)
        self.set_mode("up")

    async def _load(self) -> None:
        if not self.loaded:
            await asyncio.sleep(self.cold_load)
            self.loaded = True

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("prompt"):
            return web.json_response({"error": "the stand-in only preloads"}, status=400)
        await self._load()  # no prompt: load the model and keep it (OLLAMA_KEEP_ALIVE=-1)
        return web.json_response({"model": self.model, "response": "", "done": True, "done_reason": "load"})

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": self.model, "model": self.model}] if self.loaded else []})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": self.model, "model": self.model}]})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response({"modelfile": "", "parameters": "", "template": "", "model_info": {}})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, kind, failed = await self._begin(request)
        if failed is not None:
            return failed
        await self._load()  # a cold model is loaded first: the client pays for it
        evaluated = self._fit_context(body)
        if evaluated is None:
            return web.json_response({"error": TOO_LONG}, status=400)
        words = self.words()
        model = body.get("model") or self.model  # Ollama names the model as it was asked for
        done = {
            "model": model,
            "created_at": "2026-11-26T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": evaluated,
            "eval_count": len(words),
        }
        if body.get("stream") is False:
            await self._pace_whole_answer(words)
            self.served[kind] += 1
            return web.json_response({**done, "message": {"role": "assistant", "content": " ".join(words)}})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for index, word in enumerate(words):
            await self._pace(index)
            if self.garbage_before(index):
                await response.write(b'{"model": "' + model.encode() + b'", "message": {"role": "assistant", "cont\n')
            piece = {
                "model": model,
                "created_at": "2026-11-26T00:00:00Z",
                "message": {"role": "assistant", "content": word if index == 0 else f" {word}"},
                "done": False,
            }
            await response.write((json.dumps(piece) + "\n").encode())
        self.served[kind] += 1  # before the final line, as for the OpenAI stream above
        await response.write((json.dumps({**done, "message": {"role": "assistant", "content": ""}}) + "\n").encode())
        return response

    def _fit_context(self, body: dict[str, Any]) -> int | None:
        """The prompt tokens the model evaluates, or None for Ollama's 400. As ollama v0.12.6 does with
        `truncate` unset or true: server/prompt.go chatPrompt keeps the system messages and the
        newest messages that fit (the last one always), then runner/ollamarunner/runner.go keeps the
        first `num_keep` tokens and the end of what is still too long, logs it, and answers anyway."""
        context = self.context_tokens or OLLAMA_DEFAULT_CONTEXT
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        truncate = body.get("truncate") is not False
        if truncate:
            kept = len(messages) - 1
            for first in range(len(messages) - 2, -1, -1):
                system = [m for m in messages[:first] if m.get("role") == "system"]
                if tokenizer.chat_tokens(system + messages[first:]) > context:
                    break
                kept = first
            messages = [m for m in messages[:kept] if m.get("role") == "system"] + messages[kept:]
        prompt = tokenizer.chat_tokens(messages)
        if prompt <= context:
            return prompt
        if not truncate:
            return None
        self.truncations.append({"limit": context, "prompt": prompt, "keep": OLLAMA_NUM_KEEP, "new": context})
        logging.getLogger("drill.ollama").warning(
            "truncating input prompt limit=%d prompt=%d keep=%d new=%d", context, prompt, OLLAMA_NUM_KEEP, context
        )
        return context

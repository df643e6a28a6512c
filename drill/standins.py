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

Embeddings, as LiteLLM 1.108.7 calls each server (`openai/` and `hosted_vllm/`: POST /v1/embeddings;
`ollama/`: POST /api/embed; `ollama_chat/` cannot embed):
- `OpenAIStandIn` as vLLM 0.11.0 answers POST /v1/embeddings (string, strings, token ids; float or
  base64; `dimensions` only for a matryoshka model; `truncate_prompt_tokens`; its 400/404 bodies).
  A vLLM server serves one model: a chat model answers the embeddings route, and an embedding
  model the chat route, with HTTP 200 and an error body, as vLLM 0.11.0 does. Each input is its own
  engine request: it takes a slot, queues, moves `vllm:num_requests_*` and `vllm:prompt_tokens_total`.
  As the cloud (`snapshot`), OpenAI's embedding models by name; any other model is a 404.
- `OllamaStandIn` as Ollama 0.12.6 answers POST /api/embed (`truncate`, `dimensions`, `keep_alive`,
  `options.num_ctx`; cold loads; its 400/404/500 bodies; a chat model's answer).
- Vectors come from `EmbeddingModel.vector`: deterministic per (weights, text), so the same weights
  on vLLM and Ollama give the same vector (compare with `float32`), other weights an unrelated one.
- Counted in `served`: "embeddings" (answered with vectors), "embeddings-received",
  "embeddings-probe(-received)" (LiteLLM's health check, input ["test"]), "embeddings-invalid"
  (refused by validation), "unsupported" (the wrong route for the model); `last_embedding_body`.
  The fault modes apply as to a chat; `stall` never finishes (no stream), `garbage` cuts the body.

All servers run on one private event loop in a daemon thread; nothing here listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy
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
        self.last_embedding_body: Any = None  # the last embedding request's body, as it arrived

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
    async def _engine_slot(self, prompt_tokens: int = 5):
        """A place in the running batch: queued (no events) until a slot frees, as vLLM does. A request
        whose client left (handler cancelled, or a write to a closed connection) is recorded. Its
        `prompt_tokens` count in `vllm:prompt_tokens_total` once it is scheduled (a chat: 5)."""
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
            self.prompt_tokens += prompt_tokens
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

    # ---- embeddings (the routes are the subclasses') ----
    @property
    def embedding_requests(self) -> int:
        """Client embedding requests answered with vectors."""
        return self.served["embeddings"]

    def _count_embedding(self, body: Any) -> str:
        """The kind: `embeddings` for a client's request, `embeddings-probe` for LiteLLM's health check
        of an embedding model (litellm_core_utils/health_check_helpers.py: `input or ["test"]`)."""
        self.last_embedding_body = body
        text = body.get("input") if isinstance(body, dict) else None
        kind = "embeddings-probe" if text in EMBEDDING_PROBE_INPUTS else "embeddings"
        self.served[f"{kind}-received"] += 1
        if kind == "embeddings":
            self.received_at.append(time.monotonic())
        return kind

    async def _pace_embedding(self) -> None:
        """One forward pass, no tokens out: `slow` takes `delay`, a frozen engine or a stalled one
        never finishes it (an embedding has no stream to stall part-way)."""
        if self.mode.delay > 0 and self.mode.name in ("slow", "freeze"):
            await asyncio.sleep(self.mode.delay)
        if self.mode.name in ("freeze", "stall"):
            await self._hang()

    def _json_answer(self, payload: dict[str, Any], status: int = 200) -> web.Response:
        """The answer, or in `garbage` mode its first half (a proxy that cut the body)."""
        if self.mode.name == "garbage":
            text = json.dumps(payload)
            return web.Response(text=text[: len(text) // 2], status=status, content_type="application/json")
        return web.json_response(payload, status=status)


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


# ---- embeddings: a model's vectors, whichever server computes them ----
# LiteLLM's health check of an embedding model: the SDK's (["test"]) and the proxy's background one
# (health_check_helpers.py: ["test from litellm"]).
EMBEDDING_PROBE_INPUTS = (["test"], "test", ["test from litellm"], "test from litellm")


@dataclass(frozen=True)
class EmbeddingModel:
    """An embedding model's weights. A vector depends on `identity` and the text alone: the same
    weights on vLLM and on Ollama give the same vector (equal at float32 precision, see `float32`),
    other weights another one, of no use beside it. (Real servers differ in the last digits: fp16
    on a GPU against a GGUF on a CPU; a cosine of 0.999+, not equality.)"""

    identity: str  # the weights, as Hugging Face names them ("BAAI/bge-m3")
    dimensions: int  # the vector's native length
    context_tokens: int = 8192  # the trained context: vLLM's max_model_len, Ollama's <arch>.context_length
    # vLLM's `is_matryoshka`/`matryoshka_dimensions` (vllm/config/model.py, from the model's config.json):
    # False, `dimensions` is refused; True, any length; a tuple, only those lengths.
    matryoshka: bool | tuple[int, ...] = False
    special_tokens: int = 2  # what its tokenizer adds around a text (bge-m3, XLM-R: <s> … </s>)

    def vector(self, text: str, dimensions: int | None = None, normalize: bool = True) -> list[float]:
        """The embedding of `text`: L2-normalised float32 values; with `dimensions`, the first that many
        of the full vector, normalised again (what vLLM's pooler and Ollama's EmbedHandler both do)."""
        full = _raw_vector(self.identity, self.dimensions, text)
        cut = full[:dimensions] if dimensions and 0 < dimensions < len(full) else full
        if normalize:
            norm = max(math.sqrt(sum(value * value for value in cut)), 1e-12)
            cut = tuple(value / norm for value in cut)
        return float32(cut)


BGE_M3 = EmbeddingModel("BAAI/bge-m3", 1024)  # no matryoshka fields in its config.json
EMBEDDING_MODELS = {model.identity: model for model in (BGE_M3,)}
# Ollama's library tag -> the weights it packs (ollama.com/library/bge-m3 is BAAI/bge-m3 as a GGUF).
OLLAMA_EMBEDDING_TAGS = {"bge-m3": "BAAI/bge-m3"}
# OpenAI's embedding models (the cloud): text-embedding-3 takes any `dimensions`, ada-002 none. They
# count tokens without special tokens, and take up to 8192 tokens per input.
OPENAI_EMBEDDING_MODELS = {
    "text-embedding-3-small": EmbeddingModel("text-embedding-3-small", 1536, 8192, True, 0),
    "text-embedding-3-large": EmbeddingModel("text-embedding-3-large", 3072, 8192, True, 0),
    "text-embedding-ada-002": EmbeddingModel("text-embedding-ada-002", 1536, 8192, False, 0),
}


def resolve_embedding_model(name: str | EmbeddingModel | None, dimensions: int | None = None) -> EmbeddingModel | None:
    """An `EmbeddingModel` from its Hugging Face id, an Ollama name (`OLLAMA_EMBEDDING_TAGS`, any tag:
    `bge-m3:567m`, the gateway's derived `bge-m3:567m-llm-gateway`) or an OpenAI name; any other
    name is taken as weights of that name, 1024 long. None stays None. `dimensions` replaces the
    native length."""
    if name is None:
        return None
    if isinstance(name, str):
        identity = OLLAMA_EMBEDDING_TAGS.get(ollama_library_model(name), name)
        name = EMBEDDING_MODELS.get(identity) or OPENAI_EMBEDDING_MODELS.get(identity) or EmbeddingModel(identity, 1024)
    return dataclasses.replace(name, dimensions=dimensions) if dimensions else name


@functools.lru_cache(maxsize=4096)
def _raw_vector(identity: str, dimensions: int, text: str) -> tuple[float, ...]:
    """Deterministic across processes and machines: a PRNG seeded with the weights and the text."""
    generator = random.Random(hashlib.sha256(f"{identity}\x00{text}".encode()).digest())
    return tuple(generator.gauss(0.0, 1.0) for _ in range(dimensions))


def float32(values: Any) -> list[float]:
    """Each value rounded to float32, the precision both servers compute in. Compare vectors from two
    tiers with this: vLLM writes a float32's exact value, Ollama (Go) its shortest decimal, and the
    two parse to different float64s."""
    count = len(values)
    return list(struct.unpack(f"<{count}f", struct.pack(f"<{count}f", *values)))


def go_float32(values: list[float]) -> list[float]:
    """The float64s that Go's encoding/json text of float32s parses to: each one's shortest decimal
    (numpy's str of a float32 is that decimal; ~1 ms for 1024 values, where a Python loop took 35)."""
    return [float(str(value)) for value in numpy.asarray(values, dtype=numpy.float32)]


def base64_vector(values: list[float]) -> str:
    """`encoding_format: base64`: the float32 values' little-endian bytes (vLLM 0.11.0
    serving_embedding.py `_get_embedding`; OpenAI's format)."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def decode_base64_vector(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _token_ids(text: str) -> list[int]:
    return tokenizer._encoding().encode_ordinary(text)


def _text_of(token_ids: list[int]) -> str:
    return tokenizer._encoding().decode(token_ids)


def vllm_error(message: str, error_type: str = "BadRequestError", code: int = 400) -> dict[str, Any]:
    """vLLM 0.11.0's ErrorResponse (entrypoints/openai/protocol.py ErrorInfo; serving_engine.py
    create_error_response). A pydantic refusal has type "Bad Request" (api_server.py
    validation_exception_handler)."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def vllm_embedding_request_error(body: Any) -> str | None:
    """What vLLM 0.11.0's EmbeddingCompletionRequest (entrypoints/openai/protocol.py) refuses before
    the server looks at it, in the stand-in's own words; None for a request it takes."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary"
    value = body.get("input")
    texts = isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))
    token_lists = isinstance(value, list) and all(
        isinstance(item, list) and all(isinstance(token, int) for token in item) for item in value
    )
    tokens = isinstance(value, list) and all(isinstance(token, int) for token in value)
    if not (texts or tokens or token_lists):
        return "input: Input should be a string, a list of strings, a list of token ids or a list of such lists"
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "encoding_format: Input should be 'float' or 'base64'"
    for name in ("dimensions", "truncate_prompt_tokens"):
        if body.get(name) is not None and not isinstance(body[name], int):
            return f"{name}: Input should be a valid integer"
    if isinstance(body.get("truncate_prompt_tokens"), int) and body["truncate_prompt_tokens"] < -1:
        return "truncate_prompt_tokens: Input should be greater than or equal to -1"
    return None


def vllm_dimensions_error(served_name: str, model: EmbeddingModel, dimensions: int) -> str | None:
    """vLLM 0.11.0 pooling_params.py `_set_default_parameters` (task "embed")."""
    if not model.matryoshka:
        return (
            f'Model "{served_name}" does not support matryoshka representation, '
            f"changing output dimensions will lead to poor results."
        )
    if isinstance(model.matryoshka, tuple) and dimensions not in model.matryoshka:
        return (
            f'Model "{served_name}" only supports {list(model.matryoshka)} matryoshka dimensions, '
            f"use other output dimensions will lead to poor results."
        )
    if dimensions < 1:
        return "Dimensions must be greater than 0"
    return None


class OpenAIStandIn(StandIn):
    """POST /v1/chat/completions (streaming and not), POST /v1/embeddings, GET /v1/models, GET /health.
    Answers carry `snapshot` if given (the cloud), else the served model name (vLLM's
    `--served-model-name`).

    As vLLM, one server serves one model, a chat model or an embedding model (`embedding_model`: its
    weights, by default found from `model` when that names a known embedding model, see
    `resolve_embedding_model`; `dimensions` overrides its length). Each asked for the other's route
    answers as vLLM 0.11.0 does: HTTP 200 with an error body (api_server.py `create_embedding`,
    `create_chat_completion`; vllm-project/vllm issue #21704). With `snapshot` it is the cloud, and
    embeds with OpenAI's models by name (`OPENAI_EMBEDDING_MODELS`)."""

    def __init__(
        self,
        tier: str,
        model: str,
        port: int,
        tokens: int = 8,
        snapshot: str | None = None,
        embedding_model: str | EmbeddingModel | None = None,
        dimensions: int | None = None,
    ) -> None:
        super().__init__(tier, model, port, tokens)
        self.answers_as = snapshot or model
        self.cloud = snapshot is not None
        known = model in EMBEDDING_MODELS or ollama_library_model(model) in OLLAMA_EMBEDDING_TAGS
        weights = embedding_model or (model if known else None)
        self.embedding = None if self.cloud else resolve_embedding_model(weights, dimensions)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
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
        if self.embedding is not None:  # an embedding model: vLLM has no chat handler for it
            self.served["unsupported"] += 1
            return web.json_response(vllm_error("The model does not support Chat Completions API"))
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

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(vllm_error("JSON decode error", "Bad Request"), status=400)
        kind = self._count_embedding(body)
        failed = await self._fault(kind)
        if failed is not None:
            return failed
        answer = self._openai_embeddings if self.cloud else self._vllm_embeddings
        return await answer(body, kind)

    def _refuse(self, error: dict[str, Any], status: int) -> web.Response:
        self.served["embeddings-invalid"] += 1
        return web.json_response(error, status=status)

    async def _vllm_embeddings(self, body: Any, kind: str) -> web.Response:
        """vLLM 0.11.0's POST /v1/embeddings, in its order: the body (FastAPI, protocol.py), the
        embedding handler (api_server.py `create_embedding`), then serving_engine.py `_pipeline`: the
        model name, `truncate_prompt_tokens`, the inputs (renderer.py, inputs/parse.py), `dimensions`
        (pooling_params.py), the token ids (v1/engine/processor.py), the engine. Each input is its own engine request
        (serving_embedding.py `_create_single_prompt_generator`): it takes an engine slot, queues
        behind a full batch and counts in `vllm:prompt_tokens_total` as a chat prompt does
        (v1/engine/output_processor.py `_update_stats_from_output` on every output, pooling ones
        included; v1/metrics/stats.py adds `prompt_len` while prefilling)."""
        invalid = vllm_embedding_request_error(body)  # FastAPI validates the body before the route runs
        if invalid is not None:
            return self._refuse(vllm_error(invalid, "Bad Request"), 400)
        model = self.embedding
        if model is None:  # a chat model: vLLM registered no embedding handler
            self.served["unsupported"] += 1
            return web.json_response(vllm_error("The model does not support Embeddings API"))
        if body.get("model") and body["model"] != self.model:
            return self._refuse(vllm_error(f"The model `{body['model']}` does not exist.", "NotFoundError", 404), 404)
        max_model_len = self.context_tokens or model.context_tokens  # `--max-model-len`, else the model's
        truncate = body.get("truncate_prompt_tokens")
        if truncate is not None and truncate > max_model_len:
            message = (
                "truncate_prompt_tokens value is greater than max_model_len. Please, select a smaller truncation size."
            )
            return self._refuse(vllm_error(message), 400)
        prompts = self._vllm_prompts(body["input"], model, max_model_len, truncate)
        if isinstance(prompts, str):
            return self._refuse(vllm_error(prompts), 400)
        dimensions = body.get("dimensions")
        problem = None if dimensions is None else vllm_dimensions_error(self.model, model, dimensions)
        if problem is None:
            highest = max((max(ids, default=0) for ids in prompts if isinstance(ids, list)), default=0)
            if highest >= tokenizer._encoding().n_vocab:
                problem = f"Token id {highest} is out of vocabulary"
        if problem is not None:
            return self._refuse(vllm_error(problem), 400)
        texts = [prompt if isinstance(prompt, str) else _text_of(prompt) for prompt in prompts]
        counts = [
            len(prompt) if isinstance(prompt, list) else len(_token_ids(prompt)) + model.special_tokens
            for prompt in prompts
        ]

        async def pool(prompt_tokens: int) -> None:
            async with self._engine_slot(prompt_tokens):
                await self._pace_embedding()

        await asyncio.gather(*(pool(count) for count in counts))
        self.served[kind] += 1
        encode = base64_vector if body.get("encoding_format") == "base64" else list
        normalize = body.get("normalize") is not False  # a vLLM extra: `normalize: false`, the raw pooled vector
        data = [
            {"index": index, "object": "embedding", "embedding": encode(model.vector(text, dimensions, normalize))}
            for index, text in enumerate(texts)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts), "completion_tokens": 0}
        return self._json_answer(
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": self.model,  # the served name, whatever the request said (OpenAIServingModels.model_name)
                "data": data,
                "usage": {**usage, "prompt_tokens_details": None},
            }
        )

    def _vllm_prompts(
        self, value: Any, model: EmbeddingModel, max_length: int, truncate: int | None
    ) -> list[str | list[int]] | str:
        """The prompts of `input` (a text stays text, token ids stay ids), or vLLM's refusal. A text
        counts its tokens plus the model's special tokens; `truncate_prompt_tokens` keeps a text's
        first tokens (the tokenizer's right-side truncation) and token ids' last (renderer.py
        `_maybe_apply_truncation`); -1 means `max_length`."""
        if isinstance(value, str):
            batch: list[str | list[int]] = [value]
        elif not value or (isinstance(value[0], list) and not value[0]):
            return "please provide at least one prompt"
        elif isinstance(value[0], int):
            batch = [value]
        else:
            batch = list(value)
        if truncate == -1:
            truncate = max_length
        prompts: list[str | list[int]] = []
        for prompt in batch:
            if isinstance(prompt, str):
                ids = _token_ids(prompt)
                if truncate is not None and len(ids) + model.special_tokens > truncate:
                    prompt = _text_of(ids[: max(truncate - model.special_tokens, 0)])
                    ids = _token_ids(prompt)
                length = len(ids) + model.special_tokens
            else:
                prompt = prompt[-truncate:] if truncate else prompt
                length = len(prompt)
            if length > max_length:
                return (
                    f"This model's maximum context length is {max_length} tokens. However, your request has "
                    f"{length} input tokens. Please reduce the length of the input messages."
                )
            prompts.append(prompt)
        return prompts

    async def _openai_embeddings(self, body: Any, kind: str) -> web.Response:
        """OpenAI's POST /v1/embeddings: its models by name, float or base64, `dimensions` on
        text-embedding-3, 8192 tokens per input. Its error texts are the stand-in's approximation
        of OpenAI's; the shape is OpenAI's."""

        def refusal(message: str, status: int = 400, code: str | None = None) -> web.Response:
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
            return self._refuse({"error": error}, status)

        name = body.get("model") if isinstance(body, dict) else None
        model = OPENAI_EMBEDDING_MODELS.get(name) if isinstance(name, str) else None
        if model is None:
            return refusal(
                f"The model `{name}` does not exist or you do not have access to it.", 404, "model_not_found"
            )
        value = body.get("input")
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            value = [value]
        if not isinstance(value, list) or not value:
            return refusal(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
            )
        texts = [item if isinstance(item, str) else _text_of(item) for item in value]
        counts = [len(item) if isinstance(item, list) else len(_token_ids(item)) for item in value]
        dimensions = body.get("dimensions")
        if dimensions is not None and not model.matryoshka:
            return refusal("This model does not support specifying dimensions.")
        if dimensions is not None and not 1 <= dimensions <= model.dimensions:
            return refusal(f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {model.dimensions}.")
        if max(counts) > model.context_tokens:
            return refusal(
                f"This model's maximum context length is {model.context_tokens} tokens, however you requested "
                f"{max(counts)} tokens ({max(counts)} in your prompt; 0 for the completion). Please reduce your "
                f"prompt; or completion length."
            )
        async with self._engine_slot(sum(counts)):
            await self._pace_embedding()
        self.served[kind] += 1
        encode = base64_vector if body.get("encoding_format") == "base64" else list
        data = [
            {"object": "embedding", "index": index, "embedding": encode(model.vector(text, dimensions))}
            for index, text in enumerate(texts)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return self._json_answer({"object": "list", "data": data, "model": name, "usage": usage})


OLLAMA_DEFAULT_CONTEXT = 4096  # ollama v0.12.6 envconfig/config.go OLLAMA_CONTEXT_LENGTH
OLLAMA_NUM_KEEP = 4  # api/types.go DefaultOptions NumKeep: the prompt's first tokens survive a cut
TOO_LONG = "the input length exceeds the context length"  # runner/ollamarunner/runner.go errorInputTooLong


# Ollama 0.12.6 runs these families on its new engine (fs/ggml/ggml.go OllamaEngineRequired), whose
# runner refuses to embed with a model that has no pooling (runner/ollamarunner/runner.go `embeddings`:
# 501, which EmbedHandler answers as a 500). Every other chat model runs on the llama.cpp runner, which
# embeds with it anyway (runner/llamarunner/runner.go: the context is made with embeddings on), a
# vector of the model's hidden size. The stand-in tells the family from the tag's prefix.
OLLAMA_NEW_ENGINE_FAMILIES = ("gemma3", "mistral3", "mistral-small3", "qwen3", "llama4", "qwen2.5vl", "gpt-oss")
OLLAMA_CHAT_HIDDEN_SIZES = {"qwen2.5:0.5b": 896, "qwen2.5:1.5b": 1536, "qwen2.5:3b": 2048, "qwen2.5:7b": 3584}
OLLAMA_CHAT_CONTEXT = 32768  # qwen2.5's qwen2.context_length
# Ollama's texts for the `error` mode (server/sched.go ErrMaxQueue; llm/server.go a runner that died).
NOT_JSON = "<not JSON>"  # a body that did not parse, as `last_embedding_body` records it
OLLAMA_ERRORS = {
    500: "llama runner process has terminated: signal: killed",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def ollama_key(name: str) -> str:
    """How Ollama finds a model by name (types/model/name.go ParseName, case-insensitive in
    server/routes.go getExistingName): default host and namespace, tag `latest`."""
    name = name.lower().removeprefix("registry.ollama.ai/").removeprefix("library/")
    return name if name.rfind(":") > name.rfind("/") else f"{name}:latest"


def ollama_library_model(name: str) -> str:
    """The model part of an Ollama name, without its tag: `bge-m3` of `bge-m3:567m-llm-gateway`."""
    key = ollama_key(name)
    return key[: key.rfind(":")]


def _go_unmarshal_error(field: str, go_type: str, value: Any) -> str:
    """encoding/json's UnmarshalTypeError text, as gin's ShouldBindJSON hands it to EmbedHandler."""
    kind = {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(value))
    return (
        f"json: cannot unmarshal {kind or 'number ' + json.dumps(value)} into Go struct field "
        f"EmbedRequest.{field} of type {go_type}"
    )


def _keep_alive_seconds(value: Any) -> float | str | None:
    """api/types.go Duration.UnmarshalJSON: a number of seconds or a Go duration string; the error
    text for anything else. None: not given."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    if isinstance(value, str):
        parts = re.fullmatch(r"(-?)((?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+|0)", value)
        if parts:
            total = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", value))
            return -total if parts.group(1) else total
        return f'time: invalid duration "{value}"'
    return f"Unsupported type: '{type(value).__name__}'"


class OllamaStandIn(StandIn):
    """Ollama's native API: POST /api/chat (NDJSON stream or one JSON), /api/embed, /api/generate (a
    preload without prompt), /api/ps, /api/tags, /api/version. With `cold_load`, the model is not in
    memory after a (re)start until a preload or the first chat loads it.

    `model` is an embedding model when `embedding_model` names its weights, or when it is a known
    embedding tag (`OLLAMA_EMBEDDING_TAGS`); `dimensions` overrides the weights' length. Such a model
    embeds and refuses to chat (`"bge-m3" does not support chat`), as Ollama 0.12.6 does.
    `embedding_tags` adds embedding models the same server has pulled ({"bge-m3": "BAAI/bge-m3"}),
    beside a chat `model`; each loads on its first use, paying `cold_load`. A chat model asked to embed
    answers as Ollama's runner for it would (`OLLAMA_NEW_ENGINE_FAMILIES`)."""

    def __init__(
        self,
        tier: str,
        model: str,
        port: int,
        tokens: int = 8,
        cold_load: float = 0.0,
        embedding_model: str | EmbeddingModel | None = None,
        dimensions: int | None = None,
        embedding_tags: Mapping[str, str | EmbeddingModel] | None = None,
    ) -> None:
        super().__init__(tier, model, port, tokens)
        self.cold_load = cold_load
        self.loaded = cold_load == 0
        self.truncations: list[dict[str, int]] = []  # what Ollama logs as `truncating input prompt`
        known = ollama_library_model(model) in OLLAMA_EMBEDDING_TAGS
        self.embedding = resolve_embedding_model(embedding_model or (model if known else None), dimensions)
        self.embedding_tags = {ollama_key(tag): resolve_embedding_model(w) for tag, w in (embedding_tags or {}).items()}
        self.loaded_tags: set[str] = set()  # which of `embedding_tags` are in memory
        self.embed_truncations: list[dict[str, int]] = []  # EmbedHandler's log line: ctxLen, tokenCount
        # The tokenizer loads once, here: on the first request it would delay that request by seconds
        # (tiktoken building its ranks), which a test would take for a slow failover.
        tokenizer.tokens("warm")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/embed", self.embed)
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
        self.loaded_tags.clear()
        if preload:
            _Loop.get().run(self._load(), timeout=self.cold_load + 10)
        self.set_mode("up")

    async def _load(self) -> None:
        if not self.loaded:
            await asyncio.sleep(self.cold_load)
            self.loaded = True

    async def _load_model(self, key: str) -> None:
        if key == ollama_key(self.model):
            await self._load()
        elif key not in self.loaded_tags:
            await asyncio.sleep(self.cold_load)
            self.loaded_tags.add(key)

    def _find(self, name: str) -> tuple[str, EmbeddingModel | None] | None:
        """The model's key and, for an embedding model, its weights; None for a model not pulled."""
        key = ollama_key(name)
        if key == ollama_key(self.model):
            return key, self.embedding
        if key in self.embedding_tags:
            return key, self.embedding_tags[key]
        return None

    def _embedding_only(self, name: str) -> bool:
        found = self._find(name)
        return found is not None and found[1] is not None

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("model") or self.model
        if self._embedding_only(name):  # server/routes.go GenerateHandler: no completion capability
            return web.json_response({"error": f"{json.dumps(name)} does not support generate"}, status=400)
        if body.get("prompt"):
            return web.json_response({"error": "the stand-in only preloads"}, status=400)
        await self._load()  # no prompt: load the model and keep it (OLLAMA_KEEP_ALIVE=-1)
        return web.json_response({"model": self.model, "response": "", "done": True, "done_reason": "load"})

    def _names(self, loaded_only: bool) -> list[dict[str, str]]:
        names = [self.model] if self.loaded or not loaded_only else []
        names += [tag for tag in self.embedding_tags if tag in self.loaded_tags or not loaded_only]
        return [{"name": name, "model": name} for name in names]

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self._names(loaded_only=True)})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self._names(loaded_only=False)})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response({"modelfile": "", "parameters": "", "template": "", "model_info": {}})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, kind, failed = await self._begin(request)
        if failed is not None:
            return failed
        name = body.get("model") or self.model
        if self._embedding_only(name):  # server/routes.go ChatHandler: no completion capability
            self.served["unsupported"] += 1
            return web.json_response({"error": f"{json.dumps(name)} does not support chat"}, status=400)
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

    def _chat_model_weights(self, key: str) -> EmbeddingModel:
        """What a chat model embeds with on the llama.cpp runner: its last hidden state."""
        sizes = [size for tag, size in OLLAMA_CHAT_HIDDEN_SIZES.items() if key.startswith(tag)]
        return EmbeddingModel(key, sizes[0] if sizes else 4096, OLLAMA_CHAT_CONTEXT, special_tokens=0)

    async def embed(self, request: web.Request) -> web.Response:
        """Ollama 0.12.6's POST /api/embed (server/routes.go EmbedHandler; api/types.go EmbedRequest,
        EmbedResponse), what LiteLLM's `ollama/` embeddings call. In its order: the body, the input's
        type, the model (404 if not pulled), the load (a cold model pays `cold_load`), each input's
        tokens against min(num_ctx, the model's context) — cut to 2 tokens under it (room for BOS and
        EOS) unless `truncate: false`, then a 400 — and the vectors, L2-normalised, then cut to
        `dimensions` and normalised again. `prompt_eval_count` counts the inputs' tokens without
        special tokens (llm/server.go Tokenize adds none). Durations are nanoseconds; zero fields are
        left out (omitempty)."""
        started = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = NOT_JSON
        kind = self._count_embedding(body)
        if self.mode.name == "error":
            message = OLLAMA_ERRORS.get(self.mode.status, f"HTTP {self.mode.status}")
            return web.json_response({"error": message}, status=self.mode.status)
        failed = await self._fault(kind)
        if failed is not None:
            return failed

        def refuse(message: str, status: int = 400) -> web.Response:
            self.served["embeddings-invalid"] += 1
            return web.json_response({"error": message}, status=status)

        if body is None:
            return refuse("missing request body")
        if body is NOT_JSON:
            return refuse("invalid character looking for beginning of value")
        if not isinstance(body, dict):
            kind_of_body = {list: "array", str: "string", bool: "bool"}.get(type(body), "number")
            return refuse(f"json: cannot unmarshal {kind_of_body} into Go value of type api.EmbedRequest")
        for field, go_type, accepts in (
            ("model", "string", str),
            ("truncate", "bool", bool),
            ("dimensions", "int", int),
            ("options", "map[string]interface {}", dict),
        ):
            value = body.get(field)
            if value is not None and (not isinstance(value, accepts) or (accepts is int and isinstance(value, bool))):
                return refuse(_go_unmarshal_error(field, go_type, value))
        keep_alive = _keep_alive_seconds(body.get("keep_alive"))
        if isinstance(keep_alive, str):
            return refuse(keep_alive)
        value = body.get("input")
        if isinstance(value, str):
            inputs = [value] if value else []
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            inputs = list(value)
        elif value is None:
            inputs = []
        else:
            return refuse("invalid input type")
        name = body.get("model") or ""
        if not name:
            return refuse("model is required")
        found = self._find(name)
        if found is None:
            return refuse(f"model {json.dumps(name)} not found, try pulling it first", 404)
        key, weights = found
        refuses_to_embed = weights is None and key.startswith(OLLAMA_NEW_ENGINE_FAMILIES)
        weights = weights or self._chat_model_weights(key)
        await self._load_model(key)
        loaded_at = time.monotonic()
        if not inputs:  # an empty request only loads the model
            self.served[kind] += 1
            return web.json_response({"model": name, "embeddings": []})
        options = body.get("options") or {}
        num_ctx = options.get("num_ctx") if isinstance(options.get("num_ctx"), int) else None
        context = min(num_ctx or self.context_tokens or OLLAMA_DEFAULT_CONTEXT, weights.context_tokens)
        texts, count = [], 0
        for text in inputs:
            ids = _token_ids(text)
            if len(ids) > context:
                if body.get("truncate") is False:
                    return refuse("input exceeds maximum context length")
                keep = context - 2  # the input has neither BOS nor EOS: room for both
                if keep <= 0:
                    return refuse("input after truncation exceeds maximum context length")
                self.embed_truncations.append({"ctxLen": keep, "tokenCount": len(ids)})
                ids = ids[:keep]
                text = _text_of(ids)
            count += len(ids)
            texts.append(text)
        if refuses_to_embed:
            return refuse("this model does not support embeddings", 500)
        await self._pace_embedding()
        dimensions = body.get("dimensions") or 0
        vectors = [go_float32(weights.vector(text, dimensions if dimensions > 0 else None)) for text in texts]
        self.served[kind] += 1
        if keep_alive == 0:  # unloaded once idle
            if key == ollama_key(self.model):
                self.loaded = False
            self.loaded_tags.discard(key)
        answer = {
            "model": name,  # as the request named it
            "embeddings": vectors,
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": int((loaded_at - started) * 1e9),
            "prompt_eval_count": count,
        }
        return self._json_answer({field: value for field, value in answer.items() if value or field == "embeddings"})

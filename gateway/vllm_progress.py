"""vLLM by progress, not by total duration: a LiteLLM custom provider that runs inside the proxy.

Shipped in the gateway's ConfigMap beside config.yaml (LiteLLM loads `custom_handler` modules from
the config's directory first). The vLLM tier's deployment uses model `vllm-progress/<model>`.

Why: LiteLLM's `timeout` is one number for the whole answer. Short, it cuts healthy long answers
and re-sends them down the chain; long, a request already sent to a hung vLLM waits all of it.
This handler always asks vLLM for a stream, even when the client wants one plain response, and
watches the stream instead. A busy GPU is not a dead one: a request that is quiet (no first event
within `first_token_timeout`, or silent for `stall_timeout` between events) is only given up on
when the **engine** has made no progress either. The engine's progress is known two ways:
- every event of every vLLM stream this gateway process has open (`EngineWatch.saw_event`);
- vLLM's own Prometheus counters at `/metrics` (`vllm:generation_tokens_total`,
  `vllm:prompt_tokens_total`; names from vllm/v1/metrics/loggers.py, v0.11), sampled about twice a
  second while a request is quiet or the probe's idle check waits (not during ordinary traffic),
  which also shows tokens produced for other gateway replicas; they count only when they go up.
So a request queued behind a full batch stays on vLLM while anyone's tokens flow, and a hung GPU
(nothing moves for anyone) is given up on after the same limits as before. When `/metrics` cannot be
read although vLLM answers, only the first way is left: `llm_gateway_vllm_progress_blind` says so,
and the log says it once (`MetricsEvidence`).

Limits (the deployment's litellm_params, rendered from stack config by core/chain.py):
- `first_token_timeout`: how long a request may wait for its first event before the engine's
  progress is consulted; a hung engine is given up on after this;
- `stall_timeout`: the longest silence between events (or, for a waiting request, the longest the
  engine may go without progress) before the request is given up on;
- `max_queue_seconds` (0: off): a request still without its first event after this spills to the
  next tier even though the engine progresses. It raises `litellm.APIConnectionError`, which
  LiteLLM never cools down (router_utils/cooldown_handlers.py `_is_cooldown_required`), so one
  spilled request does not take vLLM away from everyone;
- `timeout` (the deployment's own): an overall cap, so nothing runs forever; checked on every
  event too. Past it, `litellm.APIConnectionError` as for `max_queue_seconds`: a long answer is not
  a hung GPU, and is not cooled down.
A hung engine raises `litellm.Timeout`: the router falls back and cools vLLM down. For a
non-streaming client the events are assembled into the usual chat.completion. An error answer that
asks to be retried shortly (a 5xx; a `Retry-After`) is tried once more on vLLM first, if the retry
still fits in the first try's `first_token_timeout` (`same_tier_retry_delay`); an event that is not JSON is skipped.

The background health check (`engine_probe` in `model_info.health_check_params`) is not a generation
that queues behind the load: it asks vLLM's `/health`, and judges a busy engine by its progress. Only
an idle engine (nothing running or waiting) gets a one-token generation; if a burst overtakes that
token, the engine's progress passes the probe as busy.

A streaming client whose vLLM stream stalls after it has received chunks gets an error and no
fallback: splicing two tiers' text into one answer would be worse than a clean failure.

Embeddings (`aembedding`, a deployment whose `model_info.mode` is `embedding`) follow the same rules.
vLLM answers them as one JSON body, whose head comes only when the work is done: the whole exchange
(connect, head, body) is the quiet time, judged as a request before its first event.
"""

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import litellm
from aiohttp.http_exceptions import HttpProcessingError
from litellm import CustomLLM
from litellm.types.utils import EmbeddingResponse, GenericStreamingChunk, ModelResponse

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import (
    ENGINE_PROBE,
    FIRST_TOKEN_TIMEOUT,
    LIMIT_KEYS,
    MAX_CONNECTIONS,
    MAX_QUEUE_SECONDS,
    PROGRESS_BLIND,
    STALL_TIMEOUT,
    gateway_gauge,
)

T = TypeVar("T")
# LiteLLM mixes these into the parameters it hands a custom provider; vLLM must not get them.
NOT_FOR_VLLM = {"stream", "stream_options", "max_retries", "timeout", ENGINE_PROBE, *LIMIT_KEYS}
# `/health` and `/metrics` have a client of their own: they never wait for a connection behind the
# traffic (with one shared pool, 110 streams left the probe queued and vLLM judged unhealthy).
PROBE_CONNECTIONS = 4
# An in-cluster connect takes well under a millisecond. One that takes longer means the SYN was
# dropped (a CNI that blackholes a Service without endpoints, as in Gaming Mode): treated as a
# timeout, so vLLM is cooled down and the next requests skip it instead of each waiting.
CONNECT_TIMEOUT_SECONDS = 1.0
# ... but only after a second try. A connect also "times out" when this process's event loop was
# blocked past the limit (CPU throttled at the pod's limit, a lazy import at first use): the timer
# and the finished connect are handled in the same loop turn, and the timer wins. Measured: a 1.5 s
# block turned a loopback connect into a ConnectTimeout, and a replica's first probe, starved while
# the other replica started, cooled vLLM down. A dropped SYN is dropped again (1 s more in Gaming
# Mode's first request); a blocked loop connects at once on the second try.
CONNECT_TRIES = 2
CONNECT_TIMEOUTS = (httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError)
# How long an idle pooled connection to vLLM is kept. vLLM's uvicorn closes one idle for 5 s
# (vllm/entrypoints/openai/api_server.py passes envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE, default 5, as
# uvicorn's own default, uvicorn/config.py Config(timeout_keep_alive=5)); aiohttp keeps them 15 s
# (connector.py BaseConnector keepalive_timeout), httpx 5 s (keepalive_expiry). A request sent on a
# connection the server closes at that moment gets no answer (ServerDisconnectedError): judged a
# failure, it went to Ollama, or failed a probe and cooled vLLM down. Below 5 s by 2 s, the longest
# event-loop block measured here (1.5 s) between taking a connection and the request reaching vLLM.
KEEPALIVE_SECONDS = 3.0
# A request that lost its connection before the answer's head is sent once more: aiohttp does so
# for idempotent methods only (client.py ClientSession._request, after RFC 9112 9.3.1), and a
# generation or an embedding changes nothing on vLLM. A refused or timed-out connect is not this
# (aiohttp's connector errors are ClientOSErrors too, and are excluded).
DROPPED_BEFORE_THE_HEAD = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# The longest SSE line read whole: a big tool call or logprobs event fits (aiohttp's default: 64 KiB).
EVENT_BUFFER_BYTES = 2**20
CHECK_EVERY_SECONDS = 0.25  # how often a quiet request looks at the engine's progress
SAMPLE_EVERY_SECONDS = 0.5  # how often vLLM's /metrics is read while a request is quiet
# A request quiet this long (or a quarter of its own limit, if shorter) starts the sampling, so
# that the counters have a baseline and a few samples by the time its limit is reached.
SAMPLE_WHEN_QUIET_SECONDS = 1.0
PROGRESS_COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total")
QUEUE_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


class Limits:
    # A plain class, not a dataclass: LiteLLM execs this file without registering it in
    # sys.modules, and dataclasses look their module up there.
    def __init__(
        self, first_token: float, stall: float, max_queue: float, total: float, provider: str, connections: int = 0
    ) -> None:
        self.first_token = first_token
        self.stall = stall
        self.max_queue = max_queue  # 0: off
        self.total = total
        self.provider = provider  # as the deployment names it (`<provider>/<model>`)
        self.connections = connections  # this process's pool to vLLM (0: 100)


class MissingLimit(ValueError):
    """The deployment lacks a limit this handler needs: the config is wrong, not vLLM."""


def _limits(
    optional_params: dict[str, Any], litellm_params: dict[str, Any] | None, timeout: Any, provider: str | None = None
) -> Limits:
    """The limits from the deployment's own litellm_params (core/chain.py renders them).
    Nothing stands in for a missing one: a silent default would hide a config that drifted.
    `provider`: the provider's name where LiteLLM leaves it out of litellm_params (embeddings)."""
    merged = {**(litellm_params or {}), **optional_params}
    merged["custom_llm_provider"] = merged.get("custom_llm_provider") or provider
    missing = [key for key in (*LIMIT_KEYS, "custom_llm_provider") if merged.get(key) is None]
    if missing or not isinstance(timeout, int | float):
        raise MissingLimit(f"vllm_progress: the deployment must set {', '.join(missing) or 'timeout'}")
    return Limits(
        first_token=float(merged[FIRST_TOKEN_TIMEOUT]),
        stall=float(merged[STALL_TIMEOUT]),
        max_queue=float(merged[MAX_QUEUE_SECONDS]),
        total=float(timeout),
        provider=str(merged["custom_llm_provider"]),
        connections=int(merged[MAX_CONNECTIONS]),
    )


def _payload(model: str, messages: list, optional_params: dict[str, Any]) -> dict[str, Any]:
    payload = {key: value for key, value in optional_params.items() if key not in NOT_FOR_VLLM}
    payload.update(model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    return payload


# The client's own embedding options. LiteLLM 1.108.7 never hands them to a custom provider: for a
# provider it does not know, utils.py `get_optional_params_embeddings` refuses any of OpenAI's
# embedding parameters (UnsupportedParamsError, a 400 that stops the chain) or, with the deployment's
# `drop_params: true`, drops them, and `add_provider_specific_params_to_optional_params` passes on
# only the others. OpenAI's SDK sends `encoding_format: base64` unless told otherwise
# (openai/lib/_parsing/_embeddings.py `prepare_embedding_request`), so the deployment drops them and
# they are read back from the request as the proxy received it (`proxy_server_request.body`,
# proxy/litellm_pre_call_utils.py `add_litellm_data_to_request`): base64 stays base64, and asked-for
# `dimensions` are vLLM's to grant or refuse (400), never silently a longer vector.
CLIENT_EMBEDDING_FIELDS = ("encoding_format", "dimensions")


def _embedding_payload(
    model: str, texts: Any, optional_params: dict[str, Any], litellm_params: dict[str, Any] | None
) -> dict[str, Any]:
    payload = {key: value for key, value in optional_params.items() if key not in NOT_FOR_VLLM}
    request = (litellm_params or {}).get("proxy_server_request")
    body = request.get("body") if isinstance(request, dict) else None
    if isinstance(body, dict):
        payload.update({key: body[key] for key in CLIENT_EMBEDDING_FIELDS if body.get(key) is not None})
    payload.update(model=model, input=texts)
    return payload


_STATUS_ERRORS = {
    400: litellm.BadRequestError,
    401: litellm.AuthenticationError,
    404: litellm.NotFoundError,
    429: litellm.RateLimitError,
    500: litellm.InternalServerError,
    502: litellm.BadGatewayError,
    503: litellm.ServiceUnavailableError,
}


def _status_error(status: int, body: str, model: str, provider: str) -> Exception:
    """vLLM's HTTP error as the litellm exception the router knows (a 400 stays a 400: no fallback)."""
    try:
        message = json.loads(body).get("error", {}).get("message") or body
    except (ValueError, AttributeError):
        message = body
    message = f"vLLM answered {status}: {str(message)[:500]}"
    error_class = _STATUS_ERRORS.get(status)
    if error_class is None:
        return litellm.APIError(status_code=status, message=message, llm_provider=provider, model=model)
    return error_class(message=message, model=model, llm_provider=provider)


HTTPX_POOL = {"max_connections": 100, "max_keepalive_connections": 20}  # httpx's defaults


class _Clients:
    """One pooled httpx client per event loop (the proxy may run several workers/loops), for vLLM's
    `/health` and `/metrics`: not the hot path, and never queued behind generations."""

    def __init__(self) -> None:
        self.by_loop: dict[int, httpx.AsyncClient] = {}

    def get(self, connections: int = 0) -> httpx.AsyncClient:
        """`connections`: the pool's size, taken from the first call on this loop (0: httpx's 100)."""
        key = id(asyncio.get_running_loop())
        if key not in self.by_loop:
            # Our own time limits govern; httpx's read timeout stays out of the way.
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)
            sized = {"max_connections": connections, "max_keepalive_connections": connections} if connections else {}
            pool = httpx.Limits(**{**HTTPX_POOL, **sized}, keepalive_expiry=KEEPALIVE_SECONDS)
            self.by_loop[key] = httpx.AsyncClient(timeout=timeout, trust_env=False, limits=pool)
        return self.by_loop[key]


class _Sessions:
    """One pooled aiohttp session per event loop, for generations (the hot path). aiohttp, as
    LiteLLM's own OpenAI path: httpx's pool polls every idle connection on every request, and its
    stream stack cost ~2 ms of CPU per answer on the benchmark's machine, aiohttp's a third."""

    def __init__(self) -> None:
        self.by_loop: dict[int, aiohttp.ClientSession] = {}

    def get(self, connections: int = 0) -> aiohttp.ClientSession:
        """`connections`: the pool's size, taken from the first call on this loop (0: 100)."""
        key = id(asyncio.get_running_loop())
        if key not in self.by_loop:
            # Our own time limits govern: only the connect has one of aiohttp's, no pool wait does.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
            connector = aiohttp.TCPConnector(
                limit=connections or 100, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self.by_loop[key] = aiohttp.ClientSession(
                connector=connector, timeout=timeout, trust_env=False, read_bufsize=EVENT_BUFFER_BYTES
            )
        return self.by_loop[key]


_sessions = _Sessions()  # generations: sized from vLLM's batch (core/chain.py vllm_connections)
_probe_clients = _Clients()  # /health and /metrics only


def parse_metrics(text: str) -> dict[str, float]:
    """Sums of the Prometheus samples this handler reads, over all their label sets."""
    wanted = (*PROGRESS_COUNTERS, *QUEUE_GAUGES)
    sums = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            try:
                sums[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return sums


def _exposes(text: str, names: tuple[str, ...]) -> bool:
    """Whether a /metrics text has a sample of any of these metrics (vLLM labels every one)."""
    return any(f"{name}{{" in text for name in names)


# 1 while vLLM answers but its /metrics cannot be read (a NetworkPolicy or proxy in the way, a renamed
# metric, a vLLM upgrade): busy and hung then look alike (core/observability.py alerts on it). Served at
# the proxy's /metrics/.
BLIND = gateway_gauge(
    PROGRESS_BLIND,
    "1 while vLLM's /metrics cannot be read: only this process's own streams show the engine's progress",
    ["engine"],  # one series per vLLM (host:port): several GPU tiers never overwrite each other's
)
_log = logging.getLogger("llm_gateway.vllm_progress")


class MetricsEvidence:
    """Whether vLLM's counters can be read, told to the operator once per change, not per request."""

    def __init__(self, metrics_url: str) -> None:
        self.metrics_url = metrics_url
        self.blind = False
        self.gauge = BLIND.labels(engine=urlsplit(metrics_url).netloc)

    def unreadable(self, why: str) -> None:
        self.gauge.set(1)
        if not self.blind:
            self.blind = True
            _log.warning(
                "vLLM's %s cannot be read (%s): busy and hung look alike. Only this gateway process's own "
                "vLLM streams count as progress; a request quiet past its limit is given up on (Ollama "
                "answers) even while vLLM works for other replicas. llm_gateway_vllm_progress_blind is 1.",
                self.metrics_url,
                why,
            )

    def readable(self) -> None:
        self.gauge.set(0)
        if self.blind:
            self.blind = False
            _log.warning("vLLM's %s can be read again: busy and hung are told apart.", self.metrics_url)


class EngineWatch:
    """What this gateway process knows about one vLLM engine's progress (one per api_base)."""

    def __init__(self, api_base: str) -> None:
        root = api_base.rstrip("/").removesuffix("/v1")
        self.metrics_url = f"{root}/metrics"
        self.health_url = f"{root}/health"
        self.last_event_at = 0.0  # any stream event from this engine, in this process
        # The counters last moved after this time (the sample before the change: tokens seen in a
        # later sample may have been made just before it, so no later time is claimed).
        self.counters_moved_at = 0.0
        self.counters: float | None = None
        self.sampled_at = 0.0
        self.asked_at = 0.0  # when the last sample taken was asked for
        self.queue = 0.0  # requests running + waiting in vLLM, at the last sample
        self.evidence = MetricsEvidence(self.metrics_url)
        self.open_requests = 0
        self.quiet_requests = 0  # requests past SAMPLE_WHEN_QUIET_SECONDS without an event, idle checks
        self.sampler: asyncio.Task | None = None

    @property
    def last_progress(self) -> float:
        return max(self.last_event_at, self.counters_moved_at)

    def saw_event(self) -> None:
        self.last_event_at = time.monotonic()

    async def sample(self) -> bool:
        """Read vLLM's counters once (no answer in time is simply no evidence of progress); whether
        its queue could be read too. Samples overlap (the sampler, probes); one asked before the last
        one taken is dropped, or its older counters would be the baseline and the next sample would
        "move" on a hung engine."""
        asked = time.monotonic()
        try:
            response = await _probe_clients.get(PROBE_CONNECTIONS).get(
                self.metrics_url, timeout=SAMPLE_EVERY_SECONDS * 2
            )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return False  # vLLM is not there at all: an outage (failover, alerts), not a blind watch
        except httpx.HTTPError as failed:
            self.evidence.unreadable(f"no answer ({type(failed).__name__})")
            return False
        sums = parse_metrics(response.text) if response.status_code == 200 else None
        if sums is None or not _exposes(response.text, PROGRESS_COUNTERS):
            why = f"HTTP {response.status_code}" if sums is None else f"none of {', '.join(PROGRESS_COUNTERS)}"
            self.evidence.unreadable(why)
            return False
        self.evidence.readable()
        # Gauges missing from the text read as 0 (`parse_metrics`): an upgrade that renamed them
        # would show a saturated engine as idle. Unread, the probe falls back on open requests.
        queue_read = _exposes(response.text, QUEUE_GAUGES)
        if asked < self.asked_at:
            return queue_read  # overtaken by a later sample: read, but no longer news
        counters = sum(sums[name] for name in PROGRESS_COUNTERS)
        # Up only: counters that went down belong to a restarted engine, which made no progress.
        if self.counters is not None and counters > self.counters:
            self.counters_moved_at = self.sampled_at
        self.counters, self.sampled_at, self.asked_at = counters, time.monotonic(), asked
        self.queue = sum(sums[name] for name in QUEUE_GAUGES)
        return queue_read

    async def _sample_while_quiet(self) -> None:
        try:
            while self.quiet_requests > 0:
                await self.sample()
                await asyncio.sleep(SAMPLE_EVERY_SECONDS)
        finally:
            self.sampler = None  # a sampler that died is started again by the next quiet request

    def became_quiet(self) -> None:
        self.quiet_requests += 1
        if self.sampler is None:
            self.sampler = asyncio.get_running_loop().create_task(self._sample_while_quiet())

    def no_longer_quiet(self) -> None:
        self.quiet_requests -= 1


class _Watches:
    def __init__(self) -> None:
        self.by_base: dict[tuple[int, str], EngineWatch] = {}

    def get(self, api_base: str) -> EngineWatch:
        key = (id(asyncio.get_running_loop()), api_base)
        if key not in self.by_base:
            self.by_base[key] = EngineWatch(api_base)
        return self.by_base[key]


_watches = _Watches()


class Spilled(Exception):
    """Over the queue budget while the engine progresses: the next tier, without a cooldown."""


class OverCap(Exception):
    """Past the whole-answer cap (`timeout`) while the engine progressed: a long answer, not a hung
    GPU, so no cooldown (as a `litellm.Timeout` it cooled vLLM down for the fleet)."""


def quiet(limits: Limits, sent: float, own_last: float | None) -> tuple[float, float]:
    """Since when a request has had no event, and how long it may: `first_token` before its first
    event, `stall` after one."""
    return (sent, limits.first_token) if own_last is None else (own_last, limits.stall)


def verdict(limits: Limits, watch: EngineWatch, sent: float, own_last: float | None, now: float) -> str | None:
    """Why a quiet request must be given up on now, or None to keep waiting.

    `own_last` is the time of this request's last event (None before its first)."""
    if now - sent >= limits.total:
        return "overall timeout"
    quiet_since, quiet_limit = quiet(limits, sent, own_last)
    if own_last is None and limits.max_queue and now - sent >= limits.max_queue:
        return "queue budget"
    if now - quiet_since < quiet_limit:
        return None
    # Quiet for longer than its own limit: busy (tokens flow for someone since this request went
    # quiet, and recently) or hung (nothing moved for anyone)?
    progressed = watch.last_progress > quiet_since and now - watch.last_progress < limits.stall
    if progressed:
        return None
    return "stalled between tokens" if own_last is not None else "no first token and no engine progress"


async def _watched(step: Any, limits: Limits, watch: EngineWatch, sent: float, own_last: float | None) -> Any:
    """Await `step` (a coroutine), checking the verdict every CHECK_EVERY_SECONDS; while it is quiet,
    vLLM's counters are sampled."""
    task = asyncio.ensure_future(step)
    quiet_since, quiet_limit = quiet(limits, sent, own_last)
    sample_after = min(SAMPLE_WHEN_QUIET_SECONDS, quiet_limit / 4)
    sampling = False
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CHECK_EVERY_SECONDS)
            if done:
                return task.result()
            now = time.monotonic()
            if not sampling and now - quiet_since >= sample_after:
                sampling = True
                watch.became_quiet()
            why = verdict(limits, watch, sent, own_last, now)
            if why == "queue budget":
                raise Spilled()
            if why == "overall timeout":
                raise OverCap()
            if why is not None:
                raise TimeoutError(why)
    finally:
        if sampling:
            watch.no_longer_quiet()
        _let_go(task)


def _let_go(task: asyncio.Future) -> None:
    """Cancel a task no longer waited for; if it ended meanwhile (both due in one loop turn after a
    blocked loop), take its exception, so asyncio does not log it as never retrieved."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


# Errors that say "again, shortly" get one more try on vLLM before the next tier: a 5xx at once, and
# a 429 or 5xx after its Retry-After. Both tries share one first-token deadline (`sent` of the first):
# the retry is made only if its delay plus RETRY_NEEDS_SECONDS still fits in `first_token` after the
# time the first try took, so a 503 that asks for 4 s, or one whose head came at 3.9 s, goes to the
# next tier at once instead of asking Ollama after ~8 s (NFR65: 5 s). One transient error then
# neither costs the GPU tier a cooldown nor sends the request to the CPU. Not LiteLLM's retries,
# which sleep 0.5 * 2^k s whatever the error (Router.async_function_with_retries, README).
RETRIED_AT_ONCE = {500, 502, 503, 504}
RETRIED_AFTER_RETRY_AFTER = {429, *RETRIED_AT_ONCE}
# The least time worth giving the retry for its first event: a connection and a short prompt's prefill.
RETRY_NEEDS_SECONDS = 1.0


def same_tier_retry_delay(status: int, retry_after: str | None, limits: Limits, spent: float = 0.0) -> float | None:
    """Seconds to wait before the one retry on vLLM, or None: on to the next tier at once. `spent`:
    the seconds the first try already took of the shared first-token deadline."""
    delay = _asked_delay(status, retry_after)
    if delay is None or spent + delay + RETRY_NEEDS_SECONDS > limits.first_token:
        return None
    return delay


def _asked_delay(status: int, retry_after: str | None) -> float | None:
    """The wait the error asks for (0: at once), or None for an error not worth the same again."""
    if status not in RETRIED_AFTER_RETRY_AFTER:
        return None  # a 400 is the client's; 401/404 are the config's: the same again fails the same
    if retry_after is None:
        return 0.0 if status in RETRIED_AT_ONCE else None
    try:
        asked = float(retry_after)
    except ValueError:
        return None  # an HTTP date: a server that plans in dates is not back within seconds
    return asked if asked >= 0 else None


async def vllm_events_retried(
    api_base: str, api_key: str | None, payload: dict[str, Any], limits: Limits, model: str
) -> AsyncIterator[dict[str, Any]]:
    """`vllm_events`, once more after an error answer that asks for it (`same_tier_retry_delay`).
    Such errors come with the response head, before any event: nothing is ever sent twice. Both
    tries count from the first's `sent`: the retry waits for its first event only until then."""
    sent = time.monotonic()
    try:
        async for event in vllm_events(api_base, api_key, payload, limits, model, sent):
            yield event
        return
    except Exception as failed:
        delay = getattr(failed, "retry_delay", None)
        if delay is None:
            raise
    await asyncio.sleep(delay)
    async for event in vllm_events(api_base, api_key, payload, limits, model, sent):
        yield event


async def _connect_tried(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`, made again when its connect timed out, up to CONNECT_TRIES times in all."""
    for _ in range(CONNECT_TRIES - 1):
        with contextlib.suppress(*CONNECT_TIMEOUTS):
            return await attempt()
    return await attempt()


_END = object()  # the body ended


def _given_up(why: str) -> Exception:
    """A verdict as the exception `vllm_events` maps to the router's kind."""
    if why == "queue budget":
        return Spilled()
    if why == "overall timeout":
        return OverCap()
    return TimeoutError(why)


class _WatchedLines:
    """The body's lines, read by one task per request and handed over through a queue, while a
    watchdog looks at the verdict every CHECK_EVERY_SECONDS (sampling vLLM's counters while the
    request is quiet). Before, each line was a task and a timed wait: ~0.1 ms of CPU per event,
    0.1 s per 1000-token answer. The reader reads on while the consumer is behind, so a slow client
    never looks like a stalled vLLM; events already read reach the consumer before a verdict."""

    def __init__(self, lines: AsyncIterator[str], limits: Limits, watch: EngineWatch, sent: float) -> None:
        self.limits, self.watch, self.sent = limits, watch, sent
        self.own_last: float | None = None  # this request's last event
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read(lines))
        self.watchdog = asyncio.ensure_future(self._watch())

    async def _read(self, lines: AsyncIterator[str]) -> None:
        try:
            async for line in lines:
                if line.startswith("data:"):
                    self.own_last = time.monotonic()
                    self.watch.saw_event()
                self.queue.put_nowait(line)
            self.queue.put_nowait(_END)
        except Exception as failed:  # a broken connection: the consumer raises it, in order
            self.queue.put_nowait(failed)

    async def _watch(self) -> None:
        sampling = False
        try:
            while not self.reader.done():
                await asyncio.sleep(CHECK_EVERY_SECONDS)
                now = time.monotonic()
                quiet_since, quiet_limit = quiet(self.limits, self.sent, self.own_last)
                is_quiet = now - quiet_since >= min(SAMPLE_WHEN_QUIET_SECONDS, quiet_limit / 4)
                if is_quiet != sampling:
                    sampling = is_quiet
                    (self.watch.became_quiet if sampling else self.watch.no_longer_quiet)()
                why = verdict(self.limits, self.watch, self.sent, self.own_last, now)
                if why is not None and not self.reader.done():
                    self.reader.cancel()
                    self.queue.put_nowait(_given_up(why))
                    return
        finally:
            if sampling:
                self.watch.no_longer_quiet()

    async def next(self) -> str | None:
        """The next line; None at the body's end; the reader's error or the verdict, raised."""
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return None if item is _END else item

    async def read_to_the_end(self) -> None:
        """After `[DONE]` (only the chunked encoding's end follows): the reader finishes the body, so
        the connection goes back to the pool. Closed half-read, it cost a new TCP connection per
        request (~0.5 ms of CPU here, a handshake and an accept on vLLM's side)."""
        self.watchdog.cancel()  # the answer is whole: no verdict may cancel the reader (nor this wait) now
        await asyncio.wait({self.reader}, timeout=self.limits.stall)

    def stop(self) -> None:
        self.reader.cancel()
        self.watchdog.cancel()


def _in_band_error(event: dict[str, Any], model: str, provider: str) -> Exception | None:
    """vLLM ends a stream that failed inside the engine with an error event, then `[DONE]`
    (serving_chat.py `create_streaming_error_response`): skipped, the cut answer would look whole."""
    if event.get("choices"):
        return None
    error = event.get("error") if isinstance(event.get("error"), dict) else None
    if error is None and event.get("object") == "error":  # the older, flat ErrorResponse
        error = event
    if error is None:
        return None
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return _status_error(status, json.dumps({"error": error}), model, provider)


def _parsed_event(data: str) -> dict[str, Any] | None:
    """One SSE event's JSON object, or None for one that is not (cut, rewritten by a proxy on the way).
    Skipping it keeps the answer; raising would end the stream with an error for one bad line."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


@contextlib.contextmanager
def _as_router_errors(model: str, limits: Limits, sent: float) -> Iterator[None]:
    """vLLM's failures as the litellm exceptions the router acts on, for every path to vLLM: a hung
    engine or a dropped SYN as `litellm.Timeout` (fallback and cooldown), a spill, the cap, a refusal
    or a broken answer as `litellm.APIConnectionError` (fallback, never a cooldown:
    router_utils/cooldown_handlers.py). vLLM's own error answers (`_status_error`) pass unchanged."""

    def error(kind: Any, message: str) -> Exception:
        return kind(message=message, model=model, llm_provider=limits.provider)

    try:
        yield
    except Spilled:
        waited = time.monotonic() - sent
        raise error(litellm.APIConnectionError, f"vLLM queue budget spent ({waited:.1f} s waiting)") from None
    except OverCap:
        capped = f"vLLM answer over the whole-answer cap of {limits.total:g} s (vllm.timeoutSeconds)"
        raise error(litellm.APIConnectionError, capped) from None
    except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: before the next clause
        limit = f"{CONNECT_TRIES} tries of {CONNECT_TIMEOUT_SECONDS:g} s"
        raise error(litellm.Timeout, f"vLLM did not accept a connection in {limit}") from None
    except TimeoutError as why:
        raise error(litellm.Timeout, f"vLLM made no progress: {why}") from None
    except aiohttp.ClientConnectorError as refused:
        raise error(litellm.APIConnectionError, f"vLLM refused: {refused}") from None
    except aiohttp.ClientError as broke:
        raise error(litellm.APIConnectionError, f"vLLM answer broke: {type(broke).__name__}: {broke}") from None
    except HttpProcessingError as unreadable:
        # Not a ClientError: aiohttp's own parser refused the answer (LineTooLong for an event over
        # twice EVENT_BUFFER_BYTES, streams.py StreamReader.readuntil). A broken answer, as above.
        why = f"{type(unreadable).__name__}: {unreadable}"
        raise error(litellm.APIConnectionError, f"vLLM answer could not be read: {why}") from None


async def _post(url: str, payload: dict[str, Any], headers: dict[str, str], limits: Limits) -> aiohttp.ClientResponse:
    """POST on the pool to vLLM; returns once the answer's head came. Sent once more if its
    connection dropped before the head (DROPPED_BEFORE_THE_HEAD)."""
    session = _sessions.get(limits.connections)
    try:
        return await session.post(url, json=payload, headers=headers)
    except aiohttp.ClientConnectorError:
        raise
    except DROPPED_BEFORE_THE_HEAD:
        return await session.post(url, json=payload, headers=headers)


async def vllm_events(
    api_base: str, api_key: str | None, payload: dict[str, Any], limits: Limits, model: str, sent: float | None = None
) -> AsyncIterator[dict[str, Any]]:
    """vLLM's raw stream events (parsed JSON), or litellm exceptions when the engine stops progressing.
    `sent`: when the request was first sent (a retry keeps the first try's deadlines)."""
    url = f"{api_base.rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {api_key or 'none'}", "Accept": "text/event-stream"}
    watch = _watches.get(api_base)
    sent = time.monotonic() if sent is None else sent

    async def opened() -> aiohttp.ClientResponse:
        return await _watched(_post(url, payload, headers, limits), limits, watch, sent, None)

    watch.open_requests += 1
    response: aiohttp.ClientResponse | None = None  # once its head came
    lines: _WatchedLines | None = None
    try:
        with _as_router_errors(model, limits, sent):
            response = await _connect_tried(opened)
            if response.status != 200:
                body = await asyncio.wait_for(response.read(), limits.stall)
                raise _answered_error(response.status, body, response.headers.get("retry-after"), model, limits, sent)
            lines = _WatchedLines(_lines_of(response), limits, watch, sent)
            while (line := await lines.next()) is not None:
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    await lines.read_to_the_end()
                    return
                if time.monotonic() - sent >= limits.total:
                    # The quiet-time checks never run while events flow: the whole-answer cap is
                    # checked on every event too (the drain, GRACEFUL_SHUTDOWN_TIMEOUT, counts on it).
                    raise OverCap()
                event = _parsed_event(data)
                if event is None:  # a malformed event is skipped; the answer goes on (Failover Bench S10)
                    continue
                failed_in_engine = _in_band_error(event, model, limits.provider)
                if failed_in_engine is not None:
                    raise failed_in_engine
                yield event
    finally:
        watch.open_requests -= 1
        if lines is not None:
            lines.stop()
        if response is not None:
            # Read to its end: back to the pool. Cut short (a verdict, a client gone): closed.
            response.release() if response.content.at_eof() else response.close()


def _answered_error(
    status: int, body: bytes, retry_after: str | None, model: str, limits: Limits, sent: float
) -> Exception:
    """vLLM's error answer as the router's exception, marked with the delay of its one same-tier
    retry (`same_tier_retry_delay`: None, on to the next tier)."""
    failed = _status_error(status, body.decode(errors="replace"), model, limits.provider)
    failed.retry_delay = same_tier_retry_delay(status, retry_after, limits, time.monotonic() - sent)
    return failed


async def vllm_embeddings(
    api_base: str, api_key: str | None, payload: dict[str, Any], limits: Limits, model: str, sent: float | None = None
) -> dict[str, Any]:
    """vLLM's embeddings answer (`/v1/embeddings`, parsed JSON), or litellm exceptions as for a chat.

    vLLM has no stream here: the head of its one JSON body comes only when the work is done. So the
    whole exchange (connect, head, body) is one step under `_watched`, judged as a request without
    its first event: past `first_token_timeout` a busy engine is waited for and a frozen one given up
    on (`litellm.Timeout`), `max_queue_seconds` spills, `timeout` caps it. `sent` as for `vllm_events`."""
    url = f"{api_base.rstrip('/')}/embeddings"
    headers = {"Authorization": f"Bearer {api_key or 'none'}"}
    watch = _watches.get(api_base)
    sent = time.monotonic() if sent is None else sent

    async def exchange() -> tuple[int, bytes, str | None]:
        response = await _post(url, payload, headers, limits)
        try:
            body = await response.read()
        except BaseException:
            response.close()  # cut short (a verdict, a client gone): not back to the pool half-read
            raise
        response.release()
        return response.status, body, response.headers.get("retry-after")

    async def answered() -> tuple[int, bytes, str | None]:
        return await _watched(exchange(), limits, watch, sent, None)

    watch.open_requests += 1
    try:
        with _as_router_errors(model, limits, sent):
            status, body, retry_after = await _connect_tried(answered)
    finally:
        watch.open_requests -= 1
    if status != 200:
        raise _answered_error(status, body, retry_after, model, limits, sent)
    watch.saw_event()  # a finished answer is the engine's progress: other quiet requests see it
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        broken = f"vLLM's embeddings answer is not an embeddings list: {body[:200].decode(errors='replace')}"
        raise litellm.APIConnectionError(message=broken, model=model, llm_provider=limits.provider)
    return answer


async def vllm_embeddings_retried(
    api_base: str, api_key: str | None, payload: dict[str, Any], limits: Limits, model: str
) -> dict[str, Any]:
    """`vllm_embeddings`, once more after an error answer that asks for it, on the first try's
    deadlines (as `vllm_events_retried`)."""
    sent = time.monotonic()
    try:
        return await vllm_embeddings(api_base, api_key, payload, limits, model, sent)
    except Exception as failed:
        delay = getattr(failed, "retry_delay", None)
        if delay is None:
            raise
    await asyncio.sleep(delay)
    return await vllm_embeddings(api_base, api_key, payload, limits, model, sent)


async def _lines_of(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    async for line in response.content:
        yield line.decode(errors="replace").rstrip("\r\n")


async def probe_engine(api_base: str, model: str, limits: Limits, idle_check: Callable[[], Awaitable[T]]) -> T | None:
    """The background health check: `/health`, then progress if busy (None: busy, progressing), or if
    idle `idle_check()` (a one-token answer, a one-input embedding), its result."""
    watch = _watches.get(api_base)

    def error(kind: Any, message: str) -> Exception:
        return kind(message=message, model=model, llm_provider=limits.provider)

    try:
        health = await _health(watch.health_url, limits)
    except httpx.ConnectError as refused:
        raise error(litellm.APIConnectionError, f"vLLM refused: {refused}") from None
    except httpx.HTTPError as failed:
        raise error(litellm.Timeout, f"vLLM /health did not answer: {failed}") from None
    if health.status_code != 200:
        raise error(litellm.ServiceUnavailableError, f"vLLM /health answered {health.status_code}")
    # Busy by vLLM's own queue; only when that cannot be read, by this process's open requests (one
    # of them may be long finished in vLLM and held open by a client that stopped reading: judged
    # busy, nothing moves, and an idle engine would be cooled down).
    queue_read = await watch.sample()
    if watch.queue > 0 if queue_read else watch.open_requests > 0:
        # Busy: the engine must have moved within the stall limit (two samples apart, at least).
        await asyncio.sleep(SAMPLE_EVERY_SECONDS)
        await watch.sample()
        if time.monotonic() - watch.last_progress >= limits.stall:
            raise error(litellm.Timeout, "vLLM made no progress: requests are open and no token moved")
        return None
    # Idle: one token (one input) proves the engine still works.
    return await _idle_check_unless_busy(idle_check, watch)


async def _idle_check_unless_busy(idle_check: Callable[[], Awaitable[T]], watch: EngineWatch) -> T | None:
    """`idle_check()`'s result; or None (busy, progressing) once the engine has progressed since it
    began and its answer has not come. Idle when the probe looked is not idle a moment later: a burst
    that arrived just after it queued the one token behind the burst (in vLLM's queue, or in the
    gateway's pool when it was full), the proxy's health check timed out, and vLLM was cooled down at
    peak load (measured: 80 streams at once, 6 to 58 of them sent to Ollama in 6 runs). The engine's
    progress is what a busy engine is judged by (`probe_engine`); a hung one makes none, and still
    fails."""
    began = time.monotonic()
    # vLLM's counters are sampled from the start (not after a quiet second, as for a request): a
    # probe timeout may be 1 s (healthCheckIntervalSeconds 2), and other replicas' bursts, or
    # embeddings, show only there.
    watch.became_quiet()
    task: asyncio.Future | None = None
    try:
        task = asyncio.ensure_future(idle_check())
        while True:
            done, _ = await asyncio.wait({task}, timeout=CHECK_EVERY_SECONDS)
            if done:
                return task.result()
            if watch.last_progress > began:
                return None
    finally:
        watch.no_longer_quiet()
        if task is not None:
            _let_go(task)


async def probe_chat_engine(
    api_base: str, api_key: str | None, model: str, messages: list, limits: Limits
) -> dict[str, Any]:
    """The chat tier's health check (`probe_engine`), answered as a chat.completion."""
    payload = {"model": model, "messages": messages, "max_tokens": 1, "stream": True}

    async def one_token() -> str:
        async for _ in vllm_events(api_base, api_key, payload, limits, model):
            pass
        return "idle, generates"

    return _probe_answer(model, await probe_engine(api_base, model, limits, one_token) or "busy, progressing")


async def probe_embedding_engine(
    api_base: str, api_key: str | None, model: str, texts: Any, limits: Limits
) -> dict[str, Any]:
    """The embeddings tier's health check (`probe_engine`): an idle engine embeds one input (the
    health check's own, `["test from litellm"]`: proxy/health_check.py `_run_model_health_check`);
    a busy one is answered with an empty list."""
    first = texts[0] if isinstance(texts, list) and texts else texts
    payload = {"model": model, "input": [first or "engine probe"]}

    async def one_input() -> dict[str, Any]:
        return await vllm_embeddings(api_base, api_key, payload, limits, model)

    answer = await probe_engine(api_base, model, limits, one_input)
    return answer or {"object": "list", "model": model, "data": [], "usage": {"prompt_tokens": 0, "total_tokens": 0}}


async def _health(health_url: str, limits: Limits) -> httpx.Response:
    """vLLM's `/health`, its connect tried CONNECT_TRIES times (a blocked loop is not a dropped SYN)."""
    timeout = httpx.Timeout(limits.first_token, connect=CONNECT_TIMEOUT_SECONDS)
    return await _connect_tried(lambda: _probe_clients.get(PROBE_CONNECTIONS).get(health_url, timeout=timeout))


def _probe_answer(model: str, state: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": f"vLLM engine {state}"}
    return {
        "id": "engine-probe",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """One tool call's pieces, kept as lists (joined once at the end: `+=` on a dict's string copies
    the whole string per event)."""
    call = calls.setdefault(delta.get("index", 0), {"id": None, "name": [], "arguments": []})
    call["id"] = delta.get("id") or call["id"]
    function = delta.get("function") or {}
    call["name"].append(function.get("name") or "")
    call["arguments"].append(function.get("arguments") or "")


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = {"name": "".join(call["name"]), "arguments": "".join(call["arguments"])}
    return {**({"id": call["id"]} if call["id"] else {}), "type": "function", "function": function}


class _AssembledChoice:
    """One choice of the answer (`n` > 1 interleaves them in one stream, told apart by `index`)."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.logprobs: list[dict[str, Any]] | None = None  # vLLM's per-token `logprobs.content`

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.content.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            _merge_tool_call(self.calls, call)
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        logprobs = choice.get("logprobs")
        if logprobs:
            self.logprobs = self.logprobs if self.logprobs is not None else []
            self.logprobs.extend(logprobs.get("content") or [])

    def as_choice(self, index: int) -> dict[str, Any]:
        text = "".join(self.content) if self.content or not self.calls else None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.calls:
            message["tool_calls"] = [_tool_call(self.calls[key]) for key in sorted(self.calls)]
        choice = {"index": index, "message": message, "finish_reason": self.finish_reason or "stop"}
        if self.logprobs is not None:
            choice["logprobs"] = {"content": self.logprobs}
        return choice


async def assemble_completion(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """A whole chat.completion from vLLM's stream events, as vLLM would have answered it."""
    head: dict[str, Any] = {}
    choices: dict[int, _AssembledChoice] = {}
    usage = None
    async for event in events:
        head = head or event
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            choices.setdefault(choice.get("index", 0), _AssembledChoice()).add(choice)
    return {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created", int(time.time())),
        "model": head.get("model"),
        "choices": [choices.get(index, _AssembledChoice()).as_choice(index) for index in sorted(choices) or [0]],
        "usage": usage,
    }


def _stream_chunk(event: dict[str, Any]) -> GenericStreamingChunk | None:
    choices = event.get("choices") or []
    usage = event.get("usage")
    if not choices:
        if usage is None:
            return None
        return {"text": "", "is_finished": True, "finish_reason": "stop", "usage": usage, "index": 0}
    choice = choices[0]
    delta = choice.get("delta") or {}
    tool_calls = delta.get("tool_calls") or []
    chunk: GenericStreamingChunk = {
        "text": delta.get("content") or "",
        "is_finished": choice.get("finish_reason") is not None,
        "finish_reason": choice.get("finish_reason") or "",
        "usage": usage,
        "index": choice.get("index", 0),
    }
    if tool_calls:
        call = tool_calls[0]
        chunk["tool_use"] = {
            "id": call.get("id"),
            "type": "function",
            "function": call.get("function") or {},
            "index": call.get("index", 0),
        }
    return chunk


def refuse_unstreamable(optional_params: dict[str, Any], model: str, provider: str) -> None:
    """A custom provider streams through LiteLLM's GenericStreamingChunk, which carries one choice and
    no logprobs: `n` > 1 would come back as one spliced choice, logprobs not at all. Refused (400,
    no fallback, no cooldown) before vLLM is asked; non-streaming requests get both, assembled."""
    wanted = {"n": (optional_params.get("n") or 1) > 1, "logprobs": bool(optional_params.get("logprobs"))}
    asked = [key for key, asked_for in wanted.items() if asked_for]
    if asked:
        raise litellm.BadRequestError(
            message=f"{', '.join(asked)} cannot be streamed through this gateway: send it with stream=false",
            model=model,
            llm_provider=provider,
        )


def _provider_of(logging_obj: Any) -> str | None:
    """The provider's name as the deployment spells it, from LiteLLM's logging object: on the
    embeddings path litellm_params carry no `custom_llm_provider` (main.py `embedding` hands the
    provider `get_litellm_params(**kwargs)`), the logging object does (`update_environment_variables`)."""
    details = getattr(logging_obj, "model_call_details", None)
    return details.get("custom_llm_provider") if isinstance(details, dict) else None


class VllmProgressHandler(CustomLLM):
    # LiteLLM calls these with keyword arguments only (main.py:_complete_custom_providers); the
    # ones not needed here (encoding, logging_obj, model_response, ...) are accepted and ignored.
    async def acompletion(
        self, model, messages, api_base, api_key, optional_params, litellm_params=None, timeout=None, **_
    ) -> ModelResponse:
        limits = _limits(optional_params, litellm_params, timeout)
        if {**(litellm_params or {}), **optional_params}.get(ENGINE_PROBE):
            return ModelResponse(**await probe_chat_engine(api_base, api_key, model, messages, limits))
        events = vllm_events_retried(api_base, api_key, _payload(model, messages, optional_params), limits, model)
        return ModelResponse(**await assemble_completion(events))

    async def astreaming(
        self, model, messages, api_base, api_key, optional_params, litellm_params=None, timeout=None, **_
    ) -> AsyncIterator[GenericStreamingChunk]:
        limits = _limits(optional_params, litellm_params, timeout)
        refuse_unstreamable(optional_params, model, limits.provider)
        events = vllm_events_retried(api_base, api_key, _payload(model, messages, optional_params), limits, model)
        async for event in events:
            chunk = _stream_chunk(event)
            if chunk is not None:
                yield chunk

    # Embeddings through the proxy (/v1/embeddings, /embeddings: Router.aembedding) reach main.py
    # `aembedding`, which runs `embedding` in a thread; its custom-provider branch calls this method
    # (`custom_handler.aembedding`, the coroutine awaited back on the loop) with keyword arguments
    # only: model (the deployment's, provider prefix stripped), input (as the client sent it),
    # api_base, api_key, timeout (the deployment's own), optional_params (the deployment's extra
    # keys: the limits, and on a health check `model_info.health_check_params`), litellm_params,
    # logging_obj, model_response, print_verbose. It must return an EmbeddingResponse: aembedding
    # returns the awaited value as it is. Exceptions that are litellm's pass unchanged
    # (litellm_core_utils/exception_mapping_utils.py `exception_type`).
    async def aembedding(
        self, model, input, api_base, api_key, optional_params, litellm_params=None, timeout=None, logging_obj=None, **_
    ) -> EmbeddingResponse:
        limits = _limits(optional_params, litellm_params, timeout, _provider_of(logging_obj))
        if {**(litellm_params or {}), **optional_params}.get(ENGINE_PROBE):
            return EmbeddingResponse(**await probe_embedding_engine(api_base, api_key, model, input, limits))
        payload = _embedding_payload(model, input, optional_params, litellm_params)
        return EmbeddingResponse(**await vllm_embeddings_retried(api_base, api_key, payload, limits, model))

    def embedding(self, *args: Any, **kwargs: Any) -> EmbeddingResponse:
        # Only a direct, synchronous `litellm.embedding(...)` lands here; the proxy is async throughout.
        raise NotImplementedError(
            "vllm_progress serves embeddings asynchronously only: litellm.aembedding, or the proxy's /v1/embeddings"
        )


handler = VllmProgressHandler()

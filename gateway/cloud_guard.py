"""Spend guard for the cloud tier: a LiteLLM callback inside the proxy (shipped in the ConfigMap).

Gaming Mode can last a weekend with Ollama down too; the cloud tier must not become an open tap.
The limits live in the cloud deployment's `model_info.spend_guard` (rendered from stack config by
components/fallback.py): requests per minute, tokens per minute, and dollars per budget period.
Before each cloud call the router asks `async_pre_call_check`; over a limit it raises
`litellm.RateLimitError`, the router cools the cloud tier down, and gateway/honest_errors.py answers
the client 429 `cloud_rate_limited`. Local tiers carry no `spend_guard` and are never limited.

Where the counts live:
- With `spend_guard.redis_url_env` (stack config `redis.mode` deploy or external), in Redis: one
  count for the whole fleet, kept across gateway restarts and rollouts. Each check and each record
  is one Lua script, so Redis applies it atomically whichever replica sends it; the time is Redis'
  own (`TIME`), so replicas with skewed clocks agree on the windows. A request is counted when it is
  admitted (rpm exact across replicas); tokens and dollars when the answer is logged, so calls
  already in flight may each overshoot tpm or budget by their own usage, as a single process does.
- Without it, in this process's memory: with N replicas (or workers) the fleet may spend N times
  each limit.

Redis unreachable or slow: every Redis call waits at most `redis_timeout_seconds`, with no retry.
Then `when_redis_down` decides: "closed" refuses the cloud call (429, reason
`cloud_guard_unavailable`); "open" falls back to this process's own counts (which it keeps all
along), so a replica still enforces the limits on its own. Tokens and dollars that could not be
written are kept and written when Redis answers again.
"""

import asyncio
import os
import time
import uuid
import weakref
from collections import deque

import litellm
import redis.asyncio
import redis.exceptions
from litellm.integrations.custom_logger import CustomLogger
from prometheus_client import REGISTRY, Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def gateway_counter(name: str, documentation: str, labels: list[str]) -> Counter:
    """One counter per process, however often this file is loaded (LiteLLM execs it by path)."""
    try:
        return Counter(name, documentation, labels)
    except ValueError:  # registered by an earlier load of this file
        return REGISTRY._names_to_collectors[f"{name}_total"]


MINUTE = 60.0
MICRO = 1_000_000  # dollars are counted in Redis as whole micro-dollars: integer sums stay exact
# Marks the refusal honest_errors.py tells apart (LiteLLM keeps the first 50 characters of the
# exception that cooled the cloud tier down: the tag must sit early in the message).
REDIS_DOWN_TAG = "guard-store-down"
# Served at /metrics/ with LiteLLM's own metrics: a cloud call the guard refused, by limit.
REJECTIONS = gateway_counter(
    "llm_gateway_cloud_guard_rejections", "Cloud calls refused by the spend guard, by the limit reached", ["limit"]
)
# The shared counts could not be read or written (Redis down or slower than its timeout).
STORE_ERRORS = gateway_counter(
    "llm_gateway_cloud_guard_store_errors", "Spend guard calls to Redis that failed or timed out", ["operation"]
)

# KEYS: requests, tokens, tokens total, spend, spend total. ARGV: rpm, tpm, budget (micro-dollars;
# -1 = no limit), budget period (s), request id. Each window is a sorted set of `id:amount` scored
# by time, beside a running total; expired entries are subtracted as they leave.
ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function expire(window, total, seconds)
  local cutoff = now - seconds
  if total then
    local gone = 0
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', window, '-inf', cutoff)) do
      gone = gone + tonumber(string.match(entry, ':(%d+)$'))
    end
    if gone > 0 then redis.call('DECRBY', total, gone) end
  end
  redis.call('ZREMRANGEBYSCORE', window, '-inf', cutoff)
end
local rpm, tpm, budget, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
expire(KEYS[1], nil, 60)
expire(KEYS[2], KEYS[3], 60)
expire(KEYS[4], KEYS[5], period)
if rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm then return 'rpm' end
if tpm >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= tpm then return 'tpm' end
if budget >= 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= budget then return 'budget' end
redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':1')
redis.call('EXPIRE', KEYS[1], 120)
return 'ok'
"""
# KEYS: tokens, tokens total, spend, spend total. ARGV: tokens, micro-dollars, id, budget period (s).
RECORD = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function add(window, total, amount, seconds)
  if tonumber(amount) <= 0 then return end
  redis.call('ZADD', window, now, ARGV[3] .. ':' .. amount)
  redis.call('INCRBY', total, amount)
  redis.call('EXPIRE', window, seconds + 60)
  redis.call('EXPIRE', total, seconds + 60)
end
add(KEYS[1], KEYS[2], ARGV[1], 60)
add(KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[4]))
return 'ok'
"""


class _Window:
    """Amounts recorded over a sliding time window, in this process."""

    def __init__(self) -> None:
        self.entries: deque = deque()

    def total(self, seconds: float, now: float) -> float:
        while self.entries and self.entries[0][0] <= now - seconds:
            self.entries.popleft()
        return sum(amount for _, amount in self.entries)

    def add(self, amount: float, now: float) -> None:
        self.entries.append((now, amount))


class GuardStoreDown(Exception):
    """Redis did not answer within its timeout, or refused the connection."""


class SharedCounts:
    """The fleet's counts in Redis (see the module docstring). One client per event loop: a
    redis.asyncio connection belongs to the loop that opened it."""

    def __init__(self, url: str, timeout_seconds: float, key_prefix: str) -> None:
        self.url, self.timeout_seconds = url, timeout_seconds
        # One hash tag: every key of the guard lands on the same Redis Cluster slot (Lua needs that).
        keys = ("requests", "tokens", "tokens-total", "spend", "spend-total")
        tag = "{" + key_prefix + "}"  # not an f-string: doubled braces in the ConfigMap read as a template to checkov
        self.keys = {name: f"{tag}:cloud-guard:{name}" for name in keys}
        self.clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.unwritten = [0, 0]  # tokens and micro-dollars Redis missed, summed until it answers

    def _scripts(self):
        loop = asyncio.get_running_loop()
        if loop not in self.clients:
            client = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_seconds,
                socket_connect_timeout=self.timeout_seconds,
                retry=Retry(NoBackoff(), 0),  # redis-py retries 3 times with backoff by default: no waiting
            )
            self.clients[loop] = (client.register_script(ADMIT), client.register_script(RECORD))
        return self.clients[loop]

    async def _run(self, operation: str, script_index: int, keys: list[str], args: list) -> str:
        try:
            script = self._scripts()[script_index]
            # The script object loads itself again if Redis restarted and forgot it (NOSCRIPT).
            answer = await asyncio.wait_for(script(keys=keys, args=args), self.timeout_seconds * 2)
        except (TimeoutError, redis.exceptions.RedisError, OSError) as error:
            STORE_ERRORS.labels(operation=operation).inc()
            raise GuardStoreDown(type(error).__name__) from None
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def admit(self, rpm: int, tpm: int, budget_micro: int, period: float) -> str:
        """'ok', or the limit that is reached ('rpm', 'tpm', 'budget')."""
        await self._write_unwritten(period)
        k = self.keys
        keys = [k["requests"], k["tokens"], k["tokens-total"], k["spend"], k["spend-total"]]
        return await self._run("admit", 0, keys, [rpm, tpm, budget_micro, int(period), uuid.uuid4().hex])

    async def record(self, tokens: int, micro: int, period: float) -> None:
        try:
            await self._write(tokens, micro, period)
        except GuardStoreDown:
            self.unwritten[0] += tokens
            self.unwritten[1] += micro

    async def _write(self, tokens: int, micro: int, period: float) -> None:
        k = self.keys
        keys = [k["tokens"], k["tokens-total"], k["spend"], k["spend-total"]]
        await self._run("record", 1, keys, [tokens, micro, uuid.uuid4().hex, int(period)])

    async def _write_unwritten(self, period: float) -> None:
        """Spend counted while Redis was away is written before anything else is admitted."""
        tokens, micro = self.unwritten
        if tokens or micro:
            await self._write(tokens, micro, period)  # raises while Redis is still away: kept for later
            self.unwritten = [0, 0]


class CloudGuard(CustomLogger):
    def __init__(self, clock=time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.requests = _Window()
        self.tokens = _Window()
        self.spend = _Window()
        self.shared: SharedCounts | None = None

    def _refuse(self, deployment: dict, limit: str, why: str) -> litellm.RateLimitError:
        REJECTIONS.labels(limit=limit).inc()
        model = (deployment.get("litellm_params") or {}).get("model", "cloud")
        message = why if why.startswith(REDIS_DOWN_TAG) else f"spend guard: {why}"
        return litellm.RateLimitError(message=message, llm_provider="openai", model=model)

    def _shared_counts(self, limits: dict) -> SharedCounts | None:
        variable = limits.get("redis_url_env")
        if not variable:
            return None
        if self.shared is None:
            url = os.environ.get(variable)
            if not url:  # the Secret is mounted by the Deployment: missing means a broken pod spec
                raise RuntimeError(f"the spend guard's Redis URL is not set (environment variable {variable})")
            self.shared = SharedCounts(url, float(limits["redis_timeout_seconds"]), limits["key_prefix"])
        return self.shared

    async def async_pre_call_check(self, deployment: dict, parent_otel_span=None) -> dict | None:
        limits = (deployment.get("model_info") or {}).get("spend_guard")
        if not limits:
            return None
        shared = self._shared_counts(limits)
        reached = None
        if shared is not None:
            try:
                reached = await self._shared_verdict(shared, limits)
            except GuardStoreDown as error:
                if limits.get("when_redis_down") != "open":
                    raise self._refuse(
                        deployment,
                        "redis_unavailable",
                        f"{REDIS_DOWN_TAG}: the spend guard cannot reach the fleet's counts in Redis ({error}); "
                        "cloud calls are refused until it can (redis.cloudGuardWhenDown: closed)",
                    ) from None
        if shared is None or reached is None:
            reached = self._local_verdict(limits)  # no Redis, or Redis away with the policy "open"
        if reached is not None:
            raise self._refuse(deployment, *reached)
        self.requests.add(1, self.clock())
        return None

    @staticmethod
    async def _shared_verdict(shared: SharedCounts, limits: dict) -> tuple[str, str] | None:
        budget = limits.get("max_budget_usd")
        answer = await shared.admit(
            rpm=_or_unlimited(limits.get("rpm")),
            tpm=_or_unlimited(limits.get("tpm")),
            budget_micro=-1 if budget is None else round(budget * MICRO),
            period=limits.get("budget_period_seconds") or MINUTE,
        )
        return None if answer == "ok" else (answer, _why(answer, limits))

    def _local_verdict(self, limits: dict) -> tuple[str, str] | None:
        now = self.clock()
        if limits.get("rpm") is not None and self.requests.total(MINUTE, now) >= limits["rpm"]:
            return "rpm", _why("rpm", limits)
        if limits.get("tpm") is not None and self.tokens.total(MINUTE, now) >= limits["tpm"]:
            return "tpm", _why("tpm", limits)
        budget, period = limits.get("max_budget_usd"), limits.get("budget_period_seconds")
        if budget is not None and self.spend.total(period, now) >= budget:
            return "budget", _why("budget", limits)
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        model_info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        limits = model_info.get("spend_guard")
        if not limits:
            return
        now = self.clock()
        usage = getattr(response_obj, "usage", None)
        tokens = int(getattr(usage, "total_tokens", 0) or 0)
        cost = float(kwargs.get("response_cost") or 0.0)
        self.tokens.add(tokens, now)  # this process keeps its own counts too: the "open" fallback
        self.spend.add(cost, now)
        shared = self._shared_counts(limits)
        if shared is not None:
            await shared.record(tokens, round(cost * MICRO), limits.get("budget_period_seconds") or MINUTE)


def _or_unlimited(limit: float | None) -> int:
    return -1 if limit is None else int(limit)


def _why(limit: str, limits: dict) -> str:
    if limit == "rpm":
        return f"{limits['rpm']} requests per minute reached"
    if limit == "tpm":
        return f"{limits['tpm']} tokens per minute reached"
    return f"budget of ${limits['max_budget_usd']} per {limits['budget_period_seconds']:g} s reached"


handler = CloudGuard()

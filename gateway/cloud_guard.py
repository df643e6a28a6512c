"""Spend guard for the cloud tier: a LiteLLM callback inside the proxy (shipped in the ConfigMap).

Gaming Mode can last a weekend with Ollama down too; the cloud tier must not become an open tap.
The limits live in the cloud deployment's `model_info.spend_guard` (rendered from stack config by
core/litellm_config.py): requests per minute, tokens per minute, and dollars per budget period.
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
written are kept and written exactly once when Redis answers again: one write at a time, resent
under the same batch id (a write that timed out may still have run; Redis counts the id once).
"""

import asyncio
import contextlib
import os
import sys
import time
import uuid
import weakref
from collections import deque

import litellm
import redis.asyncio
import redis.exceptions
from litellm.integrations.custom_logger import CustomLogger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import (
    BUDGET_PERIOD_SECONDS,
    CLOUD_GUARD_REJECTIONS,
    CLOUD_GUARD_STORE_ERRORS,
    KEY_PREFIX,
    MAX_BUDGET_USD,
    OPEN,
    REDIS_DOWN_TAG,
    REDIS_TIMEOUT_SECONDS,
    REDIS_URL_ENV_KEY,
    RPM,
    SPEND_GUARD,
    TPM,
    WHEN_REDIS_DOWN,
    gateway_counter,
)

MINUTE = 60.0
MICRO = 1_000_000  # dollars are counted in Redis as whole micro-dollars: integer sums stay exact
# Served at /metrics/ with LiteLLM's own metrics: a cloud call the guard refused, by limit.
REJECTIONS = gateway_counter(
    CLOUD_GUARD_REJECTIONS, "Cloud calls refused by the spend guard, by the limit reached", ["limit"]
)
# The shared counts could not be read or written (Redis down or slower than its timeout).
STORE_ERRORS = gateway_counter(
    CLOUD_GUARD_STORE_ERRORS, "Spend guard calls to Redis that failed or timed out", ["operation"]
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
# KEYS: tokens, tokens total, spend, spend total. ARGV: tokens, micro-dollars, batch id, budget
# period (s). A batch sent again under its id (its first try timed out, yet Redis may have run it) is
# counted once: `ZADD NX` finds its entry and the total is left alone.
RECORD = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function add(window, total, amount, seconds)
  if tonumber(amount) <= 0 then return end
  if redis.call('ZADD', window, 'NX', now, ARGV[3] .. ':' .. amount) == 1 then
    redis.call('INCRBY', total, amount)
  end
  redis.call('EXPIRE', window, seconds + 60)
  redis.call('EXPIRE', total, seconds + 60)
end
add(KEYS[1], KEYS[2], ARGV[1], 60)
add(KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[4]))
return 'ok'
"""


class _Window:
    """Whole amounts recorded over a sliding time window, in this process.

    It is written on every cloud call but read only when its limit is set and Redis does not
    answer, so it must stay small unread: amounts that arrive within a thousandth of the window
    share one slot (at most SLOTS + 1 slots, whatever the traffic), expired slots leave on every
    write, and the total is kept as amounts come and go (a check sums nothing). A slot leaves when
    its newest amount does: an amount may count up to a thousandth of the window too long, never
    too short.
    """

    SLOTS = 1000

    def __init__(self) -> None:
        self.slots: deque[list] = deque()  # [first time, newest time, amount], oldest first
        self.sum = 0

    def total(self, seconds: float, now: float) -> int:
        self._expire(seconds, now)
        return self.sum

    def add(self, amount: int, seconds: float, now: float) -> None:
        self._expire(seconds, now)
        newest = self.slots[-1] if self.slots else None
        if newest is not None and now - newest[0] < seconds / self.SLOTS:
            newest[1] = now
            newest[2] += amount
        else:
            self.slots.append([now, now, amount])
        self.sum += amount

    def _expire(self, seconds: float, now: float) -> None:
        while self.slots and self.slots[0][1] <= now - seconds:
            self.sum -= self.slots.popleft()[2]


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
        self.unwritten = [0, 0]  # tokens and micro-dollars recorded, not yet in a batch
        # (batch id, tokens, micro-dollars) being written, or whose write failed: sent again under
        # the same id until Redis confirms it, so a write that timed out yet ran is not counted twice.
        self.batch: tuple[str, int, int] | None = None
        self.flight: asyncio.Future | None = None  # the one write under way; concurrent callers await it

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
        self.unwritten[0] += tokens
        self.unwritten[1] += micro
        with contextlib.suppress(GuardStoreDown):  # kept: the next admit or record writes it, once Redis answers
            await self._write_unwritten(period)

    async def _write_unwritten(self, period: float) -> None:
        """Everything recorded so far reaches Redis before this returns (else GuardStoreDown), so
        spend counted while Redis was away is written before anything else is admitted. One write
        at a time: concurrent callers wait for the write under way instead of sending the same
        amounts again; a write sealed before a caller's amounts arrived is followed by one with them."""
        for _ in range(2):
            if self.batch is None and not any(self.unwritten):
                return
            if self.flight is None or self.flight.done() or self.flight.get_loop() is not asyncio.get_running_loop():
                # (Another loop's write cannot be awaited here; sending the same batch again is harmless.)
                self.flight = asyncio.ensure_future(self._write_batch(period))
                self.flight.add_done_callback(_retrieve_exception)
            # Shielded: a caller cancelled (its client left) must not cancel a write others wait for.
            await asyncio.shield(self.flight)

    async def _write_batch(self, period: float) -> None:
        if self.batch is None:  # seal what was recorded; what arrives during the write waits for the next
            self.batch = (uuid.uuid4().hex, *self.unwritten)
            self.unwritten = [0, 0]
        batch = self.batch
        k = self.keys
        keys = [k["tokens"], k["tokens-total"], k["spend"], k["spend-total"]]
        await self._run("record", 1, keys, [batch[1], batch[2], batch[0], int(period)])
        if self.batch is batch:  # not a newer one sealed by a write on another event loop
            self.batch = None


class TierCounts:
    """One cloud tier's counts: each tier has its own limits and budget period (a chain's cloud tier
    beside `openai.*`), so none spends another's allowance."""

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        self.spend = _Window()
        self.shared: SharedCounts | None = None


class CloudGuard(CustomLogger):
    def __init__(self, clock=time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.tiers: dict[str, TierCounts] = {}

    def counts(self, model_info: dict) -> TierCounts:
        """The counts of the tier whose `model_info` this is (by its id)."""
        tier = str(model_info.get("id", ""))
        if tier not in self.tiers:
            self.tiers[tier] = TierCounts()
        return self.tiers[tier]

    def _refuse(self, deployment: dict, limit: str, why: str) -> litellm.RateLimitError:
        REJECTIONS.labels(limit=limit).inc()
        model = (deployment.get("litellm_params") or {}).get("model", "cloud")
        message = why if why.startswith(REDIS_DOWN_TAG) else f"spend guard: {why}"
        return litellm.RateLimitError(message=message, llm_provider="openai", model=model)

    @staticmethod
    def _shared_counts(counts: TierCounts, limits: dict) -> SharedCounts | None:
        variable = limits.get(REDIS_URL_ENV_KEY)
        if not variable:
            return None
        if counts.shared is None:
            url = os.environ.get(variable)
            if not url:  # the Secret is mounted by the Deployment: missing means a broken pod spec
                raise RuntimeError(f"the spend guard's Redis URL is not set (environment variable {variable})")
            # Each tier's own KEY_PREFIX (core/litellm_config.py spend_guard): its own keys in Redis.
            counts.shared = SharedCounts(url, float(limits[REDIS_TIMEOUT_SECONDS]), limits[KEY_PREFIX])
        return counts.shared

    async def async_pre_call_check(self, deployment: dict, parent_otel_span=None) -> dict | None:
        model_info = deployment.get("model_info") or {}
        limits = model_info.get(SPEND_GUARD)
        if not limits:
            return None
        counts = self.counts(model_info)
        shared = self._shared_counts(counts, limits)
        reached = None
        if shared is not None:
            try:
                reached = await self._shared_verdict(shared, limits)
            except GuardStoreDown as error:
                if limits.get(WHEN_REDIS_DOWN) != OPEN:
                    raise self._refuse(
                        deployment,
                        "redis_unavailable",
                        f"{REDIS_DOWN_TAG}: the spend guard cannot reach the fleet's counts in Redis ({error}); "
                        "cloud calls are refused until it can (redis.cloudGuardWhenDown: closed)",
                    ) from None
        if shared is None or reached is None:
            reached = self._local_verdict(counts, limits)  # no Redis, or Redis away with the policy "open"
        if reached is not None:
            raise self._refuse(deployment, *reached)
        counts.requests.add(1, MINUTE, self.clock())
        return None

    @staticmethod
    async def _shared_verdict(shared: SharedCounts, limits: dict) -> tuple[str, str] | None:
        budget = limits.get(MAX_BUDGET_USD)
        answer = await shared.admit(
            rpm=_or_unlimited(limits.get(RPM)),
            tpm=_or_unlimited(limits.get(TPM)),
            budget_micro=-1 if budget is None else round(budget * MICRO),
            period=_budget_period(limits),
        )
        return None if answer == "ok" else (answer, _why(answer, limits))

    def _local_verdict(self, counts: TierCounts, limits: dict) -> tuple[str, str] | None:
        now = self.clock()
        if limits.get(RPM) is not None and counts.requests.total(MINUTE, now) >= limits[RPM]:
            return "rpm", _why("rpm", limits)
        if limits.get(TPM) is not None and counts.tokens.total(MINUTE, now) >= limits[TPM]:
            return "tpm", _why("tpm", limits)
        budget = limits.get(MAX_BUDGET_USD)
        if budget is not None and counts.spend.total(_budget_period(limits), now) >= round(budget * MICRO):
            return "budget", _why("budget", limits)
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        model_info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        limits = model_info.get(SPEND_GUARD)
        if not limits:
            return
        now = self.clock()
        counts = self.counts(model_info)
        usage = getattr(response_obj, "usage", None)
        tokens = int(getattr(usage, "total_tokens", 0) or 0)
        micro = round(float(kwargs.get("response_cost") or 0.0) * MICRO)
        counts.tokens.add(tokens, MINUTE, now)  # this process keeps its own counts too: the "open" fallback
        counts.spend.add(micro, _budget_period(limits), now)
        shared = self._shared_counts(counts, limits)
        if shared is not None:
            await shared.record(tokens, micro, _budget_period(limits))


def _retrieve_exception(flight: asyncio.Future) -> None:
    """A failed write whose callers all left is not an unhandled error: the batch is kept."""
    if not flight.cancelled():
        flight.exception()


def _budget_period(limits: dict) -> float:
    return limits.get(BUDGET_PERIOD_SECONDS) or MINUTE


def _or_unlimited(limit: float | None) -> int:
    return -1 if limit is None else int(limit)


def _why(limit: str, limits: dict) -> str:
    if limit == "rpm":
        return f"{limits[RPM]} requests per minute reached"
    if limit == "tpm":
        return f"{limits[TPM]} tokens per minute reached"
    return f"budget of ${limits[MAX_BUDGET_USD]} per {limits[BUDGET_PERIOD_SECONDS]:g} s reached"


handler = CloudGuard()

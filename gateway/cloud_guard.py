"""Spend guard for the cloud tier: a LiteLLM callback inside the proxy (shipped in the ConfigMap).

Gaming Mode can last a weekend with Ollama down too; the cloud tier must not become an open tap.
The limits live in the cloud deployment's `model_info.spend_guard` (rendered from stack config by
components/fallback.py): requests per minute, tokens per minute, and dollars per budget period.
Before each cloud call the router asks `async_pre_call_check`; over a limit it raises
`litellm.RateLimitError`, the router cools the cloud tier down, and gateway/honest_errors.py answers
the client 429 `cloud_rate_limited`. Local tiers carry no `spend_guard` and are never limited.

State is in memory, per gateway process: with N replicas (or workers) the fleet may spend up to N
times each limit. LiteLLM's own per-deployment rpm/tpm (usage-based routing) and budgets also need
Redis to count across replicas, and its rpm check admitted one request fewer than configured in the
drill; this guard is exact per process and needs nothing else.
"""

import time
from collections import deque

import litellm
from litellm.integrations.custom_logger import CustomLogger
from prometheus_client import REGISTRY, Counter


def gateway_counter(name: str, documentation: str, labels: list[str]) -> Counter:
    """One counter per process, however often this file is loaded (LiteLLM execs it by path)."""
    try:
        return Counter(name, documentation, labels)
    except ValueError:  # registered by an earlier load of this file
        return REGISTRY._names_to_collectors[f"{name}_total"]


MINUTE = 60.0
# Served at /metrics/ with LiteLLM's own metrics: a cloud call the guard refused, by limit.
REJECTIONS = gateway_counter(
    "llm_gateway_cloud_guard_rejections", "Cloud calls refused by the spend guard, by the limit reached", ["limit"]
)


class _Window:
    """Amounts recorded over a sliding time window."""

    def __init__(self) -> None:
        self.entries: deque = deque()

    def total(self, seconds: float, now: float) -> float:
        while self.entries and self.entries[0][0] <= now - seconds:
            self.entries.popleft()
        return sum(amount for _, amount in self.entries)

    def add(self, amount: float, now: float) -> None:
        self.entries.append((now, amount))


class CloudGuard(CustomLogger):
    def __init__(self, clock=time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.requests = _Window()
        self.tokens = _Window()
        self.spend = _Window()

    def _refuse(self, deployment: dict, limit: str, why: str) -> litellm.RateLimitError:
        REJECTIONS.labels(limit=limit).inc()
        model = (deployment.get("litellm_params") or {}).get("model", "cloud")
        return litellm.RateLimitError(message=f"cloud tier spend guard: {why}", llm_provider="openai", model=model)

    async def async_pre_call_check(self, deployment: dict, parent_otel_span=None) -> dict | None:
        limits = (deployment.get("model_info") or {}).get("spend_guard")
        if not limits:
            return None
        now = self.clock()
        rpm, tpm = limits.get("rpm"), limits.get("tpm")
        budget, period = limits.get("max_budget_usd"), limits.get("budget_period_seconds")
        if rpm is not None and self.requests.total(MINUTE, now) >= rpm:
            raise self._refuse(deployment, "rpm", f"{rpm} requests per minute reached")
        if tpm is not None and self.tokens.total(MINUTE, now) >= tpm:
            raise self._refuse(deployment, "tpm", f"{tpm} tokens per minute reached")
        if budget is not None and self.spend.total(period, now) >= budget:
            raise self._refuse(deployment, "budget", f"budget of ${budget} per {period:g} s reached")
        self.requests.add(1, now)
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        model_info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        if not model_info.get("spend_guard"):
            return
        now = self.clock()
        usage = getattr(response_obj, "usage", None)
        self.tokens.add(getattr(usage, "total_tokens", 0) or 0, now)
        self.spend.add(float(kwargs.get("response_cost") or 0.0), now)


handler = CloudGuard()

"""The LiteLLM proxy config that enforces the fallback chain (core/chain.py).

Pure: no Pulumi import. The Pulumi program puts `render_config_yaml(settings)` in the gateway's
ConfigMap; the failover drill (`drill/`) starts the real LiteLLM proxy on the very same bytes,
with only the `api_base` addresses pointed at loopback stand-ins.

Why the config looks the way it does (LiteLLM 1.108.7, sources under site-packages/litellm):
- One model group per tier, distinct names. Several deployments under one `model_name` are
  load-balanced at random, not ordered.
- The chain is nested: the client-facing group falls back to Ollama only, and Ollama's group falls
  back to the cloud. A flat list `[ollama, openai]` would move on to the cloud after *any* Ollama
  error, a 400 included (`router_utils/fallback_event_handlers.py:run_async_fallback` catches
  every exception of a target and tries the next one). Nested, an Ollama 400 stops at Ollama.
- `fallback_on_unsupported_params: false` makes a 400 from a tier end the request there
  (`is_bad_request_without_fallback`), and the empty context-window / content-policy fallbacks stop
  those two 400 subtypes too, which otherwise default to the ordinary chain. A client's bad request
  must never send its prompt out of the cluster.
- Per-tier `timeout`, no global one: a deployment's own timeout wins (`Router._get_non_stream_timeout`),
  and a short global timeout cuts off long healthy answers and re-sends them down the chain.
- `num_retries: 0`: retries sleep 0.5·2^k s even with nowhere else to go
  (`Router.async_function_with_retries`); the next tier is the retry.
- `allowed_fails: 0` + `cooldown_time`: a one-deployment group is never cooled down while
  `allowed_fails` keeps its default (`cooldown_handlers._should_cooldown_deployment`).
- Background health checks on vLLM only, with health-check routing: a failed probe puts vLLM in
  cooldown, so a dead or hung vLLM is skipped without each request paying for it
  (`proxy_server._write_health_state_to_router_cache`). The cloud is never probed (a probe is a
  prompt, and costs money); Ollama is not either (a probe is CPU work, and a slow probe must not
  count as "down").
- Ollama is never cooled down (`model_info.allowed_fails` on a one-deployment group, see
  `cooldown_handlers._should_cooldown_based_on_deployment_policy`). Seen in the drill: while vLLM
  is cooling down, LiteLLM records the client group's "No deployments available" error (a 429)
  against the deployment that served the fallback — Ollama — and cools *it* down, which would send
  the next requests to the cloud while Ollama is healthy. Every request therefore tries Ollama
  first; a refused connection costs milliseconds.
"""

from __future__ import annotations

import itertools
from typing import Any

import yaml

from core.chain import Chain, Tier, chains
from core.names import (
    CLOUD_GUARD_FILE,
    CONTEXT_CHECK_FILE,
    DATABASE_URL_ENV,
    HONEST_ERRORS_FILE,
    LEAN_METRICS_FILE,
    LITELLM_METRICS,
    MASTER_KEY_ENV,
    PROGRESS_HANDLER_FILE,
    PROGRESS_PROVIDER,
    PROJECT,
    REDIS_URL_ENV,
    REQUEST_CHECK_FILE,
    SERVED_MODEL_FILE,
)
from core.settings import OpenAISettings, Settings
from gateway.contract import (
    ANSWERS_AS,
    BUDGET_PERIOD_SECONDS,
    CHAT_MODE,
    CLIENT_FACING,
    CONTEXT_TOKENS,
    EMBEDDING_DIMENSIONS,
    ENGINE_PROBE,
    KEY_PREFIX,
    LEAVES_CLUSTER,
    MAX_BUDGET_USD,
    MODE,
    REDIS_TIMEOUT_SECONDS,
    REDIS_URL_ENV_KEY,
    RPM,
    SPEND_GUARD,
    TPM,
    WHEN_REDIS_DOWN,
)

# Failures Ollama may have before a cooldown: in effect never (see the module docstring).
NEVER_COOL_DOWN = 1_000_000

# vLLM: cooled down at the first server-side failure, a timed-out health probe included. Without a
# per-exception policy a one-deployment group is "lone" when the probe reports it (no requested
# group, so no fallback known) and is never cooled (`cooldown_handlers._should_cooldown_deployment`).
# A 400 is the client's fault and is left out.
COOL_DOWN_AT_FIRST_FAILURE = {
    "TimeoutErrorAllowedFails": 0,
    "InternalServerErrorAllowedFails": 0,
    "ServiceUnavailableErrorAllowedFails": 0,
    "BadGatewayErrorAllowedFails": 0,
    "RateLimitErrorAllowedFails": 0,
    "NotFoundErrorAllowedFails": 0,
    "AuthenticationErrorAllowedFails": 0,
}

# The `model_info` markers the plugins find tiers by (LEAVES_CLUSTER, CLIENT_FACING, CONTEXT_TOKENS, ANSWERS_AS,
# ENGINE_PROBE: imported above, and importable from here) are spelled once, in gateway/contract.py.


def callbacks(settings: Settings) -> list[str]:
    """LiteLLM callbacks: the request check, the context check, honest errors, the cloud spend guard and
    the answering model's name always;
    Prometheus metrics (per-tier requests, failures, `litellm_deployment_successful_fallbacks_total`) and
    lean_metrics (no work for series nobody reads) if on."""
    checks = (REQUEST_CHECK_FILE, CONTEXT_CHECK_FILE, HONEST_ERRORS_FILE, CLOUD_GUARD_FILE, SERVED_MODEL_FILE)
    names = [f"{path.stem}.handler" for path in checks]
    if settings.gateway.metrics:
        names += ["prometheus", f"{LEAN_METRICS_FILE.stem}.handler"]
    return names


def _metrics_settings(settings: Settings) -> dict[str, Any]:
    """Only the Prometheus series something reads (names.LITELLM_METRICS), all their labels kept."""
    if not settings.gateway.metrics:
        return {}
    return {"prometheus_metrics_config": [{"group": PROJECT, "metrics": list(LITELLM_METRICS)}]}


def shared_state_prefix(settings: Settings) -> str:
    """Every key the fleet writes to Redis starts with this: stacks sharing one Redis never mix."""
    return f"{PROJECT}:{settings.namespace}"


def spend_guard(settings: Settings, cloud: OpenAISettings | None = None, tier: str | None = None) -> dict[str, Any]:
    """A cloud tier's limits (`openai.*` unless another is given) as gateway/cloud_guard.py reads
    them (empty: no limit), and where the fleet keeps their counts (Redis, when on; else each
    process counts alone)."""
    openai = cloud if cloud is not None else settings.openai
    limits: dict[str, Any] = {}
    if openai.rpm is not None:
        limits[RPM] = openai.rpm
    if openai.tpm is not None:
        limits[TPM] = openai.tpm
    if openai.max_budget_usd is not None:
        limits[MAX_BUDGET_USD] = openai.max_budget_usd
        limits[BUDGET_PERIOD_SECONDS] = openai.budget_period_seconds
    if limits and settings.redis.enabled:
        limits[REDIS_URL_ENV_KEY] = REDIS_URL_ENV
        limits[REDIS_TIMEOUT_SECONDS] = settings.redis.timeout_seconds
        # Each cloud tier counts in keys of its own; `openai.*`'s keep their name (counts survive the upgrade).
        own = f":{tier}" if tier and cloud is not None and cloud is not settings.openai else ""
        limits[KEY_PREFIX] = shared_state_prefix(settings) + own
        limits[WHEN_REDIS_DOWN] = settings.redis.cloud_guard_when_down
    return limits


def _model_entry(tier: Tier, health_check_timeout: int, limits: dict[str, Any]) -> dict[str, Any]:
    model_info: dict[str, Any] = {"id": tier.name}
    if tier.mode != CHAT_MODE:
        # LiteLLM's own marker: its health check embeds instead of chatting; the front door
        # (gateway/request_check.py) serves this chain on the embeddings route only.
        model_info[MODE] = tier.mode
    if tier.embedding is not None:
        model_info[EMBEDDING_DIMENSIONS] = tier.embedding[1]
    if tier.client_facing:
        model_info[CLIENT_FACING] = True
    if not tier.in_cluster:
        model_info[LEAVES_CLUSTER] = True
        if limits:
            model_info[SPEND_GUARD] = limits
    if tier.probed:
        model_info["health_check_timeout"] = health_check_timeout
        # The probe asks gateway/vllm_progress.py for /health and the engine's progress, not for a
        # generation that would queue behind the load and time out on a busy GPU.
        model_info["health_check_params"] = {ENGINE_PROBE: True}
    if tier.probed or not tier.in_cluster:
        # vLLM: skipped after a failure. The cloud: a wrong key or a rate limit is not hammered,
        # and gateway/honest_errors.py reads the cooldown to tell the client why.
        model_info["allowed_fails_policy"] = COOL_DOWN_AT_FIRST_FAILURE
    if not tier.cooled_down:
        model_info["allowed_fails"] = NEVER_COOL_DOWN
    if tier.context_tokens is not None:
        model_info[CONTEXT_TOKENS] = tier.context_tokens
    if tier.answers_as is not None:
        model_info[ANSWERS_AS] = tier.answers_as
    return {"model_name": tier.group, "litellm_params": dict(tier.litellm_params), "model_info": model_info}


def _embedding_request_timeout(tiers: tuple[Tier, ...]) -> dict[str, Any]:
    """LiteLLM's `ollama/` embeddings ignore the deployment's `timeout`: only the global
    `request_timeout` (6000 s by default) bounds a hung Ollama. Set to the slowest such tier's cap,
    and only with one (a chat tier's own timeout wins over it: Router._get_non_stream_timeout)."""
    caps = [int(t.litellm_params["timeout"]) for t in tiers if t.api == "ollama" and t.mode != CHAT_MODE]
    return {"request_timeout": max(caps)} if caps else {}


def nested_fallbacks(chain: tuple[Tier, ...]) -> list[dict[str, list[str]]]:
    """Each tier falls back to the next one only: [{vllm: [ollama]}, {ollama: [openai]}]."""
    return [{tier.group: [after.group]} for tier, after in itertools.pairwise(chain)]


def litellm_config(settings: Settings) -> dict[str, Any]:
    """The whole LiteLLM proxy config. Holds no secret: keys appear only as `os.environ/NAME`."""
    every = chains(settings)
    tiers = tuple(tier for chain in every for tier in chain.tiers)
    probe_timeout = settings.gateway.probe_timeout_seconds
    return {
        "model_list": [
            _model_entry(tier, probe_timeout, spend_guard(settings, tier.limits, tier.name)) for tier in tiers
        ],
        "router_settings": _router_settings(settings, every),
        "litellm_settings": {
            "num_retries": settings.gateway.num_retries,
            "custom_provider_map": [
                {"provider": PROGRESS_PROVIDER, "custom_handler": f"{PROGRESS_HANDLER_FILE.stem}.handler"}
            ],
            "callbacks": callbacks(settings),
            **_metrics_settings(settings),
            **_embedding_request_timeout(tiers),
        },
        "general_settings": _general_settings(settings, tiers),
    }


def _router_settings(settings: Settings, every: tuple[Chain, ...]) -> dict[str, Any]:
    no_fallback = [{tier.group: []} for chain in every for tier in chain.tiers]
    return {
        "fallbacks": [step for chain in every for step in nested_fallbacks(chain.tiers)],
        "context_window_fallbacks": no_fallback,
        "content_policy_fallbacks": no_fallback,
        "fallback_on_unsupported_params": False,
        "num_retries": settings.gateway.num_retries,
        "retry_after": 0,
        "allowed_fails": 0,
        "cooldown_time": settings.gateway.cooldown_seconds,
        **_aliases(every),
        **_shared_router_state(settings),
    }


def _aliases(every: tuple[Chain, ...]) -> dict[str, Any]:
    """The operator's other names for each chain, as LiteLLM aliases of its head (never groups of their
    own, which would have no fallbacks). The front door rewrites an alias to the head's name before
    LiteLLM routes: LiteLLM looks fallbacks up by the requested name, and an alias has none."""
    aliases = {alias: chain.name for chain in every for alias in chain.aliases}
    return {"model_group_alias": aliases} if aliases else {}


def _shared_router_state(settings: Settings) -> dict[str, Any]:
    """LiteLLM's router keeps its cooldowns (and health-check states and per-minute failure
    counts) in Redis when given one (`Router.cache`, a DualCache), so a vLLM failure one replica
    learned is skipped by all: replicas read cooldowns back from Redis at most every second
    (`DEFAULT_COOLDOWN_REDIS_READ_INTERVAL_SECONDS`). Its Redis calls wait 5 s by default
    (`RedisCache(socket_timeout=5.0)`); a request must not wait that long on a slow Redis, so the
    timeout is the stack's. `namespace` prefixes every key LiteLLM writes."""
    redis = settings.redis
    if not redis.enabled:
        return {}
    return {
        "redis_url": f"os.environ/{REDIS_URL_ENV}",
        "cache_kwargs": {
            "namespace": shared_state_prefix(settings),
            "socket_timeout": redis.timeout_seconds,
            "socket_connect_timeout": redis.timeout_seconds,
        },
    }


def _general_settings(settings: Settings, chain: tuple[Tier, ...]) -> dict[str, Any]:
    """`chain`: every tier of every chain."""
    general: dict[str, Any] = {
        "master_key": f"os.environ/{MASTER_KEY_ENV}",
        "background_health_checks": True,
        "health_check_interval": settings.gateway.health_check_interval_seconds,
        "enable_health_check_routing": True,
        "background_health_check_model_groups": [tier.group for tier in chain if tier.probed],
        # A client that leaves cancels its upstream call (common_request_processing.py
        # _await_llm_call_cancelling_on_disconnect): its vLLM request stops generating or leaves the
        # queue instead of running to the end for no one. Streams are closed on disconnect anyway.
        "cancel_on_disconnect": True,
    }
    if settings.database:
        # Admin UI, virtual keys, spend logs. The URL only ever comes from the Secret.
        general["database_url"] = f"os.environ/{DATABASE_URL_ENV}"
    return general


def render_config_yaml(settings: Settings) -> str:
    """The exact bytes of the ConfigMap's config.yaml (stable key order, so diffs stay readable)."""
    return yaml.safe_dump(litellm_config(settings), sort_keys=False, default_flow_style=False)

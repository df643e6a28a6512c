"""The contract between the program and its gateway plugins: every fact read on both sides of the ConfigMap.

The program (core/, the drill, the tests) writes these names into LiteLLM's config, the pod's environment
and the alerts; the plugins beside this file (gateway/*.py, inside the LiteLLM proxy) read them back. Each
is spelled here once. A few are still written by hand where the program renders them (core/chain.py's vLLM
limit keys, core/litellm_config.py `spend_guard`'s keys, core/settings.py's `redis.cloudGuardWhenDown`
choices): tests/test_contract.py and tests/test_fallback.py hold those to the names here until they import them.

Who reads it:
- the program, as an ordinary module: `from gateway.contract import LEAVES_CLUSTER` (core/ re-exports
  the names it always had, e.g. core/litellm_config.py `LEAVES_CLUSTER`);
- the plugins, from the ConfigMap: it is one of core/names.py GATEWAY_MODULES, so it lies beside them
  in the gateway's config directory (the pod's ConfigMap mount, the drill's directory, gateway/ itself).

How a plugin finds it: LiteLLM execs each `<file>.handler` by path (litellm/proxy/types_utils/utils.py
`get_instance_fn`: `spec_from_file_location`), without putting the config directory on `sys.path`. So
each plugin appends its own directory to `sys.path`, then imports `contract` in the ordinary way:
one module object, `sys.modules["contract"]`, for every plugin in the process, however often LiteLLM
or a test execs a plugin file, and wherever the files lie. Appended, not prepended: a plugin's file name
can never hide an installed module. (In the tests' process the program's `gateway.contract` is a second
module object over the same file; nothing here holds state, the metric helpers keep theirs in
prometheus_client's registry, so the two never disagree.)

Rules: the standard library only at import time (the pod's image and the program's venv both import it;
prometheus_client is imported inside the metric helpers, which only the plugins call), facts and no policy.
It ships in the ConfigMap like any plugin: a change here rolls the gateway pods (`checksum/config`).
"""

# --- `model_info` markers: core/litellm_config.py puts them on a deployment; plugins find tiers by them.
LEAVES_CLUSTER = "leaves_cluster"  # the tier whose calls leave the cluster (honest_errors.py reads its cooldown)
CLIENT_FACING = "client_facing"  # the chain's own group: with its aliases, all clients may call (request_check.py)
CONTEXT_TOKENS = "context_tokens"  # a local tier's context length, which context_check.py enforces
ANSWERS_AS = "answers_as"  # the model an answer of this tier names (served_model.py sets it)
SPEND_GUARD = "spend_guard"  # the cloud tier's limits, which cloud_guard.py enforces (keys below)
# LiteLLM's own key: an embeddings chain's tiers say `mode: embedding` (its health check embeds); the
# front door serves such a chain on the embeddings route only, context_check.py counts its inputs.
MODE = "mode"
EMBEDDING_MODE = "embedding"
CHAT_MODE = "chat"  # no `mode` key at all: a chat chain's config stays as it was before chains
# An embeddings tier's declared vector length: the front door refuses a request for another one.
EMBEDDING_DIMENSIONS = "embedding_dimensions"
# Set in `model_info.health_check_params`: LiteLLM hands it to vllm_progress.py on a background health
# check, which then asks vLLM's /health and the engine's progress instead of queueing a generation.
ENGINE_PROBE = "engine_probe"

# --- vLLM's limits: keys of the vLLM deployment's `litellm_params` (core/chain.py), which vllm_progress.py
# requires (a missing one fails loudly: no silent default hides a config that drifted).
FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # seconds to the first event before the engine's progress counts
STALL_TIMEOUT = "stall_timeout"  # the longest silence between events (or without the engine's progress)
MAX_QUEUE_SECONDS = "max_queue_seconds"  # without a first event this long, spill to the next tier (0: off)
MAX_CONNECTIONS = "max_connections"  # each gateway process's connection pool to vLLM
LIMIT_KEYS = (FIRST_TOKEN_TIMEOUT, STALL_TIMEOUT, MAX_QUEUE_SECONDS, MAX_CONNECTIONS)

# --- The spend guard: keys of `model_info.spend_guard` (core/litellm_config.py `spend_guard`), read by
# cloud_guard.py. A key left out is no limit; without the Redis keys each process counts alone.
RPM = "rpm"  # requests per minute
TPM = "tpm"  # tokens per minute
MAX_BUDGET_USD = "max_budget_usd"  # dollars per budget period...
BUDGET_PERIOD_SECONDS = "budget_period_seconds"  # ... of this many seconds
REDIS_URL_ENV_KEY = "redis_url_env"  # the name of the environment variable holding the fleet's Redis URL
REDIS_TIMEOUT_SECONDS = "redis_timeout_seconds"  # the longest any Redis call may take
KEY_PREFIX = "key_prefix"  # every Redis key the guard writes starts with it (stacks sharing a Redis never mix)
WHEN_REDIS_DOWN = "when_redis_down"  # one of WHEN_REDIS_DOWN_POLICIES (redis.cloudGuardWhenDown)
SPEND_GUARD_KEYS = (
    RPM,
    TPM,
    MAX_BUDGET_USD,
    BUDGET_PERIOD_SECONDS,
    REDIS_URL_ENV_KEY,
    REDIS_TIMEOUT_SECONDS,
    KEY_PREFIX,
    WHEN_REDIS_DOWN,
)
CLOSED = "closed"  # Redis away: cloud calls are refused (429 CLOUD_GUARD_UNAVAILABLE)
OPEN = "open"  # Redis away: each process enforces the limits on its own counts
WHEN_REDIS_DOWN_POLICIES = (CLOSED, OPEN)
# Starts the guard's refusal while Redis is away, which honest_errors.py tells apart from a rate limit.
# LiteLLM keeps the first 50 characters of the exception that cooled the cloud tier down: keep it short.
REDIS_DOWN_TAG = "guard-store-down"

# --- The gateway pod's plain environment (core/gateway_pod.py sets it; the plugins read it).
MAX_REQUEST_BYTES_ENV = "LLM_GATEWAY_MAX_REQUEST_BYTES"  # the largest body request_check.py's front door reads

# --- Metrics the plugins add to LiteLLM's /metrics/; core/observability.py's alerts and dashboard, and
# docs/monitoring.md, read them. A counter is scraped with `_total` after its name (`scraped`).
FAILED_REQUESTS = (
    "llm_gateway_failed_requests"  # counter {reason, status, requested_model}: honest_errors.py, by FAILURE_REASONS
)
CLOUD_GUARD_REJECTIONS = "llm_gateway_cloud_guard_rejections"  # counter {limit}: cloud_guard.py's refusals
CLOUD_GUARD_STORE_ERRORS = "llm_gateway_cloud_guard_store_errors"  # counter {operation}: Redis failed or slow
PROGRESS_BLIND = "llm_gateway_vllm_progress_blind"  # gauge {engine}: 1 while that vLLM's /metrics cannot be read
GATEWAY_COUNTERS = (FAILED_REQUESTS, CLOUD_GUARD_REJECTIONS, CLOUD_GUARD_STORE_ERRORS)
GATEWAY_GAUGES = (PROGRESS_BLIND,)

# --- Why a client was refused: `error.provider_specific_fields.reason` in OpenAI's error format, and the
# FAILED_REQUESTS `reason` label. Clients, the alerts and docs/failover.md read them: a public name.
INVALID_REQUEST = "invalid_request"  # the client's mistake (a tier's 400/413/422, the request check)
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the prompt does not fit the chain's context
UPSTREAM_AUTH_FAILED = "upstream_auth_failed"  # local tiers down, the cloud rejects the gateway's own key
CLOUD_RATE_LIMITED = "cloud_rate_limited"  # local tiers down, the cloud's (or the spend guard's) limit reached
CLOUD_GUARD_UNAVAILABLE = "cloud_guard_unavailable"  # local tiers down, the guard cannot count (CLOSED)
NO_TIER_AVAILABLE = "no_tier_available"  # every tier refused, failed, hung or is cooling down
STREAM_INTERRUPTED = "stream_interrupted"  # a stream broke after the 200 went out
FAILURE_REASONS = (
    INVALID_REQUEST,
    CONTEXT_LENGTH_EXCEEDED,
    UPSTREAM_AUTH_FAILED,
    CLOUD_RATE_LIMITED,
    CLOUD_GUARD_UNAVAILABLE,
    NO_TIER_AVAILABLE,
    STREAM_INTERRUPTED,
)


def scraped(counter: str) -> str:
    """A counter's name as Prometheus scrapes it (prometheus_client adds `_total`)."""
    return f"{counter}_total"


def gateway_counter(name: str, documentation: str, labels: tuple[str, ...] | list[str]):
    """The process's one counter of this name, however often a plugin file is exec'd (LiteLLM execs each
    by path, the tests again): registering it twice in prometheus_client's registry is an error."""
    from prometheus_client import REGISTRY, Counter

    registered = REGISTRY._names_to_collectors.get(name)
    return registered if registered is not None else Counter(name, documentation, labels)


def gateway_gauge(name: str, documentation: str, labels: tuple[str, ...] | list[str] = ()):
    """The process's one gauge of this name (as `gateway_counter`)."""
    from prometheus_client import REGISTRY, Gauge

    registered = REGISTRY._names_to_collectors.get(name)
    return registered if registered is not None else Gauge(name, documentation, labels)


def chain_groups(fallbacks, head: str) -> list[str]:
    """The groups of the chain `head` starts: itself, then every group its fallbacks reach (the
    router's `fallbacks`, a list of {group: [next]}). With several chains, what one request may use."""
    steps: dict[str, list[str]] = {}
    for step in fallbacks or []:
        for group, targets in (step or {}).items():
            steps.setdefault(group, []).extend(targets or [])
    reached = [head]
    for group in reached:
        reached += [target for target in steps.get(group, []) if target not in reached]
    return reached

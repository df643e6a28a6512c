"""Every name the program gives to something: Services, ports, Secrets, env vars, files, config keys.

Pure: no Pulumi import. Components, the chain, the drill and the tests import names from here and
nowhere else, so a name changes in one place. Kubernetes objects that Pulumi creates are passed on
by their `metadata.name` output where another object refers to them (that also gives Pulumi the
dependency); the constants here are what those objects are called.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gateway.contract import MAX_REQUEST_BYTES_ENV as MAX_REQUEST_BYTES_ENV

PROJECT = "llm-gateway"

# The three Services, and the ports they serve on.
VLLM_SERVICE = "vllm"
OLLAMA_SERVICE = "ollama"
GATEWAY_SERVICE = "litellm"
REDIS_SERVICE = "redis"  # the fleet's shared state, when the program deploys it
VLLM_PORT = 8000
OLLAMA_PORT = 11434
GATEWAY_PORT = 4000
REDIS_PORT = 6379

# Environment variables of the gateway pod; their values come from Kubernetes Secrets only.
OPENAI_KEY_ENV = "OPENAI_API_KEY"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
DATABASE_URL_ENV = "DATABASE_URL"
REDIS_URL_ENV = "REDIS_URL"
# The largest request body the gateway reads, a plain value: MAX_REQUEST_BYTES_ENV (imported above), spelled in
# gateway/contract.py because gateway/request_check.py reads it.

# One Secret per value: `<gateway>-<suffix>`, holding the value under its env var's name.
MASTER_KEY_SECRET = "master-key"
OPENAI_KEY_SECRET = "openai-key"
DATABASE_URL_SECRET = "database-url"
REDIS_URL_SECRET = "redis-url"


def secret_env_name(config_key_name: str) -> str:
    """The gateway's env var for a secret stack-config key a chain's tier names (`embedApiKey` →
    `LLM_GATEWAY_KEY_EMBED_API_KEY`); the OpenAI key keeps its own name."""
    if config_key_name == OPENAI_KEY_CONFIG:
        return OPENAI_KEY_ENV
    # Its own prefix: no key name can take one of the gateway's variables (LLM_GATEWAY_MAX_REQUEST_BYTES).
    return "LLM_GATEWAY_KEY_" + re.sub(r"(?<!^)(?=[A-Z])", "_", config_key_name).upper()


def tier_key_secret(config_key_name: str) -> str:
    """The Secret suffix of a key a chain's tier names: `embedApiKey` → `key-embed-api-key`."""
    return "key-" + re.sub(r"(?<!^)(?=[A-Z])", "-", config_key_name).lower()


# Stack-config keys that hold secrets: the parser only learns whether each is set, and how.
OPENAI_KEY_CONFIG = "openaiApiKey"
DATABASE_URL_CONFIG = "databaseUrl"
REDIS_URL_CONFIG = "redisUrl"
MASTER_KEY_CONFIG = "masterKey"  # an operator's own gateway key (e.g. the old gateway's); else generated
SECRET_CONFIG_KEYS = (OPENAI_KEY_CONFIG, DATABASE_URL_CONFIG, REDIS_URL_CONFIG, MASTER_KEY_CONFIG)

# The gateway's config directory: the ConfigMap's files, mounted where LiteLLM looks for its
# handler modules (beside config.yaml).
CONFIG_FILE_NAME = "config.yaml"
GATEWAY_CODE = Path(__file__).resolve().parent.parent / "gateway"
CONTRACT_FILE = GATEWAY_CODE / "contract.py"  # the facts the plugins share with the program, read beside them
PROGRESS_HANDLER_FILE = GATEWAY_CODE / "vllm_progress.py"  # vLLM by progress, not total duration
HONEST_ERRORS_FILE = GATEWAY_CODE / "honest_errors.py"  # truthful 503/429/400 when the chain fails
CLOUD_GUARD_FILE = GATEWAY_CODE / "cloud_guard.py"  # the cloud tier's rpm / tpm / budget
REQUEST_CHECK_FILE = GATEWAY_CODE / "request_check.py"  # a malformed request gets a 400, no tier sees it
CONTEXT_CHECK_FILE = GATEWAY_CODE / "context_check.py"  # a prompt longer than the chain's context gets a 400
SERVED_MODEL_FILE = GATEWAY_CODE / "served_model.py"  # an answer's `model` names the model that answered
LEAN_METRICS_FILE = GATEWAY_CODE / "lean_metrics.py"  # LiteLLM's metrics without work for unread series
GATEWAY_MODULES = (
    CONTRACT_FILE,
    PROGRESS_HANDLER_FILE,
    HONEST_ERRORS_FILE,
    CLOUD_GUARD_FILE,
    REQUEST_CHECK_FILE,
    CONTEXT_CHECK_FILE,
    SERVED_MODEL_FILE,
    LEAN_METRICS_FILE,
)
# The LiteLLM custom provider that gateway/vllm_progress.py registers (`<provider>/<model>`).
PROGRESS_PROVIDER = "vllm-progress"
# The LiteLLM Prometheus metrics that the alerts, the dashboard and docs/monitoring.md read. LiteLLM
# emits only these (`prometheus_metrics_config`): its ~75 others (budgets, rate-limit gauges, per-key
# series) cost ~2 ms of CPU per request, and nothing reads them. tests/test_alerts.py holds every
# metric the rules, the dashboard and the docs query to this list; gateway/lean_metrics.py skips the
# work LiteLLM still does for the others.
LITELLM_METRICS = (
    "litellm_proxy_total_requests_metric",
    "litellm_deployment_total_requests",
    "litellm_deployment_success_responses",
    "litellm_deployment_failure_responses",
    "litellm_deployment_successful_fallbacks",
    "litellm_deployment_failed_fallbacks",
    "litellm_deployment_state",
    "litellm_llm_api_latency_metric",
    "litellm_spend_metric",
)


# The chain's first group is its client-facing name; every later tier is a group of its own,
# `<name>-<tier>`, reached only through the chain's fallbacks.
FALLBACK_TIERS = ("ollama", "openai")


def tier_group(chain_name: str, tier: str) -> str:
    return f"{chain_name}-{tier}"


# Names the program gives its own objects: a chain's tier must not take one.
RESERVED_OBJECT_NAMES = frozenset({VLLM_SERVICE, OLLAMA_SERVICE, GATEWAY_SERVICE, REDIS_SERVICE})
_OBJECT_NAME_LENGTH = 40  # room for the suffixes (`-cache`, a Pulumi auto-name's 8 characters)


def tier_object_name(chain_name: str, tier: str) -> str:
    """A chain's own Deployment, Service and volume names: `<chain>-<tier>` as a DNS label, never
    colliding for different chains (a hash when the chain's name had to be changed to fit)."""
    wanted = f"{chain_name}-{tier}"
    slug = re.sub(r"[^a-z0-9]+", "-", wanted.lower()).strip("-")
    if not slug[:1].isalpha():  # a Service name (DNS-1035) starts with a letter: `7b-vllm` would be refused
        slug = wanted = f"chain-{slug}"
    if slug == wanted and len(slug) <= _OBJECT_NAME_LENGTH:
        return slug
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:6]
    return f"{slug[: _OBJECT_NAME_LENGTH - 7].strip('-')}-{digest}"


def config_key(key: str) -> str:
    """The full stack-config key as `pulumi config` spells it: `llm-gateway:vllm.imageDigest`."""
    return f"{PROJECT}:{key}"


def service_host(service: str, namespace: str, domain: str) -> str:
    """A Service's in-cluster DNS name; `domain` is the cluster's DNS domain (cluster.local by default)."""
    return f"{service}.{namespace}.svc.{domain}"


def service_url(service: str, namespace: str, domain: str, port: int, path: str = "") -> str:
    return f"http://{service_host(service, namespace, domain)}:{port}{path}"

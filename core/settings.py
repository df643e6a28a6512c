"""Typed, validated stack settings for llm-gateway: each setting declared once, here.

Pure: no Pulumi import. Every field below is one stack-config key (`vllm.gpu_count` is
`llm-gateway:vllm.gpuCount`) with its default, its check and a one-line description. The parser,
the JSON Schema (`schema/stack-config.schema.json`), the `config:` block of `Pulumi.yaml` and the
configuration reference (docs/configuration.md) all come from these declarations
(core/declarations.py; `.venv/bin/python -m core.reference` writes them).
`parse_settings` takes the raw stack configuration exactly as Pulumi stores it (strings; objects
as JSON text) and returns frozen dataclasses, or raises ConfigError naming the full key, the bad
value and the fix — before the program creates any resource.

The secret values (OpenAI key, database URL) never reach this module: the caller only says whether
each is set, and whether it was set as a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from core.context_window import (
    KNOWN_OLLAMA_MODELS,
    largest_context,
    mebibytes,
    memory_needed,
    sets_max_model_len,
)
from core.declarations import (
    ANNOTATIONS,
    ARGUMENT,
    DIGEST,
    DIRECTORY,
    DNS_LABEL,
    EMPTY_MAP,
    HOSTNAME,
    HTTPS_URL,
    IMAGE,
    LABEL_VALUE,
    LABELS,
    MODEL,
    MODEL_DIGEST,
    PRINTABLE,
    QUANTITY,
    Amount,
    ConfigError,
    Flag,
    ListOf,
    Nested,
    OneOf,
    Text,
    Whole,
    declared_fields,
    derived,
    parse_object,
    plain,
    setting,
)
from core.names import (
    DATABASE_URL_CONFIG,
    FALLBACK_TIERS,
    MASTER_KEY_CONFIG,
    OPENAI_KEY_CONFIG,
    PROJECT,
    REDIS_URL_CONFIG,
    RESERVED_OBJECT_NAMES,
    SECRET_CONFIG_KEYS,
    config_key,
    tier_group,
    tier_object_name,
)
from core.ollama_model import model_problem, quantity_value
from gateway.contract import WHEN_REDIS_DOWN_POLICIES

# Images are pinned by exact tag. The LiteLLM tag must match the litellm[proxy] version the
# drill tests run (tests/test_versions.py checks the two agree).
LITELLM_VERSION = "1.108.7"
# The release's non-root build (same tag and cosign signature as ghcr.io/berriai/litellm).
DEFAULT_LITELLM_IMAGE = f"ghcr.io/berriai/litellm-non_root:v{LITELLM_VERSION}"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_OLLAMA_IMAGE = "ollama/ollama:0.12.6"
# The version Debian 12 ships (redis-server 7.0.15), which the drill runs: the same server in both.
DEFAULT_REDIS_IMAGE = "redis:7.0.15"
BUDGET_PERIODS = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}

# Bounds shared by several timeouts.
SECONDS = Whole(5, 3600)
CONTEXT_TOKENS = Whole(1024, 131072)
LIMIT_SECONDS = Whole(1, 600)
KIBIBYTE = 1024
MEBIBYTE = 1024 * KIBIBYTE
# A prompt's bytes per token in the request body, at most, for text the context check accepts: a
# token is about 4 bytes of English, and a CJK character or an emoji JSON-escaped (`\uXXXX`, what
# Python's json sends by default) is 6-12 bytes for 1-2 tokens.
PROMPT_BYTES_PER_TOKEN = 16

# ---------------------------------------------------------------------------------------------
# The settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantities:
    cpu: str = setting("1", QUANTITY, "CPU cores")
    memory: str = setting("1Gi", QUANTITY, "Memory")


@dataclass(frozen=True)
class Resources:
    requests: Quantities = setting(None, Nested(Quantities), "What the scheduler reserves")
    limits: Quantities = setting(None, Nested(Quantities), "The most the container may use")


def resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(Quantities(cpu_request, memory_request), Quantities(cpu_limit, memory_limit))


@dataclass(frozen=True)
class Toleration:
    key: str | None = setting(None, PRINTABLE, "Taint key")
    operator: str = setting("Equal", OneOf("Equal", "Exists"), "How the value is compared")
    value: str | None = setting(None, LABEL_VALUE, "Taint value (unset with Exists)")
    effect: str | None = setting(None, OneOf("NoSchedule", "PreferNoSchedule", "NoExecute"), "Taint effect")

    def check(self, path: str) -> None:
        if self.operator == "Exists" and self.value is not None:
            raise ConfigError(f"{path}.value", self.value, "leave value unset with operator Exists")


class PinnedImage:
    """`image` + optional `image_digest` → what the pod spec uses."""

    image: str
    image_digest: str | None

    @property
    def pinned_image(self) -> str:
        """`repo:tag@sha256:...` when a digest is set, else `repo:tag`."""
        return f"{self.image}@{self.image_digest}" if self.image_digest else self.image

    @property
    def image_tag(self) -> str:
        return self.image.rsplit(":", 1)[1]


_DIGEST_DOC = "Optional `sha256:…`; the pod then uses `image@digest`."


@dataclass(frozen=True)
class VllmSettings(PinnedImage):
    image: str = setting(DEFAULT_VLLM_IMAGE, IMAGE, "vLLM image; exact tag required (`latest` is rejected).")
    image_digest: str | None = setting(None, DIGEST, _DIGEST_DOC)
    model: str = setting("Qwen/Qwen2.5-7B-Instruct-AWQ", MODEL, "Hugging Face model id, also the served model name.")
    replicas: int = setting(
        1, Whole(0, 8), "vLLM pods, applied when this changes; `kubectl scale` may change them in between. `0` is kept."
    )
    gpu_count: int = setting(1, Whole(0, 8), "`nvidia.com/gpu` limit per pod (0 = none).")
    resources: Resources = setting(resources("2", "12Gi", "4", "16Gi"), Nested(Resources), "vLLM container resources.")
    node_selector: Mapping[str, str] = setting(EMPTY_MAP, LABELS, "Node labels the vLLM pod must match.")
    tolerations: tuple[Toleration, ...] = setting((), ListOf(Nested(Toleration)), "Taints the vLLM pod tolerates.")
    runtime_class_name: str | None = setting(None, DNS_LABEL, "Pod runtime class, e.g. `nvidia`.")
    cache_size: str = setting("40Gi", QUANTITY, "PVC for the Hugging Face cache.")
    shm_size: str = setting("2Gi", QUANTITY, "`/dev/shm` size (memory-backed).")
    storage_class_name: str | None = setting(None, DNS_LABEL, "PVC storage class (unset: the cluster default).")
    extra_args: tuple[str, ...] = setting(
        (),
        ListOf(ARGUMENT),
        'Extra vLLM server arguments, e.g. `["--gpu-memory-utilization", "0.90"]` (the context length is '
        "`gateway.contextTokens`).",
    )
    timeout_seconds: int = setting(600, SECONDS, "Cap on one whole vLLM answer, however healthy.")
    first_token_timeout_seconds: int = setting(
        4,
        LIMIT_SECONDS,
        "Bounds failover from a vLLM hung before its first token: how long a request waits for vLLM's first "
        "event before the engine's progress is consulted. A busy engine is waited for. NFR65 (the next tier "
        "answers within 5 s) needs at most 4: the failover itself takes ~0.1 s.",
    )
    stall_timeout_seconds: int = setting(
        4,
        LIMIT_SECONDS,
        "Bounds failover from a stall mid-answer or a frozen GPU: the longest a request waits after vLLM's "
        "last token while the engine makes no progress for anyone (a busy engine is waited for). Then a "
        "non-streaming client gets the next tier's answer, a streaming one that has tokens an error event. "
        "NFR65 needs at most 4.",
    )
    max_queue_seconds: int = setting(
        0,
        Whole(0, 3600),
        "Queue budget: a request without its first token after this goes to Ollama even though vLLM is busy, "
        "without cooling vLLM down for others. 0: off (a busy GPU is still faster than the CPU tier).",
    )

    def check(self, path: str) -> None:
        for index, argument in enumerate(self.extra_args):
            if sets_max_model_len(argument):
                raise ConfigError(
                    f"{path}.extraArgs[{index}]",
                    argument,
                    "the context length is one setting for every tier: remove --max-model-len (and its value) "
                    "from vllm.extraArgs and set llm-gateway:gateway.contextTokens instead",
                )
        if self.max_queue_seconds >= self.timeout_seconds:
            raise ConfigError(
                f"{path}.maxQueueSeconds",
                self.max_queue_seconds,
                f"must be below vllm.timeoutSeconds ({self.timeout_seconds}), or 0 for no queue budget",
            )
        if self.first_token_timeout_seconds >= self.timeout_seconds:
            raise ConfigError(
                f"{path}.firstTokenTimeoutSeconds",
                self.first_token_timeout_seconds,
                f"must be below vllm.timeoutSeconds ({self.timeout_seconds}), the cap on a whole answer",
            )


@dataclass(frozen=True)
class OllamaSettings(PinnedImage):
    image: str = setting(DEFAULT_OLLAMA_IMAGE, IMAGE, "Ollama image; exact tag required.")
    image_digest: str | None = setting(None, DIGEST, _DIGEST_DOC)
    model: str = setting(
        "qwen2.5:3b", MODEL, "Pulled onto the PVC by an init container once; a restart with it there needs no network."
    )
    model_digest: str | None = setting(
        None,
        MODEL_DIGEST,
        "Pins the model: the init container refuses to start Ollama on any other (a moved tag), pulling only "
        "when the volume lacks it.",
    )
    resources: Resources = setting(resources("2", "4Gi", "4", "8Gi"), Nested(Resources), "Ollama container resources.")
    model_memory: str | None = setting(
        None,
        QUANTITY,
        "Memory the model takes apart from its context (file + output buffer), for the memory check; unset: "
        "estimated for the qwen2.5 models, required for others.",
    )
    memory_per_context_token: int | None = setting(
        None,
        Whole(1, 100_000_000),
        "Bytes per context token (KV cache + attention buffer), for the memory check; unset: estimated for the "
        "qwen2.5 models, required for others.",
    )
    storage_size: str = setting("20Gi", QUANTITY, "Models PVC.")
    storage_class_name: str | None = setting(None, DNS_LABEL, "PVC storage class (unset: the cluster default).")
    timeout_seconds: int = setting(
        600, SECONDS, "Cap on one whole Ollama answer (Ollama is slow on CPU; a slow answer is not a failure)."
    )
    pull_timeout_seconds: int = setting(
        1800, Whole(60, 86400), "Budget for the init container's model pull; `pulumi up` waits this long plus the load."
    )
    gpu: bool = setting(
        False,
        Flag(),
        "`false` hides every GPU from Ollama (NVIDIA_VISIBLE_DEVICES=void, CUDA_VISIBLE_DEVICES=-1), even on nodes "
        "whose default runtime is nvidia, so the CPU tier never holds VRAM that vLLM needs.",
    )

    def check(self, path: str) -> None:
        problem = model_problem(self.model)
        if problem:
            raise ConfigError(f"{path}.model", self.model, problem)


@dataclass(frozen=True)
class OpenAISettings:
    enabled: bool = setting(True, Flag(), "`false`: two tiers, no key, no OpenAI Secret.")
    model: str = setting("gpt-4o-mini", MODEL, "Cloud model.")
    api_base: str = setting("https://api.openai.com/v1", HTTPS_URL, "Any OpenAI-compatible https endpoint.")
    timeout_seconds: int = setting(120, SECONDS, "Cap on one cloud answer.")
    rpm: int | None = setting(
        None, Whole(1, 1_000_000), "Spend guard: cloud requests per minute (fleet-wide with Redis, else per replica)."
    )
    tpm: int | None = setting(
        None, Whole(1, 1_000_000_000), "Spend guard: cloud tokens per minute (fleet-wide with Redis, else per replica)."
    )
    max_budget_usd: float | None = setting(
        None,
        Amount(1_000_000, "US dollars"),
        "Spend guard: dollars per `budgetPeriod` (fleet-wide with Redis and kept across rollouts, else per replica).",
    )
    budget_period: str = setting("30d", OneOf(*BUDGET_PERIODS), "The spend guard's budget period.")

    @property
    def budget_period_seconds(self) -> int:
        return BUDGET_PERIODS[self.budget_period]


def probe_timeout_seconds(health_check_interval_seconds: int) -> int:
    """A probe must answer well inside one interval, or probes pile up."""
    return max(1, min(5, health_check_interval_seconds - 1))


@dataclass(frozen=True)
class AutoscalingSettings:
    enabled: bool = setting(
        False, Flag(), "A HorizontalPodAutoscaler owns the gateway's replica count (`gateway.replicas` is then unused)."
    )
    min_replicas: int = setting(2, Whole(1, 50), "Fewest gateway pods.")
    max_replicas: int = setting(6, Whole(1, 100), "Most gateway pods.")
    cpu_target_percent: int = setting(
        70, Whole(10, 100), "Average CPU use (of the request) the autoscaler keeps; LiteLLM is CPU-bound."
    )
    scale_down_stabilization_seconds: int = setting(
        300, Whole(0, 3600), "How long load must stay low before pods are removed (and one pod a minute at most)."
    )

    def check(self, path: str) -> None:
        if self.enabled and self.min_replicas > self.max_replicas:
            raise ConfigError(
                f"{path}.minReplicas", self.min_replicas, f"must be at most maxReplicas ({self.max_replicas})"
            )


@dataclass(frozen=True)
class GatewaySettings(PinnedImage):
    image: str = setting(
        DEFAULT_LITELLM_IMAGE, IMAGE, "LiteLLM image; kept equal to the tested `litellm` version (a test checks)."
    )
    image_digest: str | None = setting(None, DIGEST, _DIGEST_DOC)
    replicas: int = setting(2, Whole(1, 20), "Gateway pods (without autoscaling).")
    autoscaling: AutoscalingSettings = setting(None, Nested(AutoscalingSettings), "The gateway's autoscaler.")
    model_name: str = setting(
        "chat",
        MODEL,
        "The model name clients request (the vLLM group); the other tiers are `<name>-ollama`, `<name>-openai`.",
    )
    model_aliases: tuple[str, ...] = setting(
        (),
        ListOf(MODEL, most=16),
        "Other names clients may request for the same chain, e.g. the old gateway's `[vllm-qwen]` "
        "(LiteLLM aliases of `modelName`, never groups of their own).",
    )
    context_tokens: int = setting(
        8192,
        CONTEXT_TOKENS,
        "The chain's context length, given to every local tier (vLLM's `--max-model-len`, Ollama's `num_ctx`); "
        "the gateway refuses a longer prompt with a 400 naming it.",
    )
    max_request_bytes: int = setting(
        4 * MEBIBYTE,
        Whole(64 * KIBIBYTE, 64 * MEBIBYTE),
        "The largest request body (bytes) the gateway and an ingress-nginx Ingress take; a larger one gets 413 "
        "before any work. 4 MiB holds a prompt filling the largest `contextTokens` (131072) at 32 bytes a token "
        "(English text is about 4, JSON-escaped CJK or emoji 6-12); at least 16 bytes x `contextTokens`.",
    )
    num_retries: int = setting(
        0, Whole(0, 5), "Retries within a tier. 0: the next tier *is* the retry (LiteLLM sleeps between retries)."
    )
    cooldown_seconds: int = setting(
        10,
        Whole(1, 600),
        "How long a failed vLLM is skipped; at least interval + probe timeout + 1. Recovery takes about this long.",
    )
    health_check_interval_seconds: int = setting(
        5,
        Whole(2, 300),
        "vLLM is probed this often (probe timeout: interval - 1, at most 5 s); a failed probe cools it down.",
    )
    resources: Resources = setting(
        resources("500m", "1Gi", "2", "2Gi"), Nested(Resources), "Gateway container resources."
    )
    metrics: bool = setting(True, Flag(), "LiteLLM's Prometheus metrics at `/metrics/` (bearer: the master key).")
    service_monitor: bool = setting(
        False, Flag(), "A prometheus-operator `ServiceMonitor` scraping them (needs the CRD)."
    )
    service_monitor_labels: Mapping[str, str] = setting(
        EMPTY_MAP,
        LABELS,
        "Labels your Prometheus' serviceMonitorSelector wants, e.g. `{release: kube-prometheus-stack}`.",
    )
    database_port: int = setting(5432, Whole(1, 65535), "Opened in the gateway's egress when `databaseUrl` is set.")
    api_docs: bool = setting(
        False, Flag(), "Serve LiteLLM's Swagger UI, ReDoc and `/openapi.json` (to anyone who reaches the gateway)."
    )
    admin_ui: bool = setting(False, Flag(), "Serve LiteLLM's admin UI (needs `databaseUrl`; useless without one).")
    dns_ports: tuple[int, ...] = setting(
        (53,),
        ListOf(Whole(1, 65535), most=4),
        "DNS ports the gateway may reach (some distributions serve DNS on 5353).",
    )

    @property
    def probe_timeout_seconds(self) -> int:
        return probe_timeout_seconds(self.health_check_interval_seconds)

    @property
    def fewest_replicas(self) -> int:
        """The fewest gateway pods there will be: the autoscaler's minimum, or the fixed count."""
        return self.autoscaling.min_replicas if self.autoscaling.enabled else self.replicas

    def check(self, path: str) -> None:
        self._check_aliases(path)
        if self.service_monitor and not self.metrics:
            raise ConfigError(f"{path}.serviceMonitor", True, "needs gateway.metrics true (there is nothing to scrape)")
        if self.service_monitor_labels and not self.service_monitor:
            # Labels with nothing to carry them would leave the operator believing Prometheus selects us.
            raise ConfigError(
                f"{path}.serviceMonitorLabels",
                dict(self.service_monitor_labels),
                "they label the ServiceMonitor: set gateway.serviceMonitor true, or remove them",
            )
        self._check_body_limit(path)
        # A failed probe cools vLLM down until the next probe can fail again; a shorter cooldown opens
        # a window in which requests are sent to a hung vLLM and wait for its whole timeout.
        cycle = self.health_check_interval_seconds + self.probe_timeout_seconds
        if self.cooldown_seconds < cycle + 1:
            raise ConfigError(
                f"{path}.cooldownSeconds",
                self.cooldown_seconds,
                f"must be at least healthCheckIntervalSeconds + probe timeout + 1 = {cycle + 1}, "
                "so a hung vLLM stays skipped between two probes",
            )

    def _check_body_limit(self, path: str) -> None:
        """A prompt that fits the context must fit the body limit too: else a request the context
        check would take is refused for its size, with a 413 that names no token count."""
        least = self.context_tokens * PROMPT_BYTES_PER_TOKEN
        if self.max_request_bytes < least:
            raise ConfigError(
                f"{path}.maxRequestBytes",
                self.max_request_bytes,
                f"a prompt filling gateway.contextTokens={self.context_tokens} can take {least} bytes "
                f"({PROMPT_BYTES_PER_TOKEN} a token): set it to at least {least}, or lower gateway.contextTokens",
            )

    def _check_aliases(self, path: str) -> None:
        """An alias must name nothing else: not the chain itself, not one of its internal groups
        (`<name>-ollama`, `<name>-openai`: a client calling those would skip tiers), not twice."""
        taken = {self.model_name, *(tier_group(self.model_name, tier) for tier in FALLBACK_TIERS)}
        for index, alias in enumerate(self.model_aliases):
            if alias in taken:
                raise ConfigError(
                    f"{path}.modelAliases[{index}]",
                    alias,
                    f"is already a name of the chain ({', '.join(sorted(taken))}) or listed twice: remove it",
                )
            taken.add(alias)


@dataclass(frozen=True)
class IngressSettings:
    enabled: bool = setting(False, Flag(), "Expose the gateway outside the cluster.")
    kind: str = setting(
        "Ingress", OneOf("Ingress", "IngressRoute"), "A standard `Ingress` or a Traefik `IngressRoute`."
    )
    host: str | None = setting(None, HOSTNAME, "Host name clients use (required when enabled).")
    class_name: str | None = setting(None, DNS_LABEL, "Ingress class.")
    tls_secret_name: str | None = setting(None, DNS_LABEL, "TLS Secret (certificate) name.")
    annotations: Mapping[str, str] = setting(EMPTY_MAP, ANNOTATIONS, "Controller annotations.")
    entry_points: tuple[str, ...] = setting(
        (), ListOf(DNS_LABEL), "Traefik entry points (default `web`, or `websecure` with TLS)."
    )

    def check(self, path: str) -> None:
        if self.enabled and self.host is None:
            raise ConfigError(
                f"{path}.host", None, "set the host clients use, e.g. llm.example.com", state="is not set"
            )
        if self.entry_points and self.kind != "IngressRoute":
            raise ConfigError(f"{path}.entryPoints", list(self.entry_points), "only for kind IngressRoute (Traefik)")


@dataclass(frozen=True)
class AlertsSettings:
    enabled: bool = setting(
        False, Flag(), "A prometheus-operator `PrometheusRule` with the chain's alerts (needs the CRD)."
    )
    dashboard: bool = setting(
        False,
        Flag(),
        'A Grafana dashboard ConfigMap (label `grafana_dashboard: "1"`, kube-prometheus-stack\'s sidecar).',
    )
    gpu_idle_minutes: int = setting(
        15, Whole(5, 1440), "Alert when the GPU tier has answered nothing for this long while requests arrive."
    )
    window_minutes: int = setting(
        5, Whole(1, 60), "Window of the other alerts (cloud serving, guard rejecting, no tier, Ollama failing)."
    )
    rule_labels: Mapping[str, str] = setting(
        EMPTY_MAP, LABELS, "Labels your Prometheus' ruleSelector wants, e.g. `{release: kube-prometheus-stack}`."
    )


@dataclass(frozen=True)
class RedisSettings(PinnedImage):
    mode: str = setting(
        "off",
        OneOf("off", "deploy", "external"),
        "The fleet's shared state (spend guard counts, LiteLLM's cooldowns): `deploy` runs a Redis here, "
        "`external` uses the secret `redisUrl`, `off` keeps everything per replica.",
    )
    image: str = setting(DEFAULT_REDIS_IMAGE, IMAGE, "Redis image (`deploy`); exact tag required.")
    image_digest: str | None = setting(None, DIGEST, _DIGEST_DOC)
    resources: Resources = setting(
        resources("100m", "128Mi", "500m", "256Mi"), Nested(Resources), "Redis container resources (`deploy`)."
    )
    max_memory_mb: int = setting(
        192,
        Whole(16, 65536),
        "Redis `maxmemory` (`deploy`); keep it under the memory limit. Full: writes fail and the guard follows "
        "`cloudGuardWhenDown`; nothing is evicted.",
    )
    storage_size: str = setting("1Gi", QUANTITY, "PVC for Redis' append-only file (`deploy`): counts survive restarts.")
    storage_class_name: str | None = setting(None, DNS_LABEL, "PVC storage class (unset: the cluster default).")
    external_port: int = setting(
        6379, Whole(1, 65535), "The external Redis' port, opened in the gateway's egress (`external`)."
    )
    timeout_milliseconds: int = setting(
        250,
        Whole(10, 5000),
        "The longest the gateway waits for one Redis call before treating Redis as away (no retry).",
    )
    cloud_guard_when_down: str = setting(
        "closed",
        OneOf(*WHEN_REDIS_DOWN_POLICIES),
        "With Redis away, `closed` refuses cloud calls (429 `cloud_guard_unavailable`); `open` lets each replica "
        "enforce the limits on its own counts (the fleet may then spend N times them). Local tiers are unaffected.",
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_milliseconds / 1000


# ---------------------------------------------------------------------------------------------
# More chains: `chains`, each an ordered list of tiers of any kind (core/chain.py TIER_KINDS)
# ---------------------------------------------------------------------------------------------

# Stack-config keys a chain's cloud tier may name for its API key: a top-level key, set with --secret.
SECRET_KEY_NAME = Text(r"[a-z][A-Za-z0-9]{0,62}", "a top-level stack-config key name, e.g. `embedApiKey`")
HTTP_URL = Text(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[\x21-\x7e]*)?", "an http:// or https:// URL")
CHAIN_KINDS = ("chat", "embeddings")


@dataclass(frozen=True)
class VllmTierSettings(VllmSettings):
    """A vLLM Deployment of its own (its own GPUs), named after its chain and tier."""

    model: str | None = setting(None, MODEL, "Hugging Face model id, also the served model name (required).")

    def check(self, path: str) -> None:
        if self.model is None:
            raise ConfigError(f"{path}.model", None, "name the model this GPU tier serves", state="is not set")
        super().check(path)


@dataclass(frozen=True)
class OllamaTierSettings:
    """A model on the shared Ollama pod (`ollama.*`: its image, resources and volume)."""

    model: str | None = setting(None, MODEL, "The Ollama model, pulled onto the shared Ollama pod (required).")
    model_digest: str | None = setting(None, MODEL_DIGEST, "Pins the model, as `ollama.modelDigest` does.")
    model_memory: str | None = setting(None, QUANTITY, "As `ollama.modelMemory`, for this model.")
    memory_per_context_token: int | None = setting(
        None, Whole(1, 100_000_000), "As `ollama.memoryPerContextToken`, for this model."
    )
    timeout_seconds: int = setting(600, SECONDS, "Cap on one whole answer of this tier.")

    def check(self, path: str) -> None:
        if self.model is None:
            raise ConfigError(f"{path}.model", None, "name the Ollama model", state="is not set")
        problem = model_problem(self.model)
        if problem:
            raise ConfigError(f"{path}.model", self.model, problem)


@dataclass(frozen=True)
class CloudTierSettings(OpenAISettings):
    """A cloud endpoint (OpenAI or any OpenAI-compatible https API) with its own secret key."""

    model: str | None = setting(None, MODEL, "The cloud model (required).")
    api_key: str = setting(
        OPENAI_KEY_CONFIG,
        SECRET_KEY_NAME,
        "The stack-config key holding this endpoint's key, set with `pulumi config set --secret`.",
    )

    def check(self, path: str) -> None:
        if self.model is None:
            raise ConfigError(f"{path}.model", None, "name the cloud model", state="is not set")
        if not self.enabled:
            raise ConfigError(f"{path}.enabled", False, "a chain's cloud tier is on: remove the tier instead")


@dataclass(frozen=True)
class EndpointTierSettings:
    """An endpoint this program does not deploy: an in-cluster Service or a URL (e.g. an existing vLLM)."""

    url: str | None = setting(
        None,
        HTTP_URL,
        "Its base URL, e.g. `http://vllm-api.ml.svc.cluster.local:8000/v1` (`.svc` hosts are in the cluster; "
        "any other host is outside, and comes after every in-cluster tier). Required.",
    )
    api: str = setting(
        "openai",
        OneOf("openai", "vllm", "ollama"),
        "Its wire protocol: `vllm` (OpenAI-compatible, watched by progress like the GPU tier), `openai`, `ollama`.",
    )
    model: str | None = setting(None, MODEL, "The model name the endpoint serves (required).")
    api_key: str | None = setting(None, SECRET_KEY_NAME, "The stack-config key of its key (set with --secret), if any.")
    timeout_seconds: int = setting(600, SECONDS, "Cap on one whole answer of this tier.")

    def check(self, path: str) -> None:
        for key, value in (("url", self.url), ("model", self.model)):
            if value is None:
                raise ConfigError(f"{path}.{key}", None, f"set the endpoint's {key}", state="is not set")
        if self.api != "ollama" and not urlsplit(self.url).path.rstrip("/").endswith("/v1"):
            # The gateway appends /chat/completions or /embeddings: without /v1, vLLM answers 404 and
            # the tier is cooled down for good, while its /health looks fine.
            raise ConfigError(f"{path}.url", self.url, "an OpenAI-compatible endpoint's URL ends in /v1: add it")

    @property
    def host(self) -> str:
        return urlsplit(self.url or "").hostname or ""

    @property
    def in_cluster(self) -> bool:
        """A Service name: `<svc>` (no dot), `<svc>.<ns>.svc` or `<svc>.<ns>.svc.<cluster domain>` (the
        domain is checked against `clusterDomain` by Settings). Any other host is outside the cluster."""
        labels = self.host.split(".")
        return len(labels) == 1 or (len(labels) >= 3 and labels[2] == "svc")


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str | None = setting(
        None, MODEL, "The embedding model's identity, the same on every tier of the chain, e.g. `BAAI/bge-m3`."
    )
    dimensions: int | None = setting(None, Whole(1, 65536), "The vector length, the same on every tier.")


@dataclass(frozen=True)
class TierSettings:
    """One tier of a chain: exactly one of `vllm`, `ollama`, `cloud`, `endpoint`."""

    DOCUMENT_ITEMS: ClassVar[bool] = True
    KINDS: ClassVar[tuple[str, ...]] = ("vllm", "ollama", "cloud", "endpoint")

    name: str | None = setting(
        None, DNS_LABEL, "The tier's name in its chain (default: its kind); part of its group and object names."
    )
    vllm: VllmTierSettings | None = setting(None, Nested(VllmTierSettings, optional=True), "A GPU Deployment.")
    ollama: OllamaTierSettings | None = setting(
        None, Nested(OllamaTierSettings, optional=True), "A model on the shared Ollama."
    )
    cloud: CloudTierSettings | None = setting(None, Nested(CloudTierSettings, optional=True), "A cloud endpoint.")
    endpoint: EndpointTierSettings | None = setting(
        None, Nested(EndpointTierSettings, optional=True), "An endpoint this program does not deploy."
    )
    embedding: EmbeddingSettings | None = setting(
        None,
        Nested(EmbeddingSettings, optional=True),
        "Embeddings chains: the model and vector length this tier serves (required there, refused in chat chains).",
    )

    @property
    def kind(self) -> str:
        return next(kind for kind in self.KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> Any:
        return getattr(self, self.kind)

    @property
    def tier_name(self) -> str:
        return self.name or self.kind

    @property
    def leaves_cluster(self) -> bool:
        return self.cloud is not None or (self.endpoint is not None and not self.endpoint.in_cluster)

    def check(self, path: str) -> None:
        given = [kind for kind in self.KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ConfigError(
                path,
                given,
                f"a tier is exactly one of {', '.join(self.KINDS)}: e.g. `{{ollama: {{model: bge-m3}}}}`",
            )
        if self.embedding is not None:
            for key in ("model", "dimensions"):
                if getattr(self.embedding, key) is None:
                    raise ConfigError(f"{path}.embedding.{key}", None, "set it", state="is not set")


@dataclass(frozen=True)
class ChainSettings:
    """A chain of its own: a client-facing name and its ordered tiers."""

    DOCUMENT_ITEMS: ClassVar[bool] = True

    name: str | None = setting(
        None, MODEL, "The model name clients request (required); later tiers are `<name>-<tier>`."
    )
    aliases: tuple[str, ...] = setting((), ListOf(MODEL, most=16), "Other names clients may request for this chain.")
    kind: str = setting(
        "chat",
        OneOf(*CHAIN_KINDS),
        "`chat` (/v1/chat/completions) or `embeddings` (/v1/embeddings: every tier serves the same model).",
    )
    context_tokens: int | None = setting(
        None, CONTEXT_TOKENS, "Its local tiers' context (unset: gateway.contextTokens)."
    )
    tiers: tuple[TierSettings, ...] = setting((), ListOf(Nested(TierSettings), most=8), "Its tiers, tried in order.")

    def check(self, path: str) -> None:
        if self.name is None:
            raise ConfigError(f"{path}.name", None, "name the chain clients call", state="is not set")
        if not self.tiers:
            raise ConfigError(f"{path}.tiers", [], "list at least one tier")
        self._check_order(path)
        self._check_tier_names(path)
        if self.kind == "embeddings":
            self._check_one_embedding_model(path)
        else:
            for index, tier in enumerate(self.tiers):
                if tier.embedding is not None:
                    raise ConfigError(
                        f"{path}.tiers[{index}].embedding", plain(tier.embedding), "only embeddings chains: remove it"
                    )

    def _check_order(self, path: str) -> None:
        """NFR68: a prompt leaves the cluster only after every in-cluster tier failed."""
        if self.tiers[0].leaves_cluster:
            raise ConfigError(
                f"{path}.tiers[0]", self.tiers[0].kind, "a chain starts in the cluster: put a vllm or ollama tier first"
            )
        outside = False
        for index, tier in enumerate(self.tiers):
            if outside and not tier.leaves_cluster:
                raise ConfigError(
                    f"{path}.tiers[{index}]",
                    tier.tier_name,
                    "an in-cluster tier comes before every tier outside the cluster: move it up",
                )
            outside = outside or tier.leaves_cluster

    def _check_tier_names(self, path: str) -> None:
        seen: set[str] = set()
        for index, tier in enumerate(self.tiers):
            if tier.tier_name in seen:
                raise ConfigError(
                    f"{path}.tiers[{index}].name", tier.tier_name, "two tiers share this name: give each its own `name`"
                )
            seen.add(tier.tier_name)

    def _check_one_embedding_model(self, path: str) -> None:
        """Vectors of different models cannot be compared: an embeddings chain falls over only between
        tiers that serve the same model, at the same length."""
        first = None
        for index, tier in enumerate(self.tiers):
            key = f"{path}.tiers[{index}].embedding"
            if tier.embedding is None:
                raise ConfigError(
                    key,
                    None,
                    "an embeddings tier declares its model and dimensions, e.g. {model: BAAI/bge-m3, dimensions: 1024}",
                    state="is not set",
                )
            declared = (tier.embedding.model, tier.embedding.dimensions)
            served = tier.spec.model if tier.kind in ("vllm", "cloud") else None  # Ollama's tags name it otherwise
            if served is not None and served != tier.embedding.model:
                raise ConfigError(
                    f"{key}.model",
                    tier.embedding.model,
                    f"this {tier.kind} tier serves {served}: declare that, or serve {tier.embedding.model} on it "
                    "(the chain's tiers must serve one model)",
                )
            if first is None:
                first = declared
            elif declared != first:
                raise ConfigError(
                    key,
                    plain(tier.embedding),
                    f"every tier of an embeddings chain serves the same model ({first[0]}, {first[1]} dimensions): "
                    "vectors of another model cannot be searched in the same index; remove the tier or make it "
                    "serve that model",
                )


@dataclass(frozen=True)
class Settings:
    namespace: str = setting(PROJECT, DNS_LABEL, "Namespace for everything.")
    create_namespace: bool = setting(
        True,
        Flag(),
        "`false`: deploy into an existing namespace, which `pulumi up` neither creates nor `pulumi destroy` deletes.",
    )
    cluster_domain: str = setting(
        "cluster.local", HOSTNAME, "The cluster's DNS domain, in the Service addresses (`<svc>.<ns>.svc.<domain>`)."
    )
    gaming_mode: bool = setting(
        False,
        Flag(),
        "`true` scales vLLM to 0 replicas when this changes; `kubectl scale` may change them in between. "
        "The chain is unchanged.",
    )
    vllm: VllmSettings = setting(None, Nested(VllmSettings), "The GPU tier.")
    ollama: OllamaSettings = setting(None, Nested(OllamaSettings), "The CPU tier.")
    openai: OpenAISettings = setting(None, Nested(OpenAISettings), "The cloud tier.")
    gateway: GatewaySettings = setting(None, Nested(GatewaySettings), "The LiteLLM proxy.")
    network_policies: bool = setting(
        True,
        Flag(),
        "NetworkPolicies: vLLM and Ollama accept only the gateway; the gateway's egress is the tiers, DNS and HTTPS.",
    )
    render_yaml_to_directory: str | None = setting(
        None, DIRECTORY, "Render every manifest as YAML into this directory instead of applying it."
    )
    ingress: IngressSettings = setting(None, Nested(IngressSettings), "Reaching the gateway from outside.")
    alerts: AlertsSettings = setting(None, Nested(AlertsSettings), "Alerts and a dashboard for operators.")
    redis: RedisSettings = setting(None, Nested(RedisSettings), "Shared state for a fleet of gateway replicas.")
    chains: tuple[ChainSettings, ...] = setting(
        (),
        ListOf(Nested(ChainSettings), most=8),
        "More chains beside `gateway.modelName`'s, e.g. an embeddings chain (docs/configuration.md, Chains).",
    )
    database: bool = derived(False)  # `databaseUrl` set (as a secret): LiteLLM's database features on

    def check(self, path: str) -> None:
        _check_ollama_context(self.ollama, self.gateway.context_tokens)
        self._check_chain_names()
        self._check_endpoint_domains()
        _check_shared_ollama(self)

    def _check_endpoint_domains(self) -> None:
        """`<svc>.<ns>.svc.<domain>` is in this cluster only with this cluster's domain."""
        for index, chain in enumerate(self.chains):
            for tier_index, tier in enumerate(chain.tiers):
                endpoint = tier.endpoint
                if endpoint is None or not endpoint.in_cluster:
                    continue
                domain = endpoint.host.split(".", 3)[3] if endpoint.host.count(".") >= 3 else self.cluster_domain
                if domain != self.cluster_domain:
                    raise ConfigError(
                        f"chains[{index}].tiers[{tier_index}].endpoint.url",
                        endpoint.url,
                        f"a Service's name ends in .svc.{self.cluster_domain} (clusterDomain); a host outside the "
                        "cluster has no .svc label",
                    )

    def _check_chain_names(self) -> None:
        """Every name a client calls and every group is one chain's only; every object name one tier's."""
        gateway = self.gateway
        taken = {
            gateway.model_name,
            *gateway.model_aliases,
            *(tier_group(gateway.model_name, t) for t in FALLBACK_TIERS),
        }
        objects: dict[str, str] = {}
        for index, chain in enumerate(self.chains):
            names = [("name", chain.name), *((f"aliases[{i}]", alias) for i, alias in enumerate(chain.aliases))]
            names += [(f"tiers[{i}]", tier_group(chain.name, t.tier_name)) for i, t in enumerate(chain.tiers[1:], 1)]
            for key, name in names:
                if name in taken:
                    raise ConfigError(
                        f"chains[{index}].{key}",
                        name,
                        "already names another chain, alias or tier group: choose another name",
                    )
                taken.add(name)
            for tier_index, tier in enumerate(chain.tiers):
                if tier.vllm is None:
                    continue
                name = tier_object_name(chain.name, tier.tier_name)
                if name in objects or name in RESERVED_OBJECT_NAMES:
                    raise ConfigError(
                        f"chains[{index}].tiers[{tier_index}].name",
                        tier.tier_name,
                        f"its Deployment would be called {name}, as {objects.get(name, 'one of the program')}'s: "
                        "give the chain or the tier another name",
                    )
                objects[name] = f"chains[{index}].tiers[{tier_index}]"

    @property
    def gpu_tiers(self) -> tuple[tuple[ChainSettings, TierSettings], ...]:
        """The chains' own vLLM Deployments (beside `vllm.*`), each with its chain."""
        return tuple((chain, tier) for chain in self.chains for tier in chain.tiers if tier.vllm is not None)

    @property
    def ollama_models(self) -> tuple[tuple[ChainSettings, TierSettings], ...]:
        """The chains' other models on the shared Ollama (not `ollama.model`), each once, with its
        first chain: one served model per Ollama model, so one context (checked in _check_shared_ollama)."""
        found: dict[str, tuple[ChainSettings, TierSettings]] = {}
        for chain in self.chains:
            for tier in chain.tiers:
                if tier.ollama is not None and tier.ollama.model != self.ollama.model:
                    found.setdefault(tier.ollama.model, (chain, tier))
        return tuple(found.values())

    def chain_context(self, chain: ChainSettings) -> int:
        return chain.context_tokens or self.gateway.context_tokens

    def tier_replicas(self, vllm: VllmSettings) -> int:
        """Gaming Mode frees every GPU: each vLLM Deployment runs 0 replicas."""
        return 0 if self.gaming_mode else vllm.replicas

    @property
    def vllm_replicas(self) -> int:
        """Gaming Mode hands the GPU back: vLLM runs 0 replicas and the chain fails over."""
        return 0 if self.gaming_mode else self.vllm.replicas


@dataclass(frozen=True)
class SecretSetting:
    """A key that must be set with `pulumi config set --secret`; its value never reaches the parser."""

    key: str
    doc: str
    default: str


SECRET_SETTINGS = (
    SecretSetting(
        OPENAI_KEY_CONFIG,
        "OpenAI key. **Must** be set with `--secret`.",
        "— (required unless `openai.enabled` is false)",
    ),
    SecretSetting(
        DATABASE_URL_CONFIG,
        "**Secret**. Turns on LiteLLM's database features (admin UI, virtual keys, spend logs).",
        "unset",
    ),
    SecretSetting(
        REDIS_URL_CONFIG,
        "**Secret**. `redis://:<password>@host:6379/0` (or `rediss://`) of an existing Redis; "
        "required with `redis.mode: external`.",
        "unset",
    ),
    SecretSetting(
        MASTER_KEY_CONFIG,
        "**Secret**. The gateway's key, e.g. the old gateway's, so its clients keep working; unset: generated.",
        "generated",
    ),
)

# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def parse_settings(
    raw: Mapping[str, Any],
    openai_key: str = "missing",
    database_url: str = "missing",
    redis_url: str = "missing",
    master_key: str = "missing",
    secret_states: Mapping[str, str] | None = None,
) -> Settings:
    """Validate the whole stack config (bare keys, no `llm-gateway:` prefix).

    `openai_key`, `database_url`, `redis_url` and `master_key` say how `llm-gateway:openaiApiKey`,
    `llm-gateway:databaseUrl`, `llm-gateway:redisUrl` and `llm-gateway:masterKey` are set:
    "missing", "secret" or "plaintext". Their values never reach this function. `secret_states`: the
    same for any other key, such as the one a chain's cloud tier names for its key (`apiKey`).
    """
    public = {key: value for key, value in raw.items() if key not in SECRET_CONFIG_KEYS}
    settings = _parse_with_chain_keys(public)
    _check_openai_key(settings, openai_key)
    _check_chain_keys(settings, {OPENAI_KEY_CONFIG: openai_key, **(secret_states or {})})
    _check_not_plaintext(DATABASE_URL_CONFIG, database_url)
    _check_not_plaintext(MASTER_KEY_CONFIG, master_key)
    _check_redis_url(settings.redis, redis_url)
    if (settings.alerts.enabled or settings.alerts.dashboard) and not settings.gateway.metrics:
        raise ConfigError(
            "gateway.metrics", False, "alerts and the dashboard read the gateway's metrics: leave it true"
        )
    if settings.gateway.admin_ui and database_url != "secret":
        raise ConfigError(
            "gateway.adminUi",
            True,
            f"the admin UI needs a database: set `pulumi config set --secret {config_key(DATABASE_URL_CONFIG)} <url>`",
        )
    return replace(settings, database=database_url == "secret")


def chain_secret_keys(settings: Settings) -> tuple[str, ...]:
    """The stack-config keys the chains' tiers name for their API keys (each set with --secret)."""
    keys = (
        tier.spec.api_key for chain in settings.chains for tier in chain.tiers if tier.kind in ("cloud", "endpoint")
    )
    return tuple(dict.fromkeys(key for key in keys if key is not None))


def _parse_with_chain_keys(public: Mapping[str, Any]) -> Settings:
    """A chain's tier may name a top-level key for its secret: known once the chains are read. Parsed
    twice: first with every key let through, then with only the named ones (a typo is still refused)."""
    declared = {key for key, _ in declared_fields(Settings)}
    others = tuple(key for key in public if key not in declared)
    settings = parse_object(Settings, "", public, also_known=(*SECRET_CONFIG_KEYS, *others))
    named = chain_secret_keys(settings)
    if set(others) <= set(named):
        return settings
    rest = {key: value for key, value in public.items() if key not in named}
    return parse_object(Settings, "", rest, also_known=(*SECRET_CONFIG_KEYS, *named))


def _check_chain_keys(settings: Settings, states: Mapping[str, str]) -> None:
    for key in chain_secret_keys(settings):
        state = states.get(key, "missing")
        if state == "missing":
            raise ConfigError(
                key,
                None,
                f"a chain's tier names it for its API key: run `pulumi config set --secret {config_key(key)} <key>`",
                state="is not set",
            )
        _check_not_plaintext(key, state)


def _check_ollama_context(ollama: OllamaSettings, context_tokens: int) -> None:
    """Ollama loads `gateway.contextTokens` only if its memory holds it, and silently caps it at what the model
    was trained for (core/context_window.py): either would break the chain's promise at request time."""
    _check_trained_context("gateway.contextTokens", context_tokens, ollama.model, "ollama.model")
    apart, per_token = _model_estimate("ollama", ollama.model, ollama.model_memory, ollama.memory_per_context_token)
    requested = int(quantity_value(ollama.resources.requests.memory))
    needed = memory_needed(apart, per_token, context_tokens)
    if requested < needed:
        fits = largest_context(apart, per_token, requested)
        shorter = f", or lower gateway.contextTokens to at most {fits}" if fits >= CONTEXT_TOKENS.low else ""
        raise ConfigError(
            "ollama.resources.requests.memory",
            ollama.resources.requests.memory,
            f"an Ollama runner holding gateway.contextTokens={context_tokens} needs about {mebibytes(needed)}Mi "
            f"(estimated: {mebibytes(apart)}Mi for the model + {per_token} bytes per token); raise it to at least "
            f'"{mebibytes(needed)}Mi"{shorter}',
        )


def _check_trained_context(key: str, context_tokens: int, model: str, other: str = "model") -> None:
    """Ollama silently caps a context at what the model was trained for (core/context_window.py)."""
    shape = KNOWN_OLLAMA_MODELS.get(model)
    if shape is not None and context_tokens > shape.trained_context:
        raise ConfigError(
            key,
            context_tokens,
            f"{model} holds at most {shape.trained_context} tokens (Ollama would cut it to that): "
            f"set it to {shape.trained_context} or less, or choose another {other}",
        )


def _model_estimate(key: str, model: str, model_memory: str | None, per_token: int | None) -> tuple[int, int]:
    """(bytes apart from the context, bytes per context token) of an Ollama model: set, or estimated."""
    shape = KNOWN_OLLAMA_MODELS.get(model)
    if shape is None and (model_memory is None or per_token is None):
        missing = "modelMemory" if model_memory is None else "memoryPerContextToken"
        raise ConfigError(
            f"{key}.{missing}",
            None,
            f"the memory check has no estimate for {model}: set {key}.modelMemory (the model's size plus its "
            f"output buffer) and {key}.memoryPerContextToken (KV cache and attention buffer per token)",
            state="is not set",
        )
    apart = int(quantity_value(model_memory)) if model_memory else shape.bytes_apart_from_context
    return int(apart), per_token if per_token is not None else shape.bytes_per_context_token


def _check_shared_ollama(settings: Settings) -> None:
    """One Ollama pod holds every CPU model, each resident at its chain's context: its memory request
    must hold them all (`ollama.model`'s own check is _check_ollama_context)."""
    _check_one_context_per_model(settings)
    extra = settings.ollama_models
    if not extra:
        return
    ollama = settings.ollama
    apart, per_token = _model_estimate("ollama", ollama.model, ollama.model_memory, ollama.memory_per_context_token)
    needed = memory_needed(apart, per_token, settings.gateway.context_tokens)
    for chain, tier in extra:
        index = settings.chains.index(chain)
        key = f"chains[{index}].tiers[{chain.tiers.index(tier)}].ollama"
        model = tier.ollama
        apart, per_token = _model_estimate(key, model.model, model.model_memory, model.memory_per_context_token)
        needed += memory_needed(apart, per_token, settings.chain_context(chain))
    requested = int(quantity_value(ollama.resources.requests.memory))
    if requested < needed:
        raise ConfigError(
            "ollama.resources.requests.memory",
            ollama.resources.requests.memory,
            f"the shared Ollama holds {1 + len(extra)} models resident, about {mebibytes(needed)}Mi in all: "
            f'raise it to at least "{mebibytes(needed)}Mi"',
        )


def _check_one_context_per_model(settings: Settings) -> None:
    """The shared Ollama derives one served model per model, with one num_ctx: every chain using a
    model must give it the same context."""
    contexts = {settings.ollama.model: ("gateway.contextTokens", settings.gateway.context_tokens)}
    digests = {settings.ollama.model: ("ollama.modelDigest", settings.ollama.model_digest)}
    for index, chain in enumerate(settings.chains):
        for tier_index, tier in enumerate(chain.tiers):
            if tier.ollama is None:
                continue
            key = f"chains[{index}].tiers[{tier_index}].ollama.modelDigest"
            pinned_as, pin = digests.setdefault(tier.ollama.model, (key, tier.ollama.model_digest))
            if pin != tier.ollama.model_digest:
                raise ConfigError(
                    key,
                    tier.ollama.model_digest,
                    f"{tier.ollama.model} is pulled once for the shared Ollama, pinned by {pinned_as} = {pin}: "
                    "give every tier of it the same pin",
                )
            _check_trained_context(f"chains[{index}].contextTokens", settings.chain_context(chain), tier.ollama.model)
            key, context = contexts.setdefault(
                tier.ollama.model, (f"chains[{index}].contextTokens", settings.chain_context(chain))
            )
            if context != settings.chain_context(chain):
                raise ConfigError(
                    f"chains[{index}].contextTokens",
                    chain.context_tokens,
                    f"{tier.ollama.model} runs on the shared Ollama with one context, {context} ({key}): "
                    "give this chain the same, or another model",
                )


def _check_openai_key(settings: Settings, state: str) -> None:
    if not settings.openai.enabled:
        return
    if state == "missing":
        raise ConfigError(
            OPENAI_KEY_CONFIG,
            None,
            f"run `pulumi config set --secret {config_key(OPENAI_KEY_CONFIG)} <key>`, "
            f"or `pulumi config set --path {config_key('openai.enabled')} false` to run without the cloud tier",
            state="is not set",
        )
    _check_not_plaintext(OPENAI_KEY_CONFIG, state)


def _check_redis_url(redis: RedisSettings, state: str) -> None:
    if redis.mode == "external" and state == "missing":
        raise ConfigError(
            REDIS_URL_CONFIG,
            None,
            f"run `pulumi config set --secret {config_key(REDIS_URL_CONFIG)} redis://:<password>@<host>:6379/0`, "
            f"or set {config_key('redis.mode')} to deploy",
            state="is not set (redis.mode is external)",
        )
    if redis.mode != "external" and state != "missing":
        raise ConfigError(
            REDIS_URL_CONFIG,
            None,
            f"it is used only with `redis.mode: external`: set {config_key('redis.mode')} to external, "
            f"or run `pulumi config rm {config_key(REDIS_URL_CONFIG)}`",
            state=f"is set but redis.mode is {redis.mode} (value not shown)",
        )
    _check_not_plaintext(REDIS_URL_CONFIG, state)


def _check_not_plaintext(key: str, state: str) -> None:
    if state == "plaintext":
        raise ConfigError(
            key,
            None,
            f"run `pulumi config rm {config_key(key)}` then `pulumi config set --secret {config_key(key)} <value>`",
            state="is stored in plain text (value not shown)",
        )

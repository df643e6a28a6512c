"""Typed, validated stack settings for llm-gateway.

Pure: no Pulumi import. `parse_settings` takes the raw stack configuration exactly as Pulumi
stores it (strings; objects as JSON text) and returns frozen dataclasses, or raises ConfigError
naming the full key (`llm-gateway:vllm.replicas`), the bad value and the fix. Every value is
checked here, before the program creates any resource.

The OpenAI key never reaches this module: the caller only says whether it is set, and whether
it was set as a secret.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROJECT = "llm-gateway"
OPENAI_KEY_CONFIG = "openaiApiKey"
DATABASE_URL_CONFIG = "databaseUrl"
# Stack-config keys that hold secrets: the parser only learns whether each is set, and how.
SECRET_CONFIG_KEYS = (OPENAI_KEY_CONFIG, DATABASE_URL_CONFIG)

# Images are pinned by exact tag. The LiteLLM tag must match the litellm[proxy] version the
# drill tests run (tests/test_versions.py checks the two agree).
LITELLM_VERSION = "1.108.7"
# The release's non-root build (same tag and cosign signature as ghcr.io/berriai/litellm).
DEFAULT_LITELLM_IMAGE = f"ghcr.io/berriai/litellm-non_root:v{LITELLM_VERSION}"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_OLLAMA_IMAGE = "ollama/ollama:0.12.6"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# Model names go into YAML, URLs and command lines: printable ASCII without spaces or quotes.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,253}$")


class ConfigError(ValueError):
    """A stack-config value is wrong. The message names the key, the value and the fix."""

    def __init__(self, key: str, value: Any, fix: str, *, state: str | None = None) -> None:
        self.key = f"{PROJECT}:{key}"
        self.value = value
        self.fix = fix
        # `state` replaces the value where it must not be shown (the OpenAI key) or does not exist.
        problem = state or f"= {_shown(value)} is invalid"
        super().__init__(f"{self.key} {problem}: {fix}")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# The settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None


@dataclass(frozen=True)
class Image:
    reference: str  # repository:tag
    digest: str | None = None

    @property
    def pinned(self) -> str:
        """What the pod spec uses: `repo:tag@sha256:...` when a digest is set, else `repo:tag`."""
        return f"{self.reference}@{self.digest}" if self.digest else self.reference

    @property
    def tag(self) -> str:
        return self.reference.rsplit(":", 1)[1]


@dataclass(frozen=True)
class VllmSettings:
    image: Image = Image(DEFAULT_VLLM_IMAGE)
    model: str = "Qwen/Qwen2.5-7B-Instruct-AWQ"
    replicas: int = 1
    gpu_count: int = 1
    resources: Resources = Resources("2", "12Gi", "4", "16Gi")
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    runtime_class_name: str | None = None
    cache_size: str = "40Gi"
    shm_size: str = "2Gi"
    storage_class_name: str | None = None
    extra_args: tuple[str, ...] = ()
    timeout_seconds: int = 600
    # Progress limits (gateway/vllm_progress.py): first token, and the longest silence between two.
    first_token_timeout_seconds: int = 4
    stall_timeout_seconds: int = 5


@dataclass(frozen=True)
class OllamaSettings:
    image: Image = Image(DEFAULT_OLLAMA_IMAGE)
    model: str = "qwen2.5:3b"
    resources: Resources = Resources("2", "4Gi", "4", "8Gi")
    storage_size: str = "20Gi"
    storage_class_name: str | None = None
    timeout_seconds: int = 600


BUDGET_PERIODS = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


@dataclass(frozen=True)
class OpenAISettings:
    enabled: bool = True
    model: str = "gpt-4o-mini"
    api_base: str = "https://api.openai.com/v1"
    timeout_seconds: int = 120
    # Spend guard (gateway/cloud_guard.py), per gateway replica; None = no limit.
    rpm: int | None = None
    tpm: int | None = None
    max_budget_usd: float | None = None
    budget_period: str = "30d"

    @property
    def budget_period_seconds(self) -> int:
        return BUDGET_PERIODS[self.budget_period]


@dataclass(frozen=True)
class GatewaySettings:
    image: Image = Image(DEFAULT_LITELLM_IMAGE)
    replicas: int = 2
    model_name: str = "chat"
    num_retries: int = 0
    cooldown_seconds: int = 10
    health_check_interval_seconds: int = 5
    resources: Resources = Resources("500m", "1Gi", "2", "2Gi")
    metrics: bool = True  # LiteLLM's Prometheus metrics at /metrics/ (bearer: the master key)
    service_monitor: bool = False  # a prometheus-operator ServiceMonitor for them
    database_port: int = 5432  # opened in the gateway's egress when `databaseUrl` is set


@dataclass(frozen=True)
class IngressSettings:
    enabled: bool = False
    kind: str = "Ingress"  # or "IngressRoute" (Traefik)
    host: str | None = None
    class_name: str | None = None
    tls_secret_name: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    entry_points: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    namespace: str = PROJECT
    gaming_mode: bool = False
    vllm: VllmSettings = VllmSettings()
    ollama: OllamaSettings = OllamaSettings()
    openai: OpenAISettings = OpenAISettings()
    gateway: GatewaySettings = GatewaySettings()
    network_policies: bool = True
    render_yaml_to_directory: str | None = None
    ingress: IngressSettings = IngressSettings()
    database: bool = False  # `databaseUrl` set (as a secret): LiteLLM's database features on

    @property
    def vllm_replicas(self) -> int:
        """Gaming Mode hands the GPU back: vLLM runs 0 replicas and the chain fails over."""
        return 0 if self.gaming_mode else self.vllm.replicas


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class _ObjectReader:
    """Reads one config object, key by key, and rejects any key it was not asked for."""

    def __init__(self, path: str, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(path, raw, "expected an object of keys and values (a YAML mapping)")
        self.path = path
        self.raw = raw
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str, default: Any, check: Callable[[str, Any], Any]) -> Any:
        self.known.append(name)
        if name not in self.raw or self.raw[name] is None:
            return default
        return check(self.key(name), self.raw[name])

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.known:
                close = difflib.get_close_matches(str(name), self.known, n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                raise ConfigError(
                    self.key(str(name)),
                    self.raw[name],
                    f"unknown key; {hint}known keys here: {', '.join(sorted(self.known))}",
                )


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, f"expected a whole number from {low} to {high}, unquoted")
        if not low <= value <= high:
            raise ConfigError(key, value, f"expected a whole number from {low} to {high}")
        return value

    return check


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):  # top-level scalars reach the program as strings
        return value == "true"
    raise ConfigError(key, value, "expected true or false")


def _string(pattern: re.Pattern[str], what: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ConfigError(key, value, f"expected {what}")
        return value

    return check


_model = _string(_MODEL_NAME, "a model name: ASCII letters, digits and ._:/@+- (no spaces)")
_quantity = _string(_QUANTITY, 'a Kubernetes quantity such as "500m", "2", "8Gi"')
_dns_label = _string(_DNS_LABEL, "a DNS label: lowercase letters, digits and '-', at most 63")
_digest = _string(_DIGEST, 'an image digest "sha256:" followed by 64 hex digits, or leave it unset')
_printable = _string(_PRINTABLE, "a non-empty string of printable ASCII without spaces")
_https_url = _string(re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[\x21-\x7e]*)?$"), "an https:// URL")


def _directory(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._/~-]{1,255}", value) or ".." in value.split("/"):
        raise ConfigError(key, value, "expected a directory path (letters, digits, ._/~-; no '..')")
    return value


def _image_reference(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _IMAGE.fullmatch(value):
        raise ConfigError(key, value, 'expected "repository:tag" with an exact tag')
    if value.rsplit(":", 1)[1] in ("latest", "main", "stable", "nightly"):
        raise ConfigError(key, value, "pin an exact version tag; moving tags change under you")
    return value


def _dns_label_63(key: str, value: Any) -> str:
    label = _dns_label(key, value)
    if len(label) > 63:
        raise ConfigError(key, value, "a DNS label is at most 63 characters")
    return label


def _keyed_strings(kind: str, value_ok: Callable[[Any], bool], value_fix: str) -> Callable[[str, Any], dict[str, str]]:
    """A map from Kubernetes-style keys (labels, annotations) to string values."""

    def check(key: str, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, f"expected an object of {kind} keys to string values")
        for name, item in value.items():
            if not isinstance(name, str) or len(name) > 316 or not _LABEL_KEY.fullmatch(name):
                raise ConfigError(f"{key}.{name}", item, f"invalid {kind} key")
            if not value_ok(item):
                raise ConfigError(f"{key}.{name}", item, value_fix)
        return dict(value)

    return check


_string_map = _keyed_strings(
    "label",
    lambda item: isinstance(item, str) and len(item) <= 63 and bool(_LABEL_VALUE.fullmatch(item)),
    "expected a label value string (quote numbers)",
)
_annotations = _keyed_strings(
    "annotation",
    lambda item: isinstance(item, str) and len(item) <= 4096,
    "expected a string value (quote numbers and booleans)",
)


def _list_of(key: str, value: Any, item: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, value, "expected a list")
    if len(value) > 32:
        raise ConfigError(key, value, "at most 32 entries")
    return tuple(item(f"{key}[{index}]", entry) for index, entry in enumerate(value))


def _argument(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[\x20-\x7e]{1,200}", value):
        raise ConfigError(key, value, "expected a command-line argument: printable ASCII, 1-200 chars")
    return value


def _toleration(key: str, value: Any) -> Toleration:
    reader = _ObjectReader(key, value)
    operator = reader.take("operator", "Equal", _one_of("Equal", "Exists"))
    toleration = Toleration(
        key=reader.take("key", None, _printable),
        operator=operator,
        value=reader.take("value", None, _string(_LABEL_VALUE, "a label value")),
        effect=reader.take("effect", None, _one_of("NoSchedule", "PreferNoSchedule", "NoExecute")),
    )
    reader.finish()
    if operator == "Exists" and toleration.value is not None:
        raise ConfigError(f"{key}.value", toleration.value, "leave value unset with operator Exists")
    return toleration


def _one_of(*allowed: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(key, value, f"expected one of: {', '.join(allowed)}")
        return value

    return check


def _resources(defaults: Resources) -> Callable[[str, Any], Resources]:
    def check(key: str, value: Any) -> Resources:
        reader = _ObjectReader(key, value)
        requests = _ObjectReader(reader.key("requests"), reader.take("requests", {}, _same))
        limits = _ObjectReader(reader.key("limits"), reader.take("limits", {}, _same))
        reader.finish()
        parsed = Resources(
            cpu_request=requests.take("cpu", defaults.cpu_request, _quantity),
            memory_request=requests.take("memory", defaults.memory_request, _quantity),
            cpu_limit=limits.take("cpu", defaults.cpu_limit, _quantity),
            memory_limit=limits.take("memory", defaults.memory_limit, _quantity),
        )
        requests.finish()
        limits.finish()
        return parsed

    return check


def _same(key: str, value: Any) -> Any:
    return value


def _image(reader: _ObjectReader, default: Image) -> Image:
    return Image(
        reference=reader.take("image", default.reference, _image_reference),
        digest=reader.take("imageDigest", default.digest, _digest),
    )


def _parse_vllm(raw: Any) -> VllmSettings:
    defaults = VllmSettings()
    reader = _ObjectReader("vllm", raw)
    parsed = VllmSettings(
        image=_image(reader, defaults.image),
        model=reader.take("model", defaults.model, _model),
        replicas=reader.take("replicas", defaults.replicas, _integer(0, 8)),
        gpu_count=reader.take("gpuCount", defaults.gpu_count, _integer(0, 8)),
        resources=reader.take("resources", defaults.resources, _resources(defaults.resources)),
        node_selector=reader.take("nodeSelector", {}, _string_map),
        tolerations=reader.take("tolerations", (), lambda k, v: _list_of(k, v, _toleration)),
        runtime_class_name=reader.take("runtimeClassName", None, _dns_label_63),
        cache_size=reader.take("cacheSize", defaults.cache_size, _quantity),
        shm_size=reader.take("shmSize", defaults.shm_size, _quantity),
        storage_class_name=reader.take("storageClassName", None, _dns_label_63),
        extra_args=reader.take("extraArgs", (), lambda k, v: _list_of(k, v, _argument)),
        timeout_seconds=reader.take("timeoutSeconds", defaults.timeout_seconds, _integer(5, 3600)),
        first_token_timeout_seconds=reader.take(
            "firstTokenTimeoutSeconds", defaults.first_token_timeout_seconds, _integer(1, 600)
        ),
        stall_timeout_seconds=reader.take("stallTimeoutSeconds", defaults.stall_timeout_seconds, _integer(1, 600)),
    )
    reader.finish()
    if parsed.first_token_timeout_seconds >= parsed.timeout_seconds:
        raise ConfigError(
            "vllm.firstTokenTimeoutSeconds",
            parsed.first_token_timeout_seconds,
            f"must be below vllm.timeoutSeconds ({parsed.timeout_seconds}), the cap on a whole answer",
        )
    return parsed


def _parse_ollama(raw: Any) -> OllamaSettings:
    defaults = OllamaSettings()
    reader = _ObjectReader("ollama", raw)
    parsed = OllamaSettings(
        image=_image(reader, defaults.image),
        model=reader.take("model", defaults.model, _model),
        resources=reader.take("resources", defaults.resources, _resources(defaults.resources)),
        storage_size=reader.take("storageSize", defaults.storage_size, _quantity),
        storage_class_name=reader.take("storageClassName", None, _dns_label_63),
        timeout_seconds=reader.take("timeoutSeconds", defaults.timeout_seconds, _integer(5, 3600)),
    )
    reader.finish()
    return parsed


def _parse_openai(raw: Any) -> OpenAISettings:
    defaults = OpenAISettings()
    reader = _ObjectReader("openai", raw)
    parsed = OpenAISettings(
        enabled=reader.take("enabled", defaults.enabled, _boolean),
        model=reader.take("model", defaults.model, _model),
        api_base=reader.take("apiBase", defaults.api_base, _https_url),
        timeout_seconds=reader.take("timeoutSeconds", defaults.timeout_seconds, _integer(5, 3600)),
        rpm=reader.take("rpm", None, _integer(1, 1_000_000)),
        tpm=reader.take("tpm", None, _integer(1, 1_000_000_000)),
        max_budget_usd=reader.take("maxBudgetUsd", None, _dollars),
        budget_period=reader.take("budgetPeriod", defaults.budget_period, _one_of(*BUDGET_PERIODS)),
    )
    reader.finish()
    return parsed


def _dollars(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1_000_000:
        raise ConfigError(key, value, "expected an amount in US dollars above 0 and at most 1000000, unquoted")
    return float(value)


def _parse_gateway(raw: Any) -> GatewaySettings:
    defaults = GatewaySettings()
    reader = _ObjectReader("gateway", raw)
    parsed = GatewaySettings(
        image=_image(reader, defaults.image),
        replicas=reader.take("replicas", defaults.replicas, _integer(1, 20)),
        model_name=reader.take("modelName", defaults.model_name, _model),
        num_retries=reader.take("numRetries", defaults.num_retries, _integer(0, 5)),
        cooldown_seconds=reader.take("cooldownSeconds", defaults.cooldown_seconds, _integer(1, 600)),
        health_check_interval_seconds=reader.take(
            "healthCheckIntervalSeconds", defaults.health_check_interval_seconds, _integer(2, 300)
        ),
        resources=reader.take("resources", defaults.resources, _resources(defaults.resources)),
        metrics=reader.take("metrics", defaults.metrics, _boolean),
        service_monitor=reader.take("serviceMonitor", defaults.service_monitor, _boolean),
        database_port=reader.take("databasePort", defaults.database_port, _integer(1, 65535)),
    )
    reader.finish()
    if parsed.service_monitor and not parsed.metrics:
        raise ConfigError("gateway.serviceMonitor", True, "needs gateway.metrics true (there is nothing to scrape)")
    return parsed


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")


def _parse_ingress(raw: Any) -> IngressSettings:
    reader = _ObjectReader("ingress", raw)
    parsed = IngressSettings(
        enabled=reader.take("enabled", False, _boolean),
        kind=reader.take("kind", "Ingress", _one_of("Ingress", "IngressRoute")),
        host=reader.take("host", None, _string(_HOSTNAME, "a DNS host name such as llm.example.com")),
        class_name=reader.take("className", None, _dns_label_63),
        tls_secret_name=reader.take("tlsSecretName", None, _dns_label_63),
        annotations=reader.take("annotations", {}, _annotations),
        entry_points=reader.take("entryPoints", (), lambda k, v: _list_of(k, v, _dns_label_63)),
    )
    reader.finish()
    if parsed.enabled and parsed.host is None:
        raise ConfigError("ingress.host", None, "set the host clients use, e.g. llm.example.com", state="is not set")
    if parsed.entry_points and parsed.kind != "IngressRoute":
        raise ConfigError("ingress.entryPoints", list(parsed.entry_points), "only for kind IngressRoute (Traefik)")
    return parsed


def _json_object(key: str, value: Any) -> Any:
    """Object-valued keys reach a Pulumi program as JSON text; embedded tests may pass dicts."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ConfigError(key, value, "expected an object (set it with `pulumi config set --path`)") from None
    return value


def parse_settings(raw: Mapping[str, Any], openai_key: str = "missing", database_url: str = "missing") -> Settings:
    """Validate the whole stack config (bare keys, no `llm-gateway:` prefix).

    `openai_key` and `database_url` say how `llm-gateway:openaiApiKey` and `llm-gateway:databaseUrl`
    are set: "missing", "secret" or "plaintext". Their values never reach this function.
    """
    top = _ObjectReader("", {k: v for k, v in raw.items() if k not in SECRET_CONFIG_KEYS})
    settings = Settings(
        namespace=top.take("namespace", PROJECT, _dns_label_63),
        gaming_mode=top.take("gamingMode", False, _boolean),
        vllm=top.take("vllm", VllmSettings(), lambda k, v: _parse_vllm(_json_object(k, v))),
        ollama=top.take("ollama", OllamaSettings(), lambda k, v: _parse_ollama(_json_object(k, v))),
        openai=top.take("openai", OpenAISettings(), lambda k, v: _parse_openai(_json_object(k, v))),
        gateway=top.take("gateway", GatewaySettings(), lambda k, v: _parse_gateway(_json_object(k, v))),
        network_policies=top.take("networkPolicies", True, _boolean),
        render_yaml_to_directory=top.take("renderYamlToDirectory", None, _directory),
        ingress=top.take("ingress", IngressSettings(), lambda k, v: _parse_ingress(_json_object(k, v))),
        database=database_url == "secret",
    )
    top.known.extend(SECRET_CONFIG_KEYS)
    top.finish()
    _check_openai_key(settings, openai_key)
    _check_not_plaintext(DATABASE_URL_CONFIG, database_url)
    _check_cooldown_covers_probe_cycle(settings.gateway)
    return settings


def probe_timeout_seconds(gateway: GatewaySettings) -> int:
    """A probe must answer well inside one interval, or probes pile up."""
    return max(1, min(5, gateway.health_check_interval_seconds - 1))


def _check_cooldown_covers_probe_cycle(gateway: GatewaySettings) -> None:
    # A failed probe cools vLLM down until the next probe can fail again; a shorter cooldown opens
    # a window in which requests are sent to a hung vLLM and wait for its whole timeout.
    cycle = gateway.health_check_interval_seconds + probe_timeout_seconds(gateway)
    if gateway.cooldown_seconds < cycle + 1:
        raise ConfigError(
            "gateway.cooldownSeconds",
            gateway.cooldown_seconds,
            f"must be at least healthCheckIntervalSeconds + probe timeout + 1 = {cycle + 1}, "
            "so a hung vLLM stays skipped between two probes",
        )


def _check_openai_key(settings: Settings, state: str) -> None:
    if not settings.openai.enabled:
        return
    if state == "missing":
        raise ConfigError(
            OPENAI_KEY_CONFIG,
            None,
            f"run `pulumi config set --secret {PROJECT}:{OPENAI_KEY_CONFIG} <key>`, "
            f"or `pulumi config set --path {PROJECT}:openai.enabled false` to run without the cloud tier",
            state="is not set",
        )
    _check_not_plaintext(OPENAI_KEY_CONFIG, state)


def _check_not_plaintext(key: str, state: str) -> None:
    if state == "plaintext":
        raise ConfigError(
            key,
            None,
            f"run `pulumi config rm {PROJECT}:{key}` then `pulumi config set --secret {PROJECT}:{key} <value>`",
            state="is stored in plain text (value not shown)",
        )

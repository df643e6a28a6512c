"""The fallback chain: the ordered tiers a client-facing name walks, and what each tier is.

Pure: no Pulumi import. The chain is data; components/ deploy its tiers, core/litellm_config.py
renders the LiteLLM config that enforces its order, and the drill runs that very config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from core.names import (
    OLLAMA_PORT,
    OLLAMA_SERVICE,
    OPENAI_KEY_ENV,
    PROGRESS_PROVIDER,
    VLLM_PORT,
    VLLM_SERVICE,
    secret_env_name,
    service_url,
    tier_group,
    tier_object_name,
)
from core.ollama_model import served_model
from core.settings import (
    ChainSettings,
    EndpointTierSettings,
    OpenAISettings,
    Settings,
    TierSettings,
    VllmSettings,
)
from gateway.contract import (
    CHAT_MODE,
    EMBEDDING_MODE,
    FIRST_TOKEN_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_QUEUE_SECONDS,
    STALL_TIMEOUT,
)

# LiteLLM needs some api_key for an OpenAI-compatible deployment; vLLM and Ollama ignore it.
LOCAL_API_KEY_PLACEHOLDER = "not-a-secret-local-tier"


# Ollama's own backstop if a prompt gets past the gateway's estimate: refuse it with a 400 instead of
# dropping older messages and cutting the prompt (`truncate`, server/prompt.go chatPrompt and
# runner/ollamarunner/runner.go), and end an answer that reaches the context with done_reason
# "length" instead of shifting the prompt out of it (`shift`), as vLLM does (ollama v0.12.6
# api/types.go ChatRequest). LiteLLM sends `extra_body` as top-level fields of /api/chat.
OLLAMA_NEVER_TRUNCATE = {"truncate": False, "shift": False}


# An embeddings tier on Ollama (LiteLLM 1.108.7 `ollama/`, llms/ollama/completion/handler.py, sends
# /api/embed): `truncate: false` makes an input over the context a 400, as vLLM answers it, instead
# of the vector of a shorter text (Ollama cuts at num_ctx by default, server/routes.go EmbedHandler);
# `drop_params` lets a request carrying OpenAI's `encoding_format` (the OpenAI SDK always sends it)
# through, where LiteLLM would refuse it for Ollama before sending (UnsupportedParamsError).
OLLAMA_EMBEDDINGS = {"truncate": False, "drop_params": True}


@dataclass(frozen=True)
class Tier:
    """One step of the chain: a LiteLLM model group, the deployment behind it, and where it runs."""

    name: str  # "vllm", "ollama", "openai": the deployment's model_info.id
    group: str  # the LiteLLM model group name
    litellm_params: dict[str, Any]
    api: str  # the wire protocol: "openai" (chat completions) or "ollama" (native /api/chat)
    api_path: str  # what follows host:port in api_base ("/v1" or "")
    served_model: str  # the model name the tier itself serves
    service: str | None = None  # the in-cluster Service; None: outside the cluster
    port: int | None = None
    probed: bool = False  # background health checks (and cooldown on a failed probe)
    context_tokens: int | None = None  # the context the tier is given; None: the cloud's own, not ours
    cooled_down: bool = True  # False: every request tries this tier, whatever happened before
    client_facing: bool = False  # the chain's head: the group clients call (by its name or an alias)
    answers_as: str | None = None  # the model its answers name, where the tier reports another one
    kind: str = "vllm"  # its TIER_KINDS entry
    mode: str = "chat"  # "chat" or "embedding": what its chain serves
    outside: bool | None = None  # an endpoint's: outside the cluster (None: decided by `service`)
    limits: Any = None  # a cloud tier's settings, whose rpm / tpm / budget the spend guard enforces
    embedding: tuple[str, int] | None = None  # an embeddings tier's declared (model, dimensions)

    @property
    def in_cluster(self) -> bool:
        return not self.outside if self.outside is not None else self.service is not None


# vLLM 0.11's `--max-num-seqs` default for its OpenAI server: 256, or 1024 on a GPU of 70 GiB or
# more that is not an A100 (vllm/engine/arg_utils.py, EngineArgs default batch sizes). The larger:
# the gateway cannot tell the GPU, and a pool smaller than the batch idles the GPU.
VLLM_DEFAULT_MAX_NUM_SEQS = 1024


def vllm_max_num_seqs(extra_args: tuple[str, ...]) -> int:
    """The sequences vLLM runs at once: `--max-num-seqs N` (or `=N`, or underscores) in its extraArgs."""
    for index, argument in enumerate(extra_args):
        name, _, value = argument.partition("=")
        if name.replace("_", "-") != "--max-num-seqs":
            continue
        if not value and index + 1 < len(extra_args):
            value = extra_args[index + 1]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return VLLM_DEFAULT_MAX_NUM_SEQS


def vllm_connections(extra_args: tuple[str, ...]) -> int:
    """Each gateway process's connection pool to vLLM: its whole batch, and as many again waiting in
    vLLM's own queue, where its counters and the probe see them (not hidden in the gateway's pool)."""
    return 2 * vllm_max_num_seqs(extra_args)


@dataclass(frozen=True)
class Place:
    """Where a chain's tiers are reached, and what they are told: the stack's namespace and domain,
    the chain's context and the protocol kind (chat or embeddings)."""

    namespace: str
    domain: str
    context_tokens: int
    mode: str = "chat"  # "chat" or "embedding" (LiteLLM's model_info.mode)

    def url(self, service: str, port: int, path: str = "") -> str:
        return service_url(service, self.namespace, self.domain, port, path)


# An embeddings tier through the progress provider: LiteLLM refuses every OpenAI embeddings parameter
# (`encoding_format`, which OpenAI's SDK always sends, `dimensions`, `user`) for a provider it does not
# know, unless told to drop them; gateway/vllm_progress.py reads them back from the request itself
# (utils.py get_optional_params_embeddings; docs/failover.md "Embeddings on vLLM").
PROGRESS_EMBEDDINGS = {"drop_params": True}


def _progress_limits(vllm: VllmSettings) -> dict[str, Any]:
    """The limits gateway/vllm_progress.py reads from a deployment's litellm_params."""
    return {
        FIRST_TOKEN_TIMEOUT: vllm.first_token_timeout_seconds,
        STALL_TIMEOUT: vllm.stall_timeout_seconds,
        MAX_QUEUE_SECONDS: vllm.max_queue_seconds,
        MAX_CONNECTIONS: vllm_connections(vllm.extra_args),
    }


def _ollama_params(model: str, mode: str) -> dict[str, Any]:
    """The LiteLLM provider for an Ollama serving `mode`, and the safeguards that go with it."""
    if mode == CHAT_MODE:
        return {"model": f"ollama_chat/{model}", "extra_body": dict(OLLAMA_NEVER_TRUNCATE)}
    return {"model": f"ollama/{model}", **OLLAMA_EMBEDDINGS}


def vllm_tier(name: str, group: str, vllm: VllmSettings, service: str, place: Place) -> Tier:
    """A vLLM Deployment of this program's (components/vllm.py), watched by progress."""
    return Tier(
        name=name,
        group=group,
        litellm_params={
            # gateway/vllm_progress.py: detects a hung vLLM by progress, not total duration.
            "model": f"{PROGRESS_PROVIDER}/{vllm.model}",
            "api_base": place.url(service, VLLM_PORT, "/v1"),
            "api_key": LOCAL_API_KEY_PLACEHOLDER,
            "timeout": vllm.timeout_seconds,
            **_progress_limits(vllm),
            "max_retries": 0,
            **(PROGRESS_EMBEDDINGS if place.mode != CHAT_MODE else {}),
        },
        api="openai",
        api_path="/v1",
        served_model=vllm.model,
        service=service,
        port=VLLM_PORT,
        probed=True,
        context_tokens=place.context_tokens,
        kind="vllm",
        mode=place.mode,
    )


def ollama_tier(name: str, group: str, model: str, timeout_seconds: int, place: Place) -> Tier:
    """A model on the shared Ollama (components/ollama.py), never cooled down."""
    # The model the init container derives with a thread count (components/ollama.py).
    provider = _ollama_params(served_model(model), place.mode)
    params: dict[str, Any] = {
        "model": provider.pop("model"),
        "api_base": place.url(OLLAMA_SERVICE, OLLAMA_PORT),
        "timeout": timeout_seconds,
        "max_retries": 0,
        **provider,
    }
    return Tier(
        name=name,
        group=group,
        litellm_params=params,
        api="ollama",
        api_path="",
        served_model=served_model(model),
        # Clients see the operator's model, not the derived one Ollama reports.
        answers_as=model,
        service=OLLAMA_SERVICE,
        port=OLLAMA_PORT,
        cooled_down=False,
        context_tokens=place.context_tokens,
        kind="ollama",
        mode=place.mode,
    )


def cloud_tier(name: str, group: str, cloud: OpenAISettings, key_env: str, place: Place) -> Tier:
    """OpenAI or any OpenAI-compatible https API: leaves the cluster, so it comes last."""
    return Tier(
        name=name,
        group=group,
        litellm_params={
            "model": f"openai/{cloud.model}",
            "api_base": cloud.api_base,
            "api_key": f"os.environ/{key_env}",
            "timeout": cloud.timeout_seconds,
            "max_retries": 0,
        },
        api="openai",
        api_path="/v1",
        served_model=cloud.model,
        kind="cloud",
        mode=place.mode,
        limits=cloud,
    )


def endpoint_tier(name: str, group: str, endpoint: EndpointTierSettings, place: Place) -> Tier:
    """An endpoint this program does not deploy. `vllm`: watched by progress like our own vLLM."""
    parsed = urlsplit(endpoint.url or "")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    key = f"os.environ/{secret_env_name(endpoint.api_key)}" if endpoint.api_key else LOCAL_API_KEY_PLACEHOLDER
    params: dict[str, Any] = {"api_base": endpoint.url, "api_key": key, "timeout": endpoint.timeout_seconds}
    watched = endpoint.api == "vllm"
    if watched:
        params["model"] = f"{PROGRESS_PROVIDER}/{endpoint.model}"
        params.update(_progress_limits(VllmSettings()))  # the limits' defaults
        params.update(PROGRESS_EMBEDDINGS if place.mode != CHAT_MODE else {})
    elif endpoint.api == "ollama":
        params.pop("api_key")
        params.update(_ollama_params(endpoint.model, place.mode))  # the shared Ollama's safeguards too
    else:
        params["model"] = f"openai/{endpoint.model}"
    params["max_retries"] = 0
    return Tier(
        name=name,
        group=group,
        litellm_params=params,
        api="ollama" if endpoint.api == "ollama" else "openai",
        api_path=parsed.path.rstrip("/"),
        served_model=endpoint.model or "",
        port=port,
        probed=watched,
        cooled_down=endpoint.api != "ollama",
        kind="endpoint",
        mode=place.mode,
        outside=not endpoint.in_cluster,
    )


def _chain_tier(chain: ChainSettings, index: int, tier: TierSettings, place: Place) -> Tier:
    """One tier of a declared chain, by its kind (TIER_KINDS)."""
    name = tier_object_name(chain.name, tier.tier_name)
    group = chain.name if index == 0 else tier_group(chain.name, tier.tier_name)
    spec = tier.spec
    if tier.kind == "vllm":
        built = vllm_tier(name, group, spec, name, place)
    elif tier.kind == "ollama":
        built = ollama_tier(name, group, spec.model, spec.timeout_seconds, place)
    elif tier.kind == "cloud":
        built = cloud_tier(name, group, spec, secret_env_name(spec.api_key), place)
    else:
        built = endpoint_tier(name, group, spec, place)
    declared = tier.embedding
    return replace(built, embedding=(declared.model, declared.dimensions)) if declared else built


@dataclass(frozen=True)
class TierKind:
    """What the program knows of one kind of tier; a new kind is added here, with its builder above."""

    wire: str  # the protocol the gateway speaks to it ("openai", "ollama"; an endpoint says which)
    deployed_by: str | None  # the component that runs it, or None (not deployed by this program)
    health_probe: str  # how the gateway learns it is down


TIER_KINDS = {
    "vllm": TierKind("openai", "components/vllm.py VllmBackend, one Deployment per tier", "engine probe"),
    "ollama": TierKind("ollama", "components/ollama.py OllamaBackend, one shared pod", "none: never cooled down"),
    "cloud": TierKind("openai", None, "none: cooled down at its first failure"),
    "endpoint": TierKind("(its api)", None, "engine probe when api is vllm, else none"),
}


@dataclass(frozen=True)
class Chain:
    """A client-facing name (and aliases), its kind and its ordered tiers."""

    name: str
    kind: str  # "chat" or "embeddings"
    aliases: tuple[str, ...]
    tiers: tuple[Tier, ...]


def chains(settings: Settings) -> tuple[Chain, ...]:
    """Every chain of the stack: `gateway.modelName`'s (vLLM → Ollama → OpenAI), then `chains`."""
    gateway = settings.gateway
    default = Chain(gateway.model_name, "chat", gateway.model_aliases, failover_chain(settings))
    declared = []
    for chain in settings.chains:
        mode = EMBEDDING_MODE if chain.kind == "embeddings" else CHAT_MODE
        place = Place(settings.namespace, settings.cluster_domain, settings.chain_context(chain), mode)
        tiers = tuple(_chain_tier(chain, index, tier, place) for index, tier in enumerate(chain.tiers))
        declared.append(Chain(chain.name, chain.kind, chain.aliases, _facing(tiers)))
    return (default, *declared)


def _facing(tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
    return (replace(tiers[0], client_facing=True), *tiers[1:])


def all_tiers(settings: Settings) -> tuple[Tier, ...]:
    return tuple(tier for chain in chains(settings) for tier in chain.tiers)


def failover_chain(settings: Settings) -> tuple[Tier, ...]:
    """The default chain: vLLM, then Ollama, then (if enabled) OpenAI. The cloud is last by construction."""
    client_group = settings.gateway.model_name
    place = Place(settings.namespace, settings.cluster_domain, settings.gateway.context_tokens)
    ollama = settings.ollama
    local = (
        replace(vllm_tier("vllm", client_group, settings.vllm, VLLM_SERVICE, place), client_facing=True),
        ollama_tier("ollama", tier_group(client_group, "ollama"), ollama.model, ollama.timeout_seconds, place),
    )
    if not settings.openai.enabled:
        return local
    cloud = cloud_tier("openai", tier_group(client_group, "openai"), settings.openai, OPENAI_KEY_ENV, place)
    return (*local, cloud)


def longest_answer_seconds(chain: tuple[Tier, ...]) -> int:
    """The longest one request may take through the gateway: every tier tried to its own cap."""
    return sum(int(tier.litellm_params["timeout"]) for tier in chain)


def longest_of(every: tuple[Chain, ...]) -> int:
    """The longest answer of any chain (drain times, the edge's timeouts)."""
    return max(longest_answer_seconds(chain.tiers) for chain in every)


def chain_names(settings: Settings) -> list[str]:
    return [tier.name for tier in failover_chain(settings)]

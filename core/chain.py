"""The fallback chain: the ordered tiers a client-facing name walks, and what each tier is.

Pure: no Pulumi import. The chain is data; components/ deploy its tiers, core/litellm_config.py
renders the LiteLLM config that enforces its order, and the drill runs that very config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.names import (
    OLLAMA_PORT,
    OLLAMA_SERVICE,
    OPENAI_KEY_ENV,
    PROGRESS_PROVIDER,
    VLLM_PORT,
    VLLM_SERVICE,
    service_url,
    tier_group,
)
from core.ollama_model import served_model
from core.settings import Settings

# LiteLLM needs some api_key for an OpenAI-compatible deployment; vLLM and Ollama ignore it.
LOCAL_API_KEY_PLACEHOLDER = "not-a-secret-local-tier"


# Ollama's own backstop if a prompt gets past the gateway's estimate: refuse it with a 400 instead of
# dropping older messages and cutting the prompt (`truncate`, server/prompt.go chatPrompt and
# runner/ollamarunner/runner.go), and end an answer that reaches the context with done_reason
# "length" instead of shifting the prompt out of it (`shift`), as vLLM does (ollama v0.12.6
# api/types.go ChatRequest). LiteLLM sends `extra_body` as top-level fields of /api/chat.
OLLAMA_NEVER_TRUNCATE = {"truncate": False, "shift": False}


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

    @property
    def in_cluster(self) -> bool:
        return self.service is not None


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


def failover_chain(settings: Settings) -> tuple[Tier, ...]:
    """vLLM, then Ollama, then (if enabled) OpenAI. The cloud is last by construction."""
    client_group = settings.gateway.model_name
    vllm, ollama, openai = settings.vllm, settings.ollama, settings.openai
    local = (
        Tier(
            name="vllm",
            group=client_group,
            litellm_params={
                # gateway/vllm_progress.py: detects a hung vLLM by progress, not total duration.
                "model": f"{PROGRESS_PROVIDER}/{vllm.model}",
                "api_base": service_url(VLLM_SERVICE, settings.namespace, settings.cluster_domain, VLLM_PORT, "/v1"),
                "api_key": LOCAL_API_KEY_PLACEHOLDER,
                "timeout": vllm.timeout_seconds,
                "first_token_timeout": vllm.first_token_timeout_seconds,
                "stall_timeout": vllm.stall_timeout_seconds,
                "max_queue_seconds": vllm.max_queue_seconds,
                "max_connections": vllm_connections(vllm.extra_args),
                "max_retries": 0,
            },
            api="openai",
            api_path="/v1",
            served_model=vllm.model,
            service=VLLM_SERVICE,
            port=VLLM_PORT,
            probed=True,
            client_facing=True,
            context_tokens=settings.gateway.context_tokens,
        ),
        Tier(
            name="ollama",
            group=tier_group(client_group, "ollama"),
            litellm_params={
                # The model the init container derives with a thread count (components/ollama.py).
                "model": f"ollama_chat/{served_model(ollama.model)}",
                "api_base": service_url(OLLAMA_SERVICE, settings.namespace, settings.cluster_domain, OLLAMA_PORT),
                "timeout": ollama.timeout_seconds,
                "max_retries": 0,
                "extra_body": dict(OLLAMA_NEVER_TRUNCATE),
            },
            api="ollama",
            api_path="",
            served_model=served_model(ollama.model),
            # Clients see the operator's model, not the derived one Ollama reports.
            answers_as=ollama.model,
            service=OLLAMA_SERVICE,
            port=OLLAMA_PORT,
            cooled_down=False,
            context_tokens=settings.gateway.context_tokens,
        ),
    )
    if not openai.enabled:
        return local
    cloud = Tier(
        name="openai",
        group=tier_group(client_group, "openai"),
        litellm_params={
            "model": f"openai/{openai.model}",
            "api_base": openai.api_base,
            "api_key": f"os.environ/{OPENAI_KEY_ENV}",
            "timeout": openai.timeout_seconds,
            "max_retries": 0,
        },
        api="openai",
        api_path="/v1",
        served_model=openai.model,
    )
    return (*local, cloud)


def longest_answer_seconds(chain: tuple[Tier, ...]) -> int:
    """The longest one request may take through the gateway: every tier tried to its own cap."""
    return sum(int(tier.litellm_params["timeout"]) for tier in chain)


def chain_names(settings: Settings) -> list[str]:
    return [tier.name for tier in failover_chain(settings)]

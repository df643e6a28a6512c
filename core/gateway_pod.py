"""The gateway pod's side of the config: its environment, its config directory, the checksum that
rolls it, and the URL clients reach it at. The same for the pod and for the drill.

Pure: no Pulumi import.
"""

from __future__ import annotations

import hashlib

from core.chain import Chain, longest_of
from core.litellm_config import render_config_yaml
from core.names import (
    CONFIG_FILE_NAME,
    GATEWAY_MODULES,
    GATEWAY_PORT,
    GATEWAY_SERVICE,
    MAX_REQUEST_BYTES_ENV,
    service_url,
)
from core.settings import GatewaySettings, Settings
from gateway.contract import CHAT_MODE


def gateway_url(settings: Settings) -> str:
    return service_url(GATEWAY_SERVICE, settings.namespace, settings.cluster_domain, GATEWAY_PORT)


def gateway_environment(gateway: GatewaySettings, every: tuple[Chain, ...]) -> dict[str, str]:
    """The gateway process's plain environment, for its pod and for the drill alike. No secret:
    keys come from Secrets (`secretKeyRef`) and reach the config only as `os.environ/NAME`."""
    off = "True"  # LiteLLM's switches read "True" as on
    return {
        "HOME": "/tmp",
        # The image points caches at /app/.cache, read-only in the pod.
        "XDG_CACHE_HOME": "/tmp/.cache",
        # On SIGTERM LiteLLM drains requests in flight for this long (its default, 30 s, cuts longer
        # answers): the longest answer any chain allows.
        "GRACEFUL_SHUTDOWN_TIMEOUT": str(longest_of(every)),
        "LITELLM_LOG": "ERROR",
        # The bundled model cost map, instead of fetching it at every start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # The front door (gateway/request_check.py) answers a larger body 413 before reading it.
        MAX_REQUEST_BYTES_ENV: str(gateway.max_request_bytes),
        # Without a key only the health probes answer, unless the operator turns these on
        # (litellm/proxy/utils.py reads NO_DOCS, NO_REDOC, NO_OPENAPI; admin_ui_utils.py DISABLE_ADMIN_UI).
        **({} if gateway.api_docs else {"NO_DOCS": off, "NO_REDOC": off, "NO_OPENAPI": off}),
        **({} if gateway.admin_ui else {"DISABLE_ADMIN_UI": off}),
        **({OPENAI_EMBEDDINGS_RETRIES_ENV: "0"} if _openai_embeddings(every) else {}),
    }


# LiteLLM's `openai/` embeddings read a deployment's `max_retries: 0` as "unset" and retry twice
# (`max_retries or litellm.DEFAULT_MAX_RETRIES`, llms/openai/openai.py): a failing or hung cloud
# would get 3 requests, and the chain's next step would wait for all of them. LiteLLM reads this
# default from the environment (constants.py). Set only where such a tier exists, so that other
# stacks' pods stay as they are.
OPENAI_EMBEDDINGS_RETRIES_ENV = "DEFAULT_MAX_RETRIES"


def _openai_embeddings(every: tuple[Chain, ...]) -> bool:
    """Whether any embeddings tier goes through LiteLLM's `openai/` provider (a cloud tier, or an
    endpoint with `api: openai`)."""
    return any(
        tier.mode != CHAT_MODE and tier.litellm_params["model"].startswith("openai/")
        for chain in every
        for tier in chain.tiers
    )


def gateway_files(settings: Settings) -> dict[str, str]:
    """Everything the gateway's config directory holds: the ConfigMap's data, byte for byte."""
    modules = {path.name: path.read_text() for path in GATEWAY_MODULES}
    return {CONFIG_FILE_NAME: render_config_yaml(settings)} | modules


def config_checksum(files: dict[str, str]) -> str:
    """Pod annotation `checksum/config`: any change to the config directory rolls the gateway pods."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()

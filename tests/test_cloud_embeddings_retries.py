"""A cloud embeddings tier gets one request per walk, as every other tier does.

LiteLLM's `openai/` embeddings read the deployment's `max_retries: 0` as unset and retry twice
(`max_retries or litellm.DEFAULT_MAX_RETRIES`, llms/openai/openai.py). The gateway pod's
environment sets that default to 0 where such a tier exists. This runs the installed LiteLLM in a
process of its own with the very environment the pod gets, against a cloud stand-in that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.chain import chains
from core.gateway_pod import OPENAI_EMBEDDINGS_RETRIES_ENV, gateway_environment
from core.settings import parse_settings
from core.stack_files import stack_config
from drill.runner import free_port
from drill.standins import OpenAIStandIn

EMBEDDING = {"model": "text-embedding-3-small", "dimensions": 1536}
LOCAL = {"endpoint": {"url": "http://embedder:8000/v1", "api": "vllm", "model": EMBEDDING["model"]}}
CLOUD = {"cloud": {"model": EMBEDDING["model"]}}

# What the router hands LiteLLM for the tier: the rendered `max_retries: 0`.
CALL = """
import asyncio, sys
import litellm

async def main():
    try:
        await litellm.aembedding(model="openai/text-embedding-3-small", input=["x"], api_base=sys.argv[1],
                                 api_key="x", max_retries=0, timeout=20)
    except Exception as error:
        print(type(error).__name__)

asyncio.run(main())
"""


def settings_with(tiers: list[dict]):
    chain = {"name": "embed", "kind": "embeddings", "tiers": [{**tier, "embedding": EMBEDDING} for tier in tiers]}
    return parse_settings({**stack_config("dev"), "chains": [chain]}, openai_key="secret")


def pod_environment(tiers: list[dict]) -> dict[str, str]:
    settings = settings_with(tiers)
    return gateway_environment(settings.gateway, chains(settings))


@pytest.fixture
def failing_cloud():
    cloud = OpenAIStandIn("openai", "gpt-4o-mini", free_port(), snapshot="gpt-4o-mini-2024-07-18").start()
    cloud.set_mode("error", status=500)
    yield cloud
    cloud.set_mode("up")
    cloud.stop()


def requests_received(cloud: OpenAIStandIn, environment: dict[str, str]) -> int:
    cloud.reset_counts()
    inherited = {key: value for key, value in os.environ.items() if key != OPENAI_EMBEDDINGS_RETRIES_ENV}
    done = subprocess.run(
        [sys.executable, "-c", CALL, f"{cloud.url}/v1"],
        env=inherited | environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "InternalServerError" in done.stdout, done.stdout + done.stderr
    return cloud.served["embeddings-received"]


def test_a_failing_cloud_embeddings_tier_gets_one_request(failing_cloud):
    environment = pod_environment([LOCAL, CLOUD])
    assert environment[OPENAI_EMBEDDINGS_RETRIES_ENV] == "0"
    assert requests_received(failing_cloud, environment) == 1
    # Without it, LiteLLM's own default: the same call reaches the cloud three times.
    assert requests_received(failing_cloud, {}) == 3


def test_stacks_without_such_a_tier_keep_their_pod_environment():
    assert OPENAI_EMBEDDINGS_RETRIES_ENV not in pod_environment([LOCAL])  # progress provider, not openai/
    default = parse_settings(stack_config("dev"), openai_key="secret")  # the cloud serves chat only
    assert OPENAI_EMBEDDINGS_RETRIES_ENV not in gateway_environment(default.gateway, chains(default))

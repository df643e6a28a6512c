"""A cloud embeddings tier gets one request per walk, as every other tier does.

LiteLLM's `openai/` embeddings read the deployment's `max_retries: 0` as unset and retry twice
(`max_retries or litellm.DEFAULT_MAX_RETRIES`, llms/openai/openai.py). The gateway pod's
environment sets that default to 0 where such a tier exists. This runs the installed LiteLLM in a
process of its own, through its Router on the rendered deployment and with the very environment
the pod gets, against a cloud stand-in that fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from core.chain import chains
from core.gateway_pod import OPENAI_EMBEDDINGS_RETRIES_ENV, gateway_environment
from core.litellm_config import render_config_yaml
from core.settings import parse_settings
from core.stack_files import stack_config
from drill.runner import free_port
from drill.standins import OpenAIStandIn

EMBEDDING = {"model": "text-embedding-3-small", "dimensions": 1536}
LOCAL = {"endpoint": {"url": "http://embedder:8000/v1", "api": "vllm", "model": EMBEDDING["model"]}}
CLOUD = {"cloud": {"model": EMBEDDING["model"]}}

# The rendered deployment, through LiteLLM's own Router with the rendered router retries.
CALL = """
import asyncio, json, sys
import litellm

async def main():
    deployment, retries = json.loads(sys.argv[1]), int(sys.argv[2])
    router = litellm.Router(model_list=[deployment], num_retries=retries)
    try:
        await router.aembedding(model=deployment["model_name"], input=["x"])
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


def cloud_deployment(tiers: list[dict], cloud_url: str) -> tuple[dict, int]:
    """The embeddings chain's cloud deployment as rendered (its URL the stand-in's), and the router's
    retries as rendered."""
    config = yaml.safe_load(render_config_yaml(settings_with(tiers)))
    (deployment,) = [entry for entry in config["model_list"] if entry["model_info"]["id"] == "embed-cloud"]
    assert deployment["litellm_params"]["max_retries"] == 0
    deployment["litellm_params"]["api_base"] = f"{cloud_url}/v1"
    return deployment, config["router_settings"]["num_retries"]


def requests_received(cloud: OpenAIStandIn, environment: dict[str, str]) -> int:
    cloud.reset_counts()
    deployment, retries = cloud_deployment([LOCAL, CLOUD], cloud.url)
    key_env = deployment["litellm_params"]["api_key"].removeprefix("os.environ/")
    inherited = {key: value for key, value in os.environ.items() if key != OPENAI_EMBEDDINGS_RETRIES_ENV}
    done = subprocess.run(
        [sys.executable, "-c", CALL, json.dumps(deployment), str(retries)],
        env=inherited | environment | {key_env: "sk-test"},
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


def test_an_openai_endpoint_embeddings_tier_gets_it_too():
    openai_endpoint = {"endpoint": {**LOCAL["endpoint"], "api": "openai"}}
    assert pod_environment([openai_endpoint])[OPENAI_EMBEDDINGS_RETRIES_ENV] == "0"


def test_stacks_without_such_a_tier_keep_their_pod_environment():
    assert OPENAI_EMBEDDINGS_RETRIES_ENV not in pod_environment([LOCAL])  # progress provider, not openai/
    default = parse_settings(stack_config("dev"), openai_key="secret")  # the cloud serves chat only
    assert OPENAI_EMBEDDINGS_RETRIES_ENV not in gateway_environment(default.gateway, chains(default))

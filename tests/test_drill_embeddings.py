"""An embeddings chain through the real LiteLLM proxy: vLLM (gateway/vllm_progress.py) then a second
tier serving the same model, on loopback stand-ins (tests/test_vllm_progress_embeddings.py).

The config is the entry an embeddings vLLM tier needs (docs/failover.md "Embeddings"), not yet one
the program renders: the proxy starts once for the module (~15 s). NFR65: the next tier answers
within 5 s of a failure; a busy vLLM keeps its requests; a 400 is the client's and stops the chain.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from core.names import CONTRACT_FILE, PROGRESS_HANDLER_FILE
from drill.runner import GatewayProcess
from tests.test_vllm_progress_embeddings import FIRST_TOKEN, NFR65_SECONDS, EmbeddingVllm, deployment

pytestmark = pytest.mark.drill

MASTER_KEY = "sk-embeddings-drill"
GROUP = "embed"


class InThread:
    """A stand-in served from its own event loop on a thread: the test blocks on the proxy meanwhile."""

    def __init__(self, server: EmbeddingVllm) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> EmbeddingVllm:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def chain_config(vllm_base: str, second_base: str) -> dict:
    """vLLM's embeddings tier (the entry docs/failover.md describes), then a second tier with the
    same model, with the chat chain's router rules (core/litellm_config.py `_router_settings`)."""
    return {
        "model_list": [
            {
                "model_name": GROUP,
                "litellm_params": deployment(vllm_base),
                "model_info": {
                    "id": "vllm",
                    "mode": "embedding",
                    "health_check_timeout": 4,
                    "health_check_params": {"engine_probe": True},
                    "allowed_fails_policy": {"TimeoutErrorAllowedFails": 0},
                },
            },
            {
                "model_name": f"{GROUP}-ollama",
                "litellm_params": {"model": "openai/bge-m3", "api_base": second_base, "api_key": "none"},
                "model_info": {"id": "ollama", "mode": "embedding"},
            },
        ],
        "router_settings": {
            "fallbacks": [{GROUP: [f"{GROUP}-ollama"]}],
            "fallback_on_unsupported_params": False,
            "num_retries": 0,
            "retry_after": 0,
            "allowed_fails": 0,
            "cooldown_time": 10,
        },
        "litellm_settings": {
            "num_retries": 0,
            "custom_provider_map": [{"provider": "vllm-progress", "custom_handler": "vllm_progress.handler"}],
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            "background_health_checks": True,
            "health_check_interval": 5,
            "enable_health_check_routing": True,
            "background_health_check_model_groups": [GROUP],
        },
    }


@pytest.fixture(scope="module")
def chain():
    vllm_thread, second_thread = InThread(EmbeddingVllm(mark=0.25)), InThread(EmbeddingVllm(mark=0.75))
    vllm, second = vllm_thread.start(), second_thread.start()
    workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-embeddings-"))
    (workdir / "config.yaml").write_text(yaml.safe_dump(chain_config(vllm.api_base, second.api_base)))
    for plugin in (PROGRESS_HANDLER_FILE, CONTRACT_FILE):  # the provider imports the contract beside it
        shutil.copy(plugin, workdir / plugin.name)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "*",
    }
    command = [str(Path(sys.executable).with_name("litellm")), "--config", str(workdir / "config.yaml")]
    gateway = GatewayProcess(command, env, workdir)
    try:
        gateway.start()
        yield gateway, vllm, second
    finally:
        gateway.stop()
        vllm_thread.stop()
        second_thread.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def embed(gateway: GatewayProcess, route: str = "/v1/embeddings", **body) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}{route}",
        json={"model": GROUP, "input": ["hello"], **body},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
        trust_env=False,
    )
    return response, time.monotonic() - started


def test_openais_sdk_gets_vllms_vectors_in_the_encoding_it_asked_for(chain):
    gateway, vllm, second = chain
    vllm.mode, vllm.received[:] = "up", []
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, http_client=httpx.Client(trust_env=False))
    answer = client.embeddings.with_raw_response.create(model=GROUP, input=["hello", "world"])
    assert answer.headers["x-litellm-model-id"] == "vllm"
    vectors = [item.embedding for item in answer.parse().data]
    assert vectors == [[0.25, 0.5, 0.0], [0.25, 0.5, 1.0]]  # sent as base64 (the SDK's default), decoded by it
    assert vllm.received[-1]["encoding_format"] == "base64"
    floats = client.embeddings.create(model=GROUP, input="hi", encoding_format="float")
    assert floats.data[0].embedding == [0.25, 0.5, 0.0] and vllm.received[-1]["encoding_format"] == "float"
    response, _ = embed(gateway, route="/embeddings")  # LiteLLM's route without /v1
    assert response.status_code == 200 and response.headers["x-litellm-model-id"] == "vllm"
    assert second.received == []


def test_a_busy_vllm_keeps_the_request_and_its_probe_passes(chain):
    gateway, vllm, second = chain
    vllm.mode, vllm.delay = "busy", FIRST_TOKEN + 2.5
    probe_result: list[dict] = []
    with httpx.Client(trust_env=False) as probe:
        waiting = threading.Thread(target=lambda: probe_result.append(health(probe, gateway)))
        waiting.start()  # the on-demand health check, while the request below waits in vLLM
        response, took = embed(gateway)
        waiting.join(30)
    tier = response.headers.get("x-litellm-model-id")
    print(f"\n[embeddings drill] busy vLLM, a {vllm.delay:g} s answer: {tier}'s after {took:.2f} s")
    assert response.status_code == 200 and response.headers["x-litellm-model-id"] == "vllm"
    assert response.json()["data"][0]["embedding"] == [0.25, 0.5, 0.0]
    assert second.received == []
    assert [entry["model_id"] for entry in probe_result[0]["healthy_endpoints"]] == ["vllm"], probe_result


def health(client: httpx.Client, gateway: GatewayProcess) -> dict:
    time.sleep(1.5)  # the request is in vLLM by then
    response = client.get(
        f"{gateway.url}/health", params={"model": GROUP}, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    )
    return response.json()


def test_a_400_reaches_the_client_and_no_other_tier(chain):
    gateway, vllm, second = chain
    vllm.mode = 400
    response, _ = embed(gateway)
    assert response.status_code == 400, response.text
    assert second.received == []


def test_a_frozen_vllm_is_answered_by_the_next_tier_within_nfr65(chain):
    gateway, vllm, second = chain
    vllm.mode = "frozen"
    response, took = embed(gateway)
    print(f"\n[embeddings drill] frozen vLLM: {response.headers.get('x-litellm-model-id')}'s answer after {took:.2f} s")
    assert response.status_code == 200 and response.headers["x-litellm-model-id"] == "ollama"
    assert response.json()["data"][0]["embedding"] == [0.75, 0.5, 0.0]
    assert took < NFR65_SECONDS
    # vLLM is cooled down: the next request goes to the next tier at once.
    again, took_again = embed(gateway)
    print(f"[embeddings drill] the next request: {again.headers.get('x-litellm-model-id')} after {took_again:.3f} s")
    assert again.headers["x-litellm-model-id"] == "ollama" and took_again < 1.0
    assert [body["model"] for body in second.received] == ["bge-m3", "bge-m3"]

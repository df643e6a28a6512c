"""An embeddings chain through the real LiteLLM proxy, on the config the program renders.

The dev stack's chat chain plus `embed`: bge-m3 on vLLM (gateway/vllm_progress.py), then the same
model on the shared Ollama, and no cloud (OpenAI does not serve bge-m3). Stand-ins fail as the real
servers fail (drill/standins.py): refused, hung, busy, a 400. Every answer is checked to be the same
model's vector, and the cloud stand-in to have received nothing. NFR65: the next tier answers within
5 s of a failure; asserted with that limit, the measured figures printed.
"""

from __future__ import annotations

import base64
import threading
import time

import numpy
import pytest

from core.settings import parse_settings
from core.stack_files import stack_config
from drill.client import chat, embed
from drill.load import ROLLING_PHASES, run_load
from drill.load import table as load_table
from drill.runner import Drill

pytestmark = pytest.mark.drill

FAILOVER_LIMIT_SECONDS = 5.0  # NFR65
EMBED = "embed"
BGE = {"model": "BAAI/bge-m3", "dimensions": 1024}
CHAINS = [
    {
        "name": EMBED,
        "kind": "embeddings",
        "tiers": [
            {"vllm": {"model": "BAAI/bge-m3", "gpuCount": 0}, "embedding": BGE},
            {
                "ollama": {"model": "bge-m3:567m", "modelMemory": "1200Mi", "memoryPerContextToken": 20000},
                "embedding": BGE,
            },
        ],
    }
]


def settings():
    config = stack_config("dev")
    config["ollama"] = {
        **config["ollama"],
        "resources": {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"memory": "10Gi"}},
    }
    return parse_settings({**config, "chains": CHAINS}, openai_key="secret")


@pytest.fixture(scope="module")
def drill():
    with Drill(settings()) as running:
        yield running


@pytest.fixture
def fresh(drill):
    """Every tier up, and vLLM out of any cooldown an earlier test left (the probe brings it back)."""
    drill.all_up()
    deadline = time.monotonic() + 30
    while embed(drill.url, EMBED, "back?").tier != "embed-vllm":
        assert time.monotonic() < deadline, "vLLM did not come back within 30 s"
        time.sleep(0.5)
    drill.reset_counts()
    yield drill
    drill.all_up()


def vectors(answer) -> list[numpy.ndarray]:
    assert answer.status == 200, answer.body
    assert answer.body["object"] == "list" and answer.body["model"]
    return [numpy.asarray(item["embedding"], dtype=numpy.float32) for item in answer.body["data"]]


def report(label: str, seconds: float) -> None:
    print(f"\n[embeddings] {label}: {seconds:.3f} s")


def test_all_up_vllm_embeds_and_the_vector_is_the_models(fresh):
    answer = embed(fresh.url, EMBED, ["a first text", "a second"])
    first, second = vectors(answer)
    assert answer.tier == "embed-vllm" and first.shape == (1024,)
    assert not numpy.allclose(first, second)
    assert fresh.standins["embed-ollama"].embedding_requests == 0


def test_vllm_refused_ollama_answers_fast_with_the_same_vector(fresh):
    healthy = vectors(embed(fresh.url, EMBED, "the same text"))[0]
    fresh.standins["embed-vllm"].set_mode("down")
    answers = [embed(fresh.url, EMBED, "the same text") for _ in range(5)]
    slowest = max(answer.seconds for answer in answers)
    report("refused vLLM → Ollama, slowest of 5", slowest)
    for answer in answers:
        assert answer.tier == "embed-ollama"
        assert numpy.array_equal(vectors(answer)[0], healthy)  # comparable: one model, two tiers
    assert slowest < FAILOVER_LIMIT_SECONDS
    assert answers[0].body["model"] == "bge-m3:567m"  # the operator's model, not ollama/<derived tag>
    # OpenAI's SDK asks for base64 by default: Ollama answers floats, the gateway packs them.
    packed = embed(fresh.url, EMBED, "the same text", encoding_format="base64")
    assert packed.tier == "embed-ollama", packed.body
    as_floats = numpy.frombuffer(base64.b64decode(packed.body["data"][0]["embedding"]), dtype="<f4")
    assert numpy.array_equal(as_floats, healthy)
    assert fresh.cloud.client_requests == 0


def test_vllm_hung_ollama_answers_within_nfr65(fresh):
    fresh.standins["embed-vllm"].set_mode("hang")
    answer = embed(fresh.url, EMBED, "a text for a hung engine", timeout=30)
    report("hung vLLM → Ollama", answer.seconds)
    assert answer.tier == "embed-ollama" and len(vectors(answer)) == 1
    assert answer.seconds < FAILOVER_LIMIT_SECONDS
    assert fresh.cloud.client_requests == 0


def test_a_busy_vllm_keeps_its_requests(fresh):
    """Saturated but progressing: every request waits for vLLM, none is moved to the CPU tier."""
    fresh.standins["embed-vllm"].set_mode("slow", delay=1.5, slots=1)
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(embed(fresh.url, EMBED, "busy", timeout=60))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    slowest = max(answer.seconds for answer in answers)
    report("6 requests on a 1-slot vLLM at 1.5 s each, slowest", slowest)
    assert [answer.tier for answer in answers] == ["embed-vllm"] * 6
    assert fresh.standins["embed-ollama"].embedding_requests == 0


def test_a_400_stops_the_chain(fresh):
    fresh.standins["embed-vllm"].set_mode("error", status=400)
    answer = embed(fresh.url, EMBED, "refused by the model")
    assert answer.status == 400, answer.body
    assert fresh.standins["embed-ollama"].embedding_requests == 0
    assert fresh.cloud.client_requests == 0


def test_both_tiers_down_is_a_503_and_never_the_cloud(fresh):
    fresh.standins["embed-vllm"].set_mode("down")
    fresh.standins["embed-ollama"].set_mode("down")
    answer = embed(fresh.url, EMBED, "nowhere to go")
    assert answer.status == 503, answer.body
    assert answer.body["error"]["provider_specific_fields"] == {"reason": "no_tier_available"}
    assert fresh.cloud.client_requests == 0


def test_each_route_serves_its_own_chain(fresh):
    assert embed(fresh.url, "chat", "x").status == 404

    assert chat(fresh.url, EMBED).status == 404
    assert chat(fresh.url, "chat").status == 200


def test_an_input_over_the_context_is_refused_before_any_tier(fresh):
    answer = embed(fresh.url, EMBED, "word " * 9000)
    assert answer.status == 400 and answer.body["error"]["param"] == "input", answer.body
    assert fresh.standins["embed-vllm"].embedding_requests == 0
    assert fresh.standins["embed-ollama"].embedding_requests == 0


def test_load_through_crashes_on_both_chains_loses_nothing(fresh):
    reports = run_load(fresh, stream=False, phase_seconds=5, phases=ROLLING_PHASES)
    print("\n" + load_table(reports, False))
    for phase in reports:
        assert phase.sent > 20 and phase.failed == 0, phase
        assert phase.cloud_received == 0, phase
    all_up, gpus_down, _, ollama_down, back = reports
    assert gpus_down.tiers["vllm"] == 0 and gpus_down.tiers["embed-vllm"] == 0
    assert gpus_down.tiers["ollama"] > 0 and gpus_down.tiers["embed-ollama"] > 0
    assert ollama_down.tiers["embed-ollama"] == 0 and ollama_down.tiers["ollama"] == 0
    assert all_up.tiers["embed-vllm"] > 0 and back.tiers["embed-vllm"] > 0

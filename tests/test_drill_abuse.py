"""Issue 22, items 2 and 3, through the real proxy: more streams than httpx's default pool held, and
clients that leave. The handler's own rules (items 4, 5) are in tests/test_vllm_progress_abuse.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter

import httpx
import pytest

from core.chain import vllm_connections
from core.stack_files import stack_settings
from drill.client import DRILL_MASTER_KEY, chat
from drill.runner import Drill
from drill.saturation import answers, send_at_once

pytestmark = pytest.mark.drill

POOL_OF_32 = 64  # the gateway's connections to a vLLM with --max-num-seqs 32 (twice its batch)
HTTPX_DEFAULT_POOL = 100  # what the provider's client once held: the 101st stream waited in the gateway
STREAMS = 130
LEFT_WITHIN_SECONDS = 2.0
DEV = stack_settings("dev")


def test_more_streams_than_the_old_pool_all_run_on_vllm_and_the_probe_does_not_bench_it(fresh):
    vllm = fresh.standins["vllm"]
    vllm.set_mode("slow", delay=12, tokens=12)  # a token a second: busy and progressing, never hung
    futures = send_at_once(fresh.url, fresh.settings.gateway.model_name, STREAMS, stream=True)
    # By now the background probe has run at least once during the load (every 5 s, 4 s timeout).
    time.sleep(fresh.settings.gateway.health_check_interval_seconds + 4)
    during = chat(fresh.url, fresh.settings.gateway.model_name, "during the load", timeout=30)
    done = answers(futures)
    tiers = sorted({answer.tier for answer in done})
    served = Counter(answer.tier for answer in done)
    print(f"\n[drill] {STREAMS} streams: vLLM ran {vllm.peak_running} at once; {dict(served)}; mid-load {during.tier}")
    assert vllm.peak_running > HTTPX_DEFAULT_POOL
    assert tiers == ["vllm"] and during.tier == "vllm"  # no cooldown from a probe queued behind traffic


def test_a_full_pool_to_vllm_does_not_blind_the_probe():
    # vLLM runs 32 sequences, so each gateway process holds 64 connections to it; 80 streams fill
    # them and 16 wait in the gateway. The probe (every 5 s) has a client of its own: on the shared
    # pool it would queue behind the 16, time out, and vLLM would be cooled down mid-load.
    settings = dataclasses.replace(DEV, vllm=dataclasses.replace(DEV.vllm, extra_args=("--max-num-seqs", "32")))
    assert vllm_connections(settings.vllm.extra_args) == POOL_OF_32
    with Drill(settings) as drill:
        vllm = drill.standins["vllm"]
        vllm.set_mode("slow", delay=12, tokens=12)
        futures = send_at_once(drill.url, settings.gateway.model_name, POOL_OF_32 + 16, stream=True)
        time.sleep(settings.gateway.health_check_interval_seconds + 4)  # a probe came while the pool was full
        probed = vllm.served["health"]
        done = answers(futures)
    served = Counter(answer.tier for answer in done)
    print(f"\n[drill] {POOL_OF_32 + 16} streams, pool {POOL_OF_32}: vLLM ran {vllm.peak_running}, {probed} probes")
    print(f"[drill] served: {dict(served)}")
    # The pool was full and the rest waited in the gateway (one more: an idle-engine probe's token).
    assert POOL_OF_32 <= vllm.peak_running <= POOL_OF_32 + 1
    assert probed >= 1 and set(served) == {"vllm"}


def stream_then_leave(base_url: str, model: str, after_chunks: int) -> float:
    """A streaming client that reads `after_chunks` events and hangs up; when it did."""
    payload = {"model": model, "messages": [{"role": "user", "content": "leave"}], "stream": True}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    url = f"{base_url}/v1/chat/completions"
    with (
        httpx.Client(timeout=30, trust_env=False) as client,
        client.stream("POST", url, json=payload, headers=headers) as response,
    ):
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen >= after_chunks:
                break
    return time.monotonic()


def wait_then_leave(base_url: str, model: str, seconds: float, stream: bool = False) -> float:
    """A client that gives up after `seconds` without an answer (its read timeout); when it did."""
    try:
        answer = chat(base_url, model, "leave", stream=stream, timeout=seconds)
    except httpx.TimeoutException:
        return time.monotonic()
    raise AssertionError(f"answered before its client left: {answer.status} {answer.seconds:.1f} s {answer.body}")


def wait_for(condition, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def aborting(vllm) -> None:
    """vLLM aborts the request of a client that left: the stand-in does so once its port reopens."""
    vllm.aborts_when_client_leaves = True
    vllm.set_mode("down")


def seconds_until_abandoned(vllm, left: float, state: str) -> float | None:
    """How long after its client left vLLM dropped a request it held in `state`; None: it did not."""
    wait_for(lambda: any(kind == state for _, kind in vllm.abandoned), limit=8)
    return next((at - left for at, kind in vllm.abandoned if kind == state), None)


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_a_client_that_leaves_mid_answer_stops_vllm_generating(fresh, stream):
    vllm = fresh.standins["vllm"]
    aborting(vllm)
    vllm.set_mode("slow", delay=30, tokens=60)  # two tokens a second for 30 s
    model = fresh.settings.gateway.model_name
    left = stream_then_leave(fresh.url, model, 6) if stream else wait_then_leave(fresh.url, model, 3)
    tokens_when_left = vllm.generated_tokens
    gone = seconds_until_abandoned(vllm, left, "generating")
    extra = vllm.generated_tokens - tokens_when_left
    print(f"\n[drill] {'stream' if stream else 'plain'} client left: upstream gone after {gone} s, +{extra} tokens")
    assert gone is not None and gone < LEFT_WITHIN_SECONDS


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_a_client_that_leaves_while_queued_leaves_vllms_queue(fresh, stream):
    vllm = fresh.standins["vllm"]
    aborting(vllm)
    vllm.set_mode("slow", delay=30, tokens=60, slots=1)
    model = fresh.settings.gateway.model_name
    # The one slot is taken by a client that stays until the test is done with the queue.
    blocker = threading.Thread(target=stream_then_leave, args=(fresh.url, model, 24), daemon=True)
    blocker.start()
    wait_for(lambda: vllm.running == 1)
    left = wait_then_leave(fresh.url, model, 3, stream=stream)
    gone = seconds_until_abandoned(vllm, left, "queued")
    waiting_after = vllm.waiting
    blocker.join(20)
    print(f"\n[drill] queued {'stream' if stream else 'plain'} client left: out of vLLM's queue after {gone} s")
    assert gone is not None and gone < LEFT_WITHIN_SECONDS and waiting_after == 0


def post_chat(base_url: str, model: str, **fields) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "two answers"}], **fields}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    with httpx.Client(timeout=30, trust_env=False) as client:
        return client.post(f"{base_url}/v1/chat/completions", json=payload, headers=headers)


def test_n_choices_and_logprobs_reach_the_client_as_vllm_produced_them(fresh):
    answer = post_chat(fresh.url, fresh.settings.gateway.model_name, n=2, logprobs=True)
    choices = answer.json()["choices"]
    assert answer.status_code == 200 and answer.headers["x-litellm-model-id"] == "vllm"
    assert [choice["message"]["content"] for choice in choices] == [
        "[vllm] c0w1 c0w2 c0w3 c0w4 c0w5 c0w6 c0w7",
        "[vllm] c1w1 c1w2 c1w3 c1w4 c1w5 c1w6 c1w7",
    ]
    assert [entry["token"] for entry in choices[1]["logprobs"]["content"]][:2] == ["[vllm]", "c1w1"]


def test_a_stream_asking_for_what_it_cannot_carry_is_refused_and_nothing_is_cooled_down(fresh):
    refused = post_chat(fresh.url, fresh.settings.gateway.model_name, n=2, stream=True)
    assert refused.status_code == 400 and "stream=false" in refused.text
    assert fresh.counts() == {"vllm": 0, "ollama": 0, "openai": 0}
    assert chat(fresh.url, fresh.settings.gateway.model_name).tier == "vllm"

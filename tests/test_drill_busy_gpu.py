"""A busy GPU is not a dead one (the real LiteLLM proxy, the dev stack's rendered config).

The vLLM stand-in has 2 sequence slots and a queue, as vLLM has once its batch is full: a
streaming request gets its headers at once and no event while it waits. The gateway must keep
such requests on vLLM while the engine makes progress for anyone, and still give up on a frozen
engine within the limits. Figures are printed with `-s`.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from components.stack_files import stack_settings
from drill.client import chat
from drill.runner import Drill

pytestmark = pytest.mark.drill

MODEL = "chat"
SETTINGS = stack_settings("dev")
SLOTS, ANSWER_SECONDS, CONCURRENT = 2, 3.0, 12
FREEZE_SETTLE_LIMIT = 8.0  # the bound: the last in-flight request answered within 8 s of a freeze


@pytest.fixture(scope="module")
def drill():
    with Drill(SETTINGS) as running:
        yield running


@pytest.fixture
def fresh(drill):
    drill.all_up()
    wait_for_vllm(drill)
    drill.reset_counts()
    return drill


def wait_for_vllm(drill: Drill, limit: float = 30.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if chat(drill.url, MODEL).tier == "vllm":
            return
        time.sleep(0.5)
    raise AssertionError(f"the gateway did not route to vLLM within {limit} s")


def saturate(drill: Drill, requests: int = CONCURRENT, stream: bool = False):
    drill.standins["vllm"].set_mode("slow", delay=ANSWER_SECONDS, slots=SLOTS)
    pool = ThreadPoolExecutor(requests)
    futures = [pool.submit(chat, drill.url, MODEL, f"busy {i}", stream, 90) for i in range(requests)]
    return pool, futures


def test_a_saturated_vllm_keeps_its_whole_queue_and_ollama_gets_no_prompt(fresh):
    pool, futures = saturate(fresh)
    answers = [future.result() for future in futures]
    pool.shutdown()
    tiers = [answer.tier for answer in answers]
    slowest = max(answer.seconds for answer in answers)
    print(f"\n[drill] 12 requests on a 2-slot vLLM (3 s answers): tiers {tiers}, last answered at {slowest:.1f} s")
    assert tiers == ["vllm"] * CONCURRENT
    assert all(answer.status == 200 for answer in answers)
    # The queue really was a queue: the last request waited for five rounds before its own.
    assert slowest >= (CONCURRENT / SLOTS - 1) * ANSWER_SECONDS
    assert fresh.standins["ollama"].served["client-received"] == 0
    # vLLM was not cooled down: it serves the next requests.
    assert [chat(fresh.url, MODEL, timeout=30).tier for _ in range(3)] == ["vllm"] * 3
    assert fresh.counts()["openai"] == 0


def test_the_engine_freezing_under_load_settles_every_request_quickly(fresh):
    pool, futures = saturate(fresh)
    time.sleep(ANSWER_SECONDS + 1)  # some answers done, some running, the rest queued
    fresh.standins["vllm"].set_mode("freeze")
    frozen_at = time.monotonic()
    answers = [future.result() for future in futures]
    settled = max(time.monotonic() - frozen_at, 0.0)
    pool.shutdown()
    tiers = [answer.tier for answer in answers]
    print(f"\n[drill] engine froze under load: tiers {tiers}; every request settled {settled:.1f} s after the freeze")
    assert all(answer.status == 200 for answer in answers), [a.body for a in answers if a.status != 200]
    assert set(tiers) == {"vllm", "ollama"}
    assert settled < FREEZE_SETTLE_LIMIT
    assert fresh.counts()["openai"] == 0
    # A frozen engine is cooled down: the next request skips it at once.
    after = chat(fresh.url, MODEL, timeout=30)
    assert after.tier == "ollama" and after.seconds < 1.0


def test_a_busy_engine_is_not_cooled_down_by_the_background_probe(fresh):
    # Saturated for longer than two probe cycles: probes see /health and progress, not a queue.
    pool, futures = saturate(fresh, requests=16, stream=True)
    answers = [future.result() for future in futures]
    pool.shutdown()
    assert [a.tier for a in answers] == ["vllm"] * 16
    assert all(a.content == " ".join(fresh.standins["vllm"].words()) for a in answers)
    assert fresh.standins["vllm"].served["probe-received"] <= 2  # at most the idle one-token checks
    assert chat(fresh.url, MODEL).tier == "vllm"


def test_after_ollama_restarts_the_first_failover_does_not_pay_the_cold_load(fresh):
    ollama = fresh.standins["ollama"]
    ollama.cold_load = 3.0
    fresh.standins["vllm"].set_mode("down")
    try:
        ollama.restart(preload=False)  # what a pod without the warm-up would do
        cold = chat(fresh.url, MODEL, timeout=30)
        ollama.restart(preload=True)  # the deployed pod: the start-up hook loads, then it is ready
        warm = chat(fresh.url, MODEL, timeout=30)
    finally:
        ollama.cold_load = 0.0
    print(f"\n[drill] first failover after an Ollama restart: {cold.seconds:.2f} s cold, {warm.seconds:.2f} s warm")
    assert cold.tier == warm.tier == "ollama"
    assert cold.seconds >= 3.0
    assert warm.seconds < 1.0
    assert fresh.counts()["openai"] == 0


def test_with_a_queue_budget_only_the_requests_over_it_spill_and_vllm_keeps_serving():
    budget = 5
    settings = dataclasses.replace(SETTINGS, vllm=dataclasses.replace(SETTINGS.vllm, max_queue_seconds=budget))
    with Drill(settings) as budgeted:
        wait_for_vllm(budgeted)
        budgeted.reset_counts()
        pool, futures = saturate(budgeted)
        answers = [future.result() for future in futures]
        pool.shutdown()
        tiers = [answer.tier for answer in answers]
        spilled = [a for a in answers if a.tier == "ollama"]
        print(
            f"\n[drill] queue budget {budget} s: tiers {tiers}; spilled after {[round(a.seconds, 1) for a in spilled]}"
        )
        assert all(answer.status == 200 for answer in answers)
        # Rounds start every 3 s: the requests of the first two rounds start within the budget.
        assert tiers.count("vllm") >= 2 * SLOTS
        assert spilled, "nothing went over the budget"
        assert all(budget <= a.seconds < budget + 2 for a in spilled)
        # A spill is not a failure: vLLM is not cooled down, the next requests go to it.
        assert [chat(budgeted.url, MODEL, timeout=30).tier for _ in range(3)] == ["vllm"] * 3
        assert budgeted.counts()["openai"] == 0

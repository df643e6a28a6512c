"""A busy GPU is not a dead one (the real LiteLLM proxy, the dev stack's rendered config).

The vLLM stand-in has 2 sequence slots and a queue, as vLLM has once its batch is full: a
streaming request gets its headers at once and no event while it waits. The gateway must keep
such requests on vLLM while the engine makes progress for anyone, and still give up on a frozen
engine within the limits. Figures are printed with `-s`.
"""

from __future__ import annotations

import dataclasses

import pytest

from core.stack_files import stack_settings
from drill.client import chat
from drill.runner import Drill
from drill.saturation import ANSWER_SECONDS, CONCURRENT, SLOTS, answers, freeze_under_load, saturate

pytestmark = pytest.mark.drill

MODEL = "chat"
SETTINGS = stack_settings("dev")
FREEZE_SETTLE_LIMIT = 8.0  # the bound: the last in-flight request answered within 8 s of a freeze


def test_a_saturated_vllm_keeps_its_whole_queue_and_ollama_gets_no_prompt(fresh):
    done = answers(saturate(fresh))
    tiers = [answer.tier for answer in done]
    slowest = max(answer.seconds for answer in done)
    print(f"\n[drill] 12 requests on a 2-slot vLLM (3 s answers): tiers {tiers}, last answered at {slowest:.1f} s")
    assert tiers == ["vllm"] * CONCURRENT
    assert all(answer.status == 200 for answer in done)
    # The queue really was a queue: the last request waited for five rounds before its own.
    assert slowest >= (CONCURRENT / SLOTS - 1) * ANSWER_SECONDS
    assert fresh.standins["ollama"].served["client-received"] == 0
    # vLLM was not cooled down: it serves the next requests.
    assert [chat(fresh.url, MODEL, timeout=30).tier for _ in range(3)] == ["vllm"] * 3
    assert fresh.counts()["openai"] == 0


def test_the_engine_freezing_under_load_settles_every_request_quickly(fresh):
    settled, done = freeze_under_load(fresh)
    tiers = [answer.tier for answer in done]
    print(f"\n[drill] engine froze under load: tiers {tiers}; every request settled {settled:.1f} s after the freeze")
    assert all(answer.status == 200 for answer in done), [a.body for a in done if a.status != 200]
    assert set(tiers) == {"vllm", "ollama"}
    assert settled < FREEZE_SETTLE_LIMIT
    assert fresh.counts()["openai"] == 0
    # A frozen engine is cooled down: the next request skips it at once.
    after = chat(fresh.url, MODEL, timeout=30)
    assert after.tier == "ollama" and after.seconds < 1.0


def test_a_busy_engine_is_not_cooled_down_by_the_background_probe(fresh):
    # Saturated for longer than two probe cycles: probes see /health and progress, not a queue.
    done = answers(saturate(fresh, requests=16, stream=True))
    assert [a.tier for a in done] == ["vllm"] * 16
    assert all(a.content == " ".join(fresh.standins["vllm"].words()) for a in done)
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
        budgeted.wait_for_tier("vllm")
        budgeted.reset_counts()
        done = answers(saturate(budgeted))
        tiers = [answer.tier for answer in done]
        spilled = [a for a in done if a.tier == "ollama"]
        print(
            f"\n[drill] queue budget {budget} s: tiers {tiers}; spilled after {[round(a.seconds, 1) for a in spilled]}"
        )
        assert all(answer.status == 200 for answer in done)
        # Rounds start every 3 s: the requests of the first two rounds start within the budget.
        assert tiers.count("vllm") >= 2 * SLOTS
        assert spilled, "nothing went over the budget"
        assert all(budget <= a.seconds < budget + 2 for a in spilled)
        # A spill is not a failure: vLLM is not cooled down, the next requests go to it.
        assert [chat(budgeted.url, MODEL, timeout=30).tier for _ in range(3)] == ["vllm"] * 3
        assert budgeted.counts()["openai"] == 0

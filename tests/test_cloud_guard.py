"""The cloud tier's spend guard: settings, rendering, and the guard's own arithmetic."""

import asyncio
import time
import tracemalloc

import litellm
import pytest

from core.declarations import ConfigError
from core.litellm_config import litellm_config
from core.names import CLOUD_GUARD_FILE
from core.settings import parse_settings
from tests.test_fallback import _gateway_module


def load_guard_module():
    return _gateway_module(CLOUD_GUARD_FILE)  # as LiteLLM loads it: by path, a fresh module each time


def cloud_entry(raw):
    return litellm_config(parse_settings(raw, openai_key="secret"))["model_list"][-1]


def test_limits_are_rendered_on_the_cloud_tier_only():
    config = litellm_config(
        parse_settings({"openai": {"rpm": 3, "tpm": 1000, "maxBudgetUsd": 5, "budgetPeriod": "1d"}}, "secret")
    )
    guards = {entry["model_info"]["id"]: entry["model_info"].get("spend_guard") for entry in config["model_list"]}
    assert guards == {
        "vllm": None,
        "ollama": None,
        "openai": {"rpm": 3, "tpm": 1000, "max_budget_usd": 5.0, "budget_period_seconds": 86400},
    }
    assert "spend_guard" not in cloud_entry({})["model_info"]  # off by default


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"openai": {"rpm": 0}}, "llm-gateway:openai.rpm"),
        ({"openai": {"tpm": "many"}}, "llm-gateway:openai.tpm"),
        ({"openai": {"maxBudgetUsd": -1}}, "llm-gateway:openai.maxBudgetUsd"),
        ({"openai": {"maxBudgetUsd": True}}, "llm-gateway:openai.maxBudgetUsd"),
        ({"openai": {"budgetPeriod": "weekly"}}, "llm-gateway:openai.budgetPeriod"),
    ],
)
def test_bad_limits_name_the_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, openai_key="secret")
    assert str(caught.value).startswith(key + " ")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Usage:
    def __init__(self, total_tokens):
        self.total_tokens = total_tokens


class Response:
    def __init__(self, total_tokens):
        self.usage = Usage(total_tokens)


def check(guard, deployment):
    return asyncio.run(guard.async_pre_call_check(deployment, None))


def succeed(guard, deployment, tokens=10, cost=0.0):
    kwargs = {"litellm_params": {"model_info": deployment["model_info"]}, "response_cost": cost}
    asyncio.run(guard.async_log_success_event(kwargs, Response(tokens), None, None))


def test_rpm_admits_exactly_the_limit_per_sliding_minute():
    module, clock = load_guard_module(), FakeClock()
    guard = module.CloudGuard(clock=clock)
    cloud = {"model_info": {"id": "openai", "spend_guard": {"rpm": 3}}, "litellm_params": {"model": "openai/x"}}
    for _ in range(3):
        check(guard, cloud)
    with pytest.raises(litellm.RateLimitError, match="3 requests per minute"):
        check(guard, cloud)
    clock.now += 59.9
    with pytest.raises(litellm.RateLimitError):
        check(guard, cloud)
    clock.now += 0.2  # the first three fall out of the window
    check(guard, cloud)


def test_tpm_and_budget_count_what_the_cloud_answered():
    module, clock = load_guard_module(), FakeClock()
    guard = module.CloudGuard(clock=clock)
    limits = {"tpm": 100, "max_budget_usd": 1.0, "budget_period_seconds": 3600}
    cloud = {"model_info": {"id": "openai", "spend_guard": limits}, "litellm_params": {"model": "openai/x"}}
    check(guard, cloud)
    succeed(guard, cloud, tokens=100, cost=0.4)
    with pytest.raises(litellm.RateLimitError, match="100 tokens per minute"):
        check(guard, cloud)
    clock.now += 61
    check(guard, cloud)
    succeed(guard, cloud, tokens=1, cost=0.7)
    with pytest.raises(litellm.RateLimitError, match="budget"):
        check(guard, cloud)
    clock.now += 3600
    check(guard, cloud)


def test_local_tiers_are_never_limited():
    module = load_guard_module()
    guard = module.CloudGuard(clock=FakeClock())
    local = {"model_info": {"id": "vllm"}, "litellm_params": {"model": "vllm-progress/x"}}
    for _ in range(1000):
        assert check(guard, local) is None


def test_a_window_forgets_an_amount_never_early_and_at_most_a_thousandth_late():
    window = load_guard_module()._Window()  # a 64 s window: slots of 64 ms, times exact in binary
    window.add(1, 64, now=0.0)
    window.add(1, 64, now=0.0625)  # within a thousandth of the window: the same slot
    window.add(1, 64, now=0.125)  # a slot of its own
    assert window.total(64, now=63.9375) == 3
    assert window.total(64, now=64.03125) == 3  # the first is 64.03 s old: still counted, 0.03 s late
    assert window.total(64, now=64.0625) == 1
    assert window.total(64, now=64.125) == 0


async def cloud_calls(guard, deployment, clock, count: int, step: float, deadline: float) -> int:
    """`count` admitted cloud calls and their answers, `step` simulated seconds apart; stops at `deadline`."""
    kwargs = {"litellm_params": {"model_info": deployment["model_info"]}, "response_cost": 0.0001}
    for done in range(count):
        if time.monotonic() > deadline:
            return done
        await guard.async_pre_call_check(deployment, None)
        await guard.async_log_success_event(kwargs, Response(100), None, None)
        clock.now += step
    return count


def test_soak_the_windows_stay_small_unread_and_a_check_stays_cheap():
    """Every cloud call writes three windows; one is read only when its limit is set (and, with
    Redis, only when Redis is away). Before: with only `rpm` set, each unread window kept every
    entry (200k calls: 31 MB), and the budget window was summed on every check (1M answers: 25 to
    110 ms of event loop per check). Bounded: 50k calls, then 100k answers, and 60 s of wall time."""
    module, clock = load_guard_module(), FakeClock()
    bound = module._Window.SLOTS + 1
    guard = module.CloudGuard(clock=clock)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        calls = asyncio.run(cloud_calls(guard, cloud_with({"rpm": 10**9}), clock, 50_000, 0.01, time.monotonic() + 30))
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counts = next(iter(guard.tiers.values()))
    slots = [len(window.slots) for window in (counts.requests, counts.tokens, counts.spend)]
    print(f"\nrpm only, {calls} calls, {calls * 0.01:.0f} simulated s: slots {slots}, {retained / 1e6:.3f} MB retained")
    assert calls > 10_000 and max(slots) <= bound
    assert retained < 1_000_000  # before: 7.6 MB at 50k calls

    period = 30 * 86400
    budget = cloud_with({"max_budget_usd": 10**6, "budget_period_seconds": period})
    answers = asyncio.run(cloud_calls(guard, budget, clock, 100_000, period / 100_000, time.monotonic() + 30))

    async def seconds_per_check(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await guard.async_pre_call_check(budget, None)
        return (time.perf_counter() - started) / count

    per_check = asyncio.run(seconds_per_check(200))
    print(f"30-day budget, {answers} answers: {len(counts.spend.slots)} slots, {per_check * 1e6:.1f} µs per check")
    assert answers > 10_000 and len(counts.spend.slots) <= bound
    assert per_check < 0.001  # before: ~2.5 ms at 100k answers on a quiet machine, 11 ms on a busy one


def cloud_with(spend_guard: dict) -> dict:
    return {"model_info": {"id": "openai", "spend_guard": spend_guard}, "litellm_params": {"model": "openai/x"}}


def test_each_cloud_tier_spends_its_own_allowance():
    """A chain's cloud tier beside `openai.*` has its own limits: its calls never use up the other's."""
    module, clock = load_guard_module(), FakeClock()
    guard = module.CloudGuard(clock=clock)
    chat = {"model_info": {"id": "openai", "spend_guard": {"rpm": 2}}, "litellm_params": {"model": "openai/x"}}
    other = {
        "model_info": {"id": "summarize-cloud", "spend_guard": {"rpm": 1000}},
        "litellm_params": {"model": "openai/y"},
    }
    for _ in range(5):
        check(guard, other)
    check(guard, chat)
    check(guard, chat)
    with pytest.raises(litellm.RateLimitError, match="2 requests per minute"):
        check(guard, chat)


def test_a_chains_cloud_tier_counts_in_redis_keys_of_its_own():
    settings = parse_settings(
        {
            "redis": {"mode": "deploy"},
            "openai": {"rpm": 5},
            "chains": [
                {
                    "name": "summarize",
                    "tiers": [{"ollama": {"model": "qwen2.5:3b"}}, {"cloud": {"model": "gpt-4o", "rpm": 9}}],
                }
            ],
        },
        openai_key="secret",
    )
    guards = {
        e["model_info"]["id"]: e["model_info"]["spend_guard"]
        for e in litellm_config(settings)["model_list"]
        if "spend_guard" in e["model_info"]
    }
    assert guards["openai"]["key_prefix"] == "llm-gateway:llm-gateway"  # unchanged: its counts survive the upgrade
    assert guards["summarize-cloud"]["key_prefix"] == "llm-gateway:llm-gateway:summarize-cloud"

"""The cloud tier's spend guard: settings, rendering, and the guard's own arithmetic."""

import asyncio

import litellm
import pytest

from components.declarations import ConfigError
from components.fallback import litellm_config
from components.names import CLOUD_GUARD_FILE
from components.settings import parse_settings
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

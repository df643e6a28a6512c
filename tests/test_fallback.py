"""The pure fallback core: chain order, per-tier timeouts, no secret in the config."""

import importlib.util

import pytest
import yaml

from core.chain import failover_chain
from core.litellm_config import litellm_config, nested_fallbacks, render_config_yaml
from core.names import PROGRESS_HANDLER_FILE, PROGRESS_PROVIDER
from core.settings import parse_settings
from gateway.contract import ENGINE_PROBE, LEAVES_CLUSTER, LIMIT_KEYS


def settings_for(raw=None, enabled=True):
    raw = dict(raw or {})
    if not enabled:
        raw["openai"] = {**raw.get("openai", {}), "enabled": False}
    return parse_settings(raw, openai_key="secret")


def test_chain_is_vllm_then_ollama_then_openai_with_distinct_groups():
    config = litellm_config(settings_for())
    groups = [entry["model_name"] for entry in config["model_list"]]
    assert groups == ["chat", "chat-ollama", "chat-openai"]
    assert config["router_settings"]["fallbacks"] == [{"chat": ["chat-ollama"]}, {"chat-ollama": ["chat-openai"]}]


def test_cloud_is_reached_only_through_ollama():
    # No group other than Ollama's lists the cloud: a vLLM failure can only go to Ollama.
    fallbacks = litellm_config(settings_for())["router_settings"]["fallbacks"]
    reaching_cloud = [group for entry in fallbacks for group, targets in entry.items() if "chat-openai" in targets]
    assert reaching_cloud == ["chat-ollama"]


def test_client_errors_never_walk_the_chain():
    router = litellm_config(settings_for())["router_settings"]
    assert router["fallback_on_unsupported_params"] is False
    assert all(targets == [] for entry in router["context_window_fallbacks"] for targets in entry.values())
    assert all(targets == [] for entry in router["content_policy_fallbacks"] for targets in entry.values())


def test_per_tier_timeouts_and_no_global_timeout():
    config = litellm_config(
        settings_for(
            {"vllm": {"timeoutSeconds": 900}, "ollama": {"timeoutSeconds": 300}, "openai": {"timeoutSeconds": 60}}
        )
    )
    timeouts = [entry["litellm_params"]["timeout"] for entry in config["model_list"]]
    assert timeouts == [900, 300, 60]
    assert "request_timeout" not in config["litellm_settings"]
    assert "timeout" not in config["router_settings"]


def test_no_retries_and_cooldown_that_works_for_one_deployment_groups():
    router = litellm_config(settings_for({"gateway": {"cooldownSeconds": 17}}))["router_settings"]
    assert router["num_retries"] == 0 and router["retry_after"] == 0
    assert router["allowed_fails"] == 0
    assert router["cooldown_time"] == 17


def test_health_checks_probe_vllm_only_and_ollama_is_never_cooled_down():
    config = litellm_config(settings_for())
    general = config["general_settings"]
    assert general["background_health_check_model_groups"] == ["chat"]
    assert general["enable_health_check_routing"] is True
    info = {entry["model_info"]["id"]: entry["model_info"] for entry in config["model_list"]}
    assert info["ollama"]["allowed_fails"] >= 1000
    assert "allowed_fails" not in info["vllm"] and "allowed_fails" not in info["openai"]
    assert info["vllm"]["allowed_fails_policy"]["TimeoutErrorAllowedFails"] == 0
    assert info["openai"]["allowed_fails_policy"]["AuthenticationErrorAllowedFails"] == 0
    assert "allowed_fails_policy" not in info["ollama"]


def test_secrets_appear_only_as_environment_references():
    config = litellm_config(settings_for())
    cloud = config["model_list"][2]["litellm_params"]
    assert cloud["api_key"] == "os.environ/OPENAI_API_KEY"
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    local_keys = [entry["litellm_params"].get("api_key") for entry in config["model_list"][:2]]
    assert local_keys[0] == "not-a-secret-local-tier" and local_keys[1] is None


def test_without_cloud_the_chain_ends_at_ollama():
    settings = settings_for(enabled=False)
    chain = failover_chain(settings)
    assert [tier.name for tier in chain] == ["vllm", "ollama"]
    assert nested_fallbacks(chain) == [{"chat": ["chat-ollama"]}]
    assert "OPENAI_API_KEY" not in render_config_yaml(settings)


def test_rendered_yaml_round_trips_and_is_stable():
    settings = settings_for({"gateway": {"modelName": "assistant"}})
    rendered = render_config_yaml(settings)
    assert rendered == render_config_yaml(settings)
    assert yaml.safe_load(rendered) == litellm_config(settings)
    assert yaml.safe_load(rendered)["model_list"][0]["model_name"] == "assistant"


def _gateway_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_progress_handler_takes_its_limits_from_the_deployment_and_fails_loudly_without_them():
    progress = _gateway_module(PROGRESS_HANDLER_FILE)
    vllm = litellm_config(settings_for())["model_list"][0]["litellm_params"]
    limits = progress._limits({}, {**vllm, "custom_llm_provider": PROGRESS_PROVIDER}, vllm["timeout"])
    assert (limits.first_token, limits.stall, limits.total, limits.provider) == (4, 4, 600, PROGRESS_PROVIDER)
    without = {key: value for key, value in vllm.items() if key != "stall_timeout"}
    with pytest.raises(progress.MissingLimit, match="stall_timeout"):
        progress._limits({}, {**without, "custom_llm_provider": PROGRESS_PROVIDER}, vllm["timeout"])


def test_the_cloud_tier_and_only_it_carries_the_marker_honest_errors_finds_it_by():
    model_list = litellm_config(settings_for())["model_list"]
    marked = [m["model_info"]["id"] for m in model_list if m["model_info"].get(LEAVES_CLUSTER)]
    assert marked == [tier.name for tier in failover_chain(settings_for()) if not tier.in_cluster] == ["openai"]


def test_the_vllm_probe_is_the_engine_check_not_a_generation():
    progress = _gateway_module(PROGRESS_HANDLER_FILE)
    vllm = litellm_config(settings_for())["model_list"][0]
    assert vllm["model_info"]["health_check_params"] == {ENGINE_PROBE: True}
    assert ENGINE_PROBE in progress.NOT_FOR_VLLM
    assert set(LIMIT_KEYS) <= set(vllm["litellm_params"])  # core/chain.py renders every limit the handler needs

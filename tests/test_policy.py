"""The CrossGuard policy pack, called from pytest on what the program registers (no CLI)."""

import copy
import sys

import pytest
import yaml
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from core.stack_files import CHAINS_EXAMPLE, stack_config
from pulumi_harness import CONFIG_MAP, ROOT, Registration, run_program

sys.path.insert(0, str(ROOT / "policy"))
import rules

KEY = {"openaiApiKey": "sk-policy-test-0123456789abcdef"}
# A cluster whose DNS domain is not cluster.local: the rules know no domain, so they must hold here too.
CUSTOM_DOMAIN = {"clusterDomain": "k8s.example.internal"}


def violations(resources: list[Registration]) -> list[tuple[str, str, str]]:
    found = []
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    for resource in resources:
        args = ResourceValidationArgs(
            resource.type, resource.inputs, f"urn:pulumi:test::llm-gateway::{resource.type}::{resource.name}",
            resource.name, options, None,
        )  # fmt: skip
        for policy in rules.POLICIES:
            policy.validate(
                args, lambda message, urn=None, p=policy, r=resource: found.append((p.name, r.name, message))
            )
    return found


@pytest.fixture(scope="module", params=[{}, CUSTOM_DOMAIN], ids=["cluster.local", "custom-domain"])
def run(request):
    """Every violation below must be caught whatever the cluster's domain."""
    return run_program(request.param, KEY)


def with_config(run, change) -> list[Registration]:
    """The run's resources with the gateway's config.yaml edited by `change(config)`."""
    resources = copy.deepcopy(run.resources)
    config_map = next(r for r in resources if r.type == CONFIG_MAP)
    config = yaml.safe_load(config_map.inputs["data"]["config.yaml"])
    change(config)
    config_map.inputs["data"]["config.yaml"] = yaml.safe_dump(config)
    return resources


@pytest.mark.parametrize(
    "overrides",
    [{}, {"openai": {"enabled": False}}, {"gamingMode": True}, {"redis": {"mode": "deploy"}}, CUSTOM_DOMAIN],
)
def test_the_program_passes_every_policy(overrides):
    secrets = {} if overrides.get("openai") else KEY
    assert violations(run_program(overrides, secrets).resources) == []


def test_cloud_first_in_the_chain_is_caught(run):
    def cloud_first(config):
        config["model_list"].insert(0, config["model_list"].pop())

    assert [v[0] for v in violations(with_config(run, cloud_first))] == ["cloud-tier-last"]


def test_vllm_falling_back_straight_to_the_cloud_is_caught(run):
    def skip_ollama(config):
        config["router_settings"]["fallbacks"] = [{"chat": ["chat-openai", "chat-ollama"]}]

    found = violations(with_config(run, skip_ollama))
    assert {v[0] for v in found} == {"cloud-tier-last"} and len(found) == 2


def test_default_fallbacks_to_the_cloud_are_caught(run):
    def everything_to_cloud(config):
        config["router_settings"]["default_fallbacks"] = ["chat-openai"]

    assert {v[0] for v in violations(with_config(run, everything_to_cloud))} == {"cloud-tier-last"}


def test_a_key_in_a_config_map_is_caught(run):
    def inline_key(config):
        config["model_list"][-1]["litellm_params"]["api_key"] = "sk-live-abcdefghijklmnopqrstuvwxyz"
        config["general_settings"]["master_key"] = "hunter2-master"
        config["router_settings"]["redis_url"] = "redis://:hunter2@redis:6379/0"

    found = {(v[0], v[2].split(" ")[0]) for v in violations(with_config(run, inline_key))}
    assert ("no-secret-in-config-map", "ConfigMap") in found
    assert ("no-secret-in-config-map", "general_settings.master_key") in found
    assert ("no-secret-in-config-map", "api_key") in found
    assert ("no-secret-in-config-map", "router_settings.redis_url") in found


def test_the_marker_alone_makes_the_cloud_tier(run):
    """The cloud behind an egress proxy with a Service name is still the cloud: model_info says so."""

    def cloud_first_behind_a_service_name(config):
        cloud = config["model_list"].pop()
        cloud["litellm_params"]["api_base"] = "http://egress.proxy.svc.k8s.example.internal:8080/v1"
        config["model_list"].insert(0, cloud)

    assert [v[0] for v in violations(with_config(run, cloud_first_behind_a_service_name))] == ["cloud-tier-last"]


def test_the_address_alone_makes_the_cloud_tier(run):
    """A cloud tier that lost its marker is still found by its address, and its key still checked."""

    def unmarked_cloud_first_with_an_inline_key(config):
        cloud = config["model_list"].pop()
        del cloud["model_info"]["leaves_cluster"]
        cloud["litellm_params"]["api_key"] = "not-from-a-secret"
        config["model_list"].insert(0, cloud)

    found = sorted(v[0] for v in violations(with_config(run, unmarked_cloud_first_with_an_inline_key)))
    assert found == ["cloud-tier-last", "no-secret-in-config-map"]


def test_missing_limits_probes_and_moving_tags_are_caught(run):
    resources = copy.deepcopy(run.resources)
    vllm = next(r for r in resources if r.type == "kubernetes:apps/v1:Deployment" and r.name == "vllm-deployment")
    container = vllm.inputs["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["limits"]["memory"]
    del container["livenessProbe"]
    container["image"] = "vllm/vllm-openai:latest"
    found = sorted(v[0] for v in violations(resources))
    assert found == ["containers-have-limits-and-probes", "containers-have-limits-and-probes", "images-pinned"]


def test_the_admin_ui_without_a_database_is_caught(run):
    resources = copy.deepcopy(run.resources)
    gateway = next(r for r in resources if r.type == "kubernetes:apps/v1:Deployment" and r.name.startswith("litellm"))
    container = gateway.inputs["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [entry for entry in container["env"] if entry["name"] != "DISABLE_ADMIN_UI"]
    assert [v[0] for v in violations(resources)] == ["admin-ui-only-with-a-database"]
    container["env"].append({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}})
    assert violations(resources) == []


# --- NFR68 for names: only the chain's head (and aliases of it) is client-callable ---------------


def test_an_internal_group_made_client_callable_is_caught(run):
    def cloud_callable(config):
        config["model_list"][-1]["model_info"]["client_facing"] = True

    def alias_to_the_cloud(config):
        config["router_settings"]["model_group_alias"] = {"gpt-4o-mini": "chat-openai"}

    def head_unmarked(config):
        del config["model_list"][0]["model_info"]["client_facing"]

    for change in (cloud_callable, alias_to_the_cloud, head_unmarked):
        found = violations(with_config(run, change))
        assert [v[0] for v in found] == ["only-the-chain-is-client-callable"], change.__name__


def test_a_config_without_the_front_door_is_caught(run):
    def no_callback(config):
        config["litellm_settings"]["callbacks"].remove("request_check.handler")

    assert [v[0] for v in violations(with_config(run, no_callback))] == ["only-the-chain-is-client-callable"]
    resources = copy.deepcopy(run.resources)
    next(r for r in resources if r.type == CONFIG_MAP).inputs["data"].pop("request_check.py")
    assert [v[0] for v in violations(resources)] == ["only-the-chain-is-client-callable"]


def test_client_chosen_endpoints_are_caught(run):
    def client_credentials(config):
        config["general_settings"]["allow_client_side_credentials"] = True
        config["model_list"][1]["litellm_params"]["configurable_clientside_auth_params"] = ["api_base"]

    found = violations(with_config(run, client_credentials))
    assert [v[0] for v in found] == ["only-the-chain-is-client-callable"] * 2


def test_aliases_of_the_head_pass():
    assert violations(run_program({"gateway": {"modelAliases": ["vllm-qwen", "qwen"]}}, KEY).resources) == []


@pytest.fixture(scope="module")
def chains_run():
    """The example stack: the default chain, an embeddings chain and a chain on an existing endpoint."""
    return run_program(stack_config(CHAINS_EXAMPLE), KEY)


def test_every_chain_of_a_several_chain_stack_passes(chains_run):
    assert violations(chains_run.resources) == []


def test_an_embeddings_chain_reaching_a_chat_tier_is_caught(chains_run):
    """Vectors of another model (or a chat model's answer) cannot stand in for an embedding."""

    def embeddings_to_the_chat_cloud(config):
        config["router_settings"]["fallbacks"].append({"embed-ollama": ["chat-openai"]})

    found = [v for v in violations(with_config(chains_run, embeddings_to_the_chat_cloud)) if v[0] != "cloud-tier-last"]
    assert [v[0] for v in found] == ["chain-serves-one-kind"], found
    assert "embed-ollama" in found[0][2] and "chat-openai" in found[0][2]


def test_a_later_chain_whose_head_is_unmarked_is_caught(chains_run):
    def unmark_embed(config):
        entry = next(e for e in config["model_list"] if e["model_name"] == "embed")
        del entry["model_info"]["client_facing"]

    found = violations(with_config(chains_run, unmark_embed))
    assert {v[0] for v in found} == {"only-the-chain-is-client-callable"}
    assert any("text-embedding-bge-m3" in v[2] for v in found)  # its alias now points at no head

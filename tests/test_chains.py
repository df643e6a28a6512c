"""Several chains: the example stack renders, validates and deploys each tier by its kind; bad
chains are refused by key before any resource exists."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from core.kube import MINIMUM_KUBERNETES_VERSION
from core.names import CONFIG_FILE_NAME, tier_object_name
from core.settings import parse_settings
from core.stack_files import CHAINS_EXAMPLE, stack_config
from pulumi_harness import CONFIG_MAP, DEPLOYMENT, NETWORK_POLICY, SECRET, run_program, run_program_expecting_error

KEY = {"openaiApiKey": "sk-CHAINSCANARY-0123456789"}
EMBED_KEY_CANARY = "sk-EMBEDCANARY-9876543210"


def example_config() -> dict:
    return stack_config(CHAINS_EXAMPLE)


@pytest.fixture(scope="module")
def example_run():
    return run_program(example_config(), KEY)


def gateway_config(run) -> dict:
    config_map = next(r for r in run.of_type(CONFIG_MAP) if CONFIG_FILE_NAME in r.inputs.get("data", {}))
    return yaml.safe_load(config_map.inputs["data"][CONFIG_FILE_NAME])


def deployment(run, name: str) -> dict:
    return run.one(DEPLOYMENT, name).inputs


def test_every_manifest_of_the_example_validates_strictly(example_run):
    for registration in example_run.kubernetes:
        for version in (MINIMUM_KUBERNETES_VERSION, "1.33"):
            kubernetes_validate.validate(registration.inputs, version, strict=True)


def test_each_gpu_tier_gets_its_own_deployment_service_and_volume(example_run):
    embed = deployment(example_run, "embed-vllm")
    args = embed["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--model", "BAAI/bge-m3"] and "--max-model-len" in args
    selector = embed["spec"]["selector"]["matchLabels"]
    assert selector != deployment(example_run, "vllm")["spec"]["selector"]["matchLabels"]
    service = example_run.one("kubernetes:core/v1:Service", "embed-vllm").inputs
    assert service["spec"]["selector"] == selector
    claims = {r.inputs["metadata"]["name"] for r in example_run.of_type("kubernetes:core/v1:PersistentVolumeClaim")}
    assert {"vllm-cache", "embed-vllm-cache", "ollama-models"} <= claims


def test_the_shared_ollama_pulls_every_model_once(example_run):
    init = deployment(example_run, "ollama")["spec"]["template"]["spec"]["initContainers"]
    pulled = [{e["name"]: e["value"] for e in c["env"]}["OLLAMA_MODEL"] for c in init]
    assert pulled == ["qwen2.5:3b", "bge-m3:567m"]  # chat-large's qwen2.5:3b is the default's: once
    assert [c["name"] for c in init] == ["pull-model", "pull-model-2"]


def test_the_shared_ollama_warms_each_model_by_its_chains_kind(example_run):
    main = deployment(example_run, "ollama")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["CHAT_MODELS"] == "qwen2.5:3b-llm-gateway"  # the default chain's and chat-large's
    assert env["EMBEDDING_MODELS"] == "bge-m3:567m-llm-gateway"  # the embed chain's: through /api/embed
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "2"


def test_the_config_holds_every_chain_in_order_and_embeddings_are_marked(example_run):
    config = gateway_config(example_run)
    fallbacks = config["router_settings"]["fallbacks"]
    assert {"embed": ["embed-ollama"]} in fallbacks and {"chat-large": ["chat-large-ollama"]} in fallbacks
    entries = {e["model_name"]: e for e in config["model_list"]}
    assert entries["embed"]["model_info"]["mode"] == "embedding"
    assert entries["embed-ollama"]["litellm_params"]["model"] == "ollama/bge-m3:567m-llm-gateway"
    assert "mode" not in entries["chat"]["model_info"]
    assert entries["chat-large"]["litellm_params"]["api_base"] == "http://vllm-api.ml.svc.cluster.local:8000/v1"
    assert not any(name.startswith("embed-openai") for name in entries)  # never the cloud: another model
    assert config["router_settings"]["model_group_alias"] == {"text-embedding-bge-m3": "embed"}
    probed = config["general_settings"]["background_health_check_model_groups"]
    assert probed == ["chat", "embed", "chat-large"]


def test_the_gateway_may_reach_each_tier_and_only_them(example_run):
    policy = next(r for r in example_run.of_type(NETWORK_POLICY) if "litellm" in r.inputs["metadata"]["name"])
    egress = policy.inputs["spec"]["egress"]
    selected = [rule["to"][0]["podSelector"]["matchLabels"] for rule in egress if "podSelector" in str(rule.get("to"))]
    assert {labels["app.kubernetes.io/name"] for labels in selected} == {"vllm", "ollama", "embed-vllm"}
    assert {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8000}]} in egress  # the endpoint


def test_gaming_mode_frees_every_gpu():
    config = {**example_config(), "gamingMode": True}
    run = run_program(config, KEY)
    patches = {r.name for r in run.of_type("kubernetes:apps/v1:DeploymentPatch")}
    assert {"vllm-replicas-0", "embed-vllm-replicas-0"} <= patches


def test_a_cloud_tier_with_its_own_key_gets_its_own_secret():
    config = example_config()
    config["chains"] = [
        {
            "name": "summarize",
            "tiers": [{"ollama": {"model": "qwen2.5:3b"}}, {"cloud": {"model": "gpt-4o", "apiKey": "summarizeApiKey"}}],
        }
    ]
    run = run_program(config, {**KEY, "summarizeApiKey": EMBED_KEY_CANARY})
    secrets = [r for r in run.of_type(SECRET) if "LLM_GATEWAY_KEY_SUMMARIZE_API_KEY" in r.inputs.get("stringData", {})]
    assert len(secrets) == 1 and "stringData" in secrets[0].secret_paths
    for registration in run.resources:
        if registration.type != SECRET:
            assert EMBED_KEY_CANARY not in str(registration.inputs)
    entry = next(e for e in gateway_config(run)["model_list"] if e["model_name"] == "summarize-cloud")
    assert entry["litellm_params"]["api_key"] == "os.environ/LLM_GATEWAY_KEY_SUMMARIZE_API_KEY"


EMBED_TIER = {"vllm": {"model": "BAAI/bge-m3"}, "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024}}


def chained(*chains: dict) -> dict:
    config = copy.deepcopy(example_config())
    config["chains"] = list(chains)
    return config


@pytest.mark.parametrize(
    ("config", "secrets", "key"),
    [
        (
            chained(
                {
                    "name": "e",
                    "kind": "embeddings",
                    "tiers": [EMBED_TIER, {"ollama": {"model": "nomic-embed-text"}, "embedding": {"model": "nomic"}}],
                }
            ),
            KEY,
            "llm-gateway:chains[0].tiers[1].embedding",
        ),
        (
            chained({"name": "e", "kind": "embeddings", "tiers": [EMBED_TIER, {"ollama": {"model": "bge-m3"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[1].embedding",
        ),
        (chained({"name": "c", "tiers": [{"cloud": {"model": "gpt-4o"}}]}), KEY, "llm-gateway:chains[0].tiers[0]"),
        (
            chained({"name": "c", "tiers": [{"cloud": {"model": "gpt-4o"}}, {"ollama": {"model": "qwen2.5:3b"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0]",
        ),
        (
            chained(
                {
                    "name": "c",
                    "tiers": [
                        {"ollama": {"model": "qwen2.5:3b"}},
                        {"endpoint": {"url": "https://llm.example.com/v1", "model": "m"}},
                        {"name": "late", "ollama": {"model": "qwen2.5:3b"}},
                    ],
                }
            ),
            KEY,
            "llm-gateway:chains[0].tiers[2]",
        ),
        (chained({"name": "chat", "tiers": [{"ollama": {"model": "qwen2.5:3b"}}]}), KEY, "llm-gateway:chains[0].name"),
        (
            chained({"name": "x", "tiers": [{"vllm": {"model": "a"}, "ollama": {"model": "b"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0]",
        ),
        (
            chained(
                {
                    "name": "x",
                    "tiers": [{"ollama": {"model": "qwen2.5:3b"}}, {"cloud": {"model": "m", "apiKey": "xKey"}}],
                }
            ),
            KEY,
            "llm-gateway:xKey",
        ),
        (chained({"name": "x", "tiers": [EMBED_TIER]}), KEY, "llm-gateway:chains[0].tiers[0].embedding"),
        (
            {**chained({"name": "x", "tiers": [{"ollama": {"model": "qwen2.5:3b"}}]}), "embedApiKy": "oops"},
            KEY,
            "llm-gateway:embedApiKy",
        ),
        (
            chained({"name": "x", "tiers": [{"endpoint": {"url": "http://vllm-api.ml.svc:8000", "model": "m"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0].endpoint.url",
        ),
        (
            chained({"name": "x", "tiers": [{"endpoint": {"url": "https://llm.svc.example.com/v1", "model": "m"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0]",
        ),
        (
            chained({"name": "x", "tiers": [{"endpoint": {"url": "http://a.ml.svc.other.org/v1", "model": "m"}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0].endpoint.url",
        ),
        (
            chained(
                {
                    "name": "e",
                    "kind": "embeddings",
                    "tiers": [
                        {
                            "vllm": {"model": "intfloat/e5-large"},
                            "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024},
                        }
                    ],
                }
            ),
            KEY,
            "llm-gateway:chains[0].tiers[0].embedding.model",
        ),
        (
            chained({"name": "x", "tiers": [{"ollama": {"model": "qwen2.5:3b", "modelDigest": "sha256:" + "a" * 64}}]}),
            KEY,
            "llm-gateway:chains[0].tiers[0].ollama.modelDigest",
        ),
        (
            chained({"name": "x", "contextTokens": 65536, "tiers": [{"ollama": {"model": "qwen2.5:0.5b"}}]}),
            KEY,
            "llm-gateway:chains[0].contextTokens",
        ),
    ],
    ids=[
        "embeddings-two-models",
        "embeddings-undeclared-model",
        "cloud-only",
        "cloud-first",
        "outside-then-inside",
        "name-taken",
        "two-kinds-in-one-tier",
        "cloud-key-not-set",
        "embedding-in-a-chat-chain",
        "typo-still-refused",
        "endpoint-without-v1",
        "svc-inside-a-public-name",
        "other-cluster-domain",
        "vllm-serves-another-model",
        "two-pins-for-one-model",
        "past-the-trained-context",
    ],
)
def test_bad_chains_fail_by_key_before_any_resource(config, secrets, key):
    error, registered = run_program_expecting_error(config, secrets)
    assert str(error).startswith(key), str(error)
    assert registered == []


def test_a_plaintext_cloud_key_is_refused_without_showing_it():
    config = chained(
        {"name": "x", "tiers": [{"ollama": {"model": "qwen2.5:3b"}}, {"cloud": {"model": "m", "apiKey": "xKey"}}]}
    )
    with pytest.raises(Exception) as refused:
        parse_settings({**config, "xKey": EMBED_KEY_CANARY}, openai_key="secret", secret_states={"xKey": "plaintext"})
    assert "plain text" in str(refused.value) and EMBED_KEY_CANARY not in str(refused.value)


def test_a_second_gpu_pool_is_stack_config_only():
    config = chained(
        {
            "name": "big",
            "tiers": [
                {"vllm": {"model": "Qwen/Qwen2.5-32B-Instruct-AWQ", "gpuCount": 2}},
                {"ollama": {"model": "qwen2.5:3b"}},
            ],
        }
    )
    run = run_program(config, KEY)
    big = deployment(run, tier_object_name("big", "vllm"))
    limits = big["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    entries = {e["model_name"]: e for e in gateway_config(run)["model_list"]}
    assert entries["big"]["litellm_params"]["api_base"].startswith("http://big-vllm.")
    assert run.outputs["chains"]["big"] == ["big-vllm", "big-ollama"]


def test_object_names_never_collide():
    assert tier_object_name("Qwen/Qwen2.5", "vllm") != tier_object_name("qwen-qwen2-5", "vllm")
    assert len(tier_object_name("a" * 200, "vllm")) <= 40


def test_an_object_name_starts_with_a_letter():
    """A Service name is a DNS-1035 label: `7b-vllm` would be refused by the API server mid-`pulumi up`."""
    assert tier_object_name("7b", "vllm") == "chain-7b-vllm"

"""Hostile stack configuration through the whole program: every input ends either in a deployment
whose chain keeps the cloud last, or in the project's own error naming a key — never a traceback,
never a resource registered first."""

import json

import kubernetes_validate
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pulumi_harness import try_program

YAMLISH = ["{a: 1", "- x", "null", "~", "yes", "no", "0x10", "1e400", "!!python/object:os.system", "'", '"', "---"]
TEXT = st.one_of(
    st.sampled_from(YAMLISH),
    st.text(max_size=30),  # any unicode: non-ASCII, control characters, emoji
    st.sampled_from(["", " ", "qwen2.5:3b", "Qwen/Qwen2.5-7B-Instruct-AWQ", "名前", "ümlaut", "🚀", "a" * 300]),
)
NUMBER = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
NESTED = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=10
)
TIER_KEYS = st.sampled_from(
    [
        "image", "imageDigest", "model", "replicas", "gpuCount", "resources", "nodeSelector", "tolerations",
        "runtimeClassName", "cacheSize", "timeoutSeconds", "firstTokenTimeoutSeconds", "enabled", "modelName",
        "numRetries", "cooldownSeconds", "storageSize", "extraArgs", "apiBase", "replicaz", "ümlaut",
    ]
)  # fmt: skip
OBJECT = st.one_of(st.dictionaries(TIER_KEYS, NESTED, max_size=4), NESTED, TEXT)
TOP_KEYS = st.sampled_from(
    ["namespace", "gamingMode", "vllm", "ollama", "openai", "gateway", "networkPolicies", "renderYamlToDirectory",
     "gammingMode", "名前", "vllm.replicas"]
)  # fmt: skip
CONFIGS = st.dictionaries(TOP_KEYS, OBJECT, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_any_stack_config_deploys_cloud_last_or_fails_cleanly_before_any_resource(config):
    error, registered = try_program(config, {"openaiApiKey": "sk-hostile-test"})
    event("rejected" if error is not None else "deployed")
    if error is not None:
        assert str(error).startswith("llm-gateway:"), str(error)
        assert len(str(error)) < 600
        assert registered == []
        return
    config_maps = [r for r in registered if r.type == "kubernetes:core/v1:ConfigMap"]
    (config_map,) = config_maps
    rendered = yaml.safe_load(config_map.inputs["data"]["config.yaml"])
    ids = [entry["model_info"]["id"] for entry in rendered["model_list"]]
    assert ids[-1] in ("openai", "ollama") and ids[:2] == ["vllm", "ollama"]
    json.dumps([r.inputs for r in registered])  # every input is plain data


VALID_CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "gamingMode": st.booleans(),
        "networkPolicies": st.booleans(),
        "namespace": st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
        "vllm": st.fixed_dictionaries(
            {},
            optional={
                "replicas": st.integers(0, 8),
                "gpuCount": st.integers(0, 8),
                "model": st.sampled_from(["Qwen/Qwen2.5-7B-Instruct-AWQ", "meta-llama/Llama-3.1-8B-Instruct"]),
                "timeoutSeconds": st.integers(10, 3600),
                "stallTimeoutSeconds": st.integers(1, 600),
            },
        ),
        # A model the memory check knows, or one that brings its own figures (llama3.2:1b: ~1.3 GB
        # file, 32 KiB of KV cache and attention per token), as the check requires.
        "ollama": st.sampled_from(
            [
                {},
                {"model": "qwen2.5:3b"},
                {"model": "llama3.2:1b", "modelMemory": "1500Mi", "memoryPerContextToken": 32768},
            ]
        ),
        "openai": st.fixed_dictionaries(
            {}, optional={"enabled": st.booleans(), "timeoutSeconds": st.integers(5, 3600)}
        ),
        "gateway": st.fixed_dictionaries(
            {},
            optional={
                "replicas": st.integers(1, 20),
                "modelName": st.sampled_from(["chat", "assistant", "gpt-4o-mini", "default"]),
                "numRetries": st.integers(0, 5),
                "cooldownSeconds": st.integers(10, 600),
            },
        ),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_CONFIGS)
def test_every_valid_config_deploys_with_the_cloud_last_and_strict_manifests(config):
    error, registered = try_program(config, {"openaiApiKey": "sk-valid-test"})
    assert error is None, str(error)
    (config_map,) = [r for r in registered if r.type == "kubernetes:core/v1:ConfigMap"]
    rendered = yaml.safe_load(config_map.inputs["data"]["config.yaml"])
    ids = [entry["model_info"]["id"] for entry in rendered["model_list"]]
    cloud = config.get("openai", {}).get("enabled", True)
    assert ids == (["vllm", "ollama", "openai"] if cloud else ["vllm", "ollama"])
    vllm = next(r for r in registered if r.name == "vllm-deployment")
    expected = 0 if config.get("gamingMode") else config.get("vllm", {}).get("replicas", 1)
    assert vllm.inputs["spec"]["replicas"] == expected
    for resource in registered:
        # A patch (the vLLM replica patch) is a fragment of an object, not an object to validate.
        an_object = not resource.type.startswith("kubernetes:index") and not resource.type.endswith("Patch")
        if resource.type.startswith("kubernetes:") and an_object:
            kubernetes_validate.validate(resource.inputs, "1.33", strict=True)

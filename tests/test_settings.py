"""The pure settings parser: defaults, every rejection names the full key, the value and a fix."""

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.chain import failover_chain
from core.declarations import ConfigError
from core.settings import Settings, parse_settings


def parse(raw, key_state="secret"):
    return parse_settings(raw, openai_key=key_state)


def test_defaults_are_safe_and_complete():
    settings = parse({})
    assert settings == Settings()
    assert settings.vllm_replicas == 1
    assert settings.gateway.num_retries == 0
    assert settings.vllm.image_tag == "v0.11.0"


def test_objects_arrive_as_json_text_like_pulumi_sends_them():
    settings = parse({"vllm": json.dumps({"replicas": 2, "gpuCount": 2}), "gamingMode": "true"})
    assert settings.vllm.replicas == 2
    assert settings.vllm_replicas == 0  # Gaming Mode wins over replicas


def test_a_deliberate_zero_stays_zero():
    # The bug of `config.get_int("x") or 1`: a 0 silently becoming 1.
    assert parse({"vllm": {"replicas": 0}}).vllm_replicas == 0


@pytest.mark.parametrize(
    ("raw", "key", "fix"),
    [
        ({"vllm": {"replicaz": 1}}, "llm-gateway:vllm.replicaz", "did you mean `replicas`"),
        ({"gamingMod": "true"}, "llm-gateway:gamingMod", "did you mean `gamingMode`"),
        ({"vllm": {"replicas": -1}}, "llm-gateway:vllm.replicas", "from 0 to 8"),
        ({"vllm": {"replicas": "2"}}, "llm-gateway:vllm.replicas", "unquoted"),
        ({"vllm": {"replicas": True}}, "llm-gateway:vllm.replicas", "whole number"),
        ({"vllm": {"replicas": 1.5}}, "llm-gateway:vllm.replicas", "whole number"),
        ({"vllm": {"model": ""}}, "llm-gateway:vllm.model", "model name"),
        ({"ollama": {"model": "qwen 2.5"}}, "llm-gateway:ollama.model", "no spaces"),
        ({"gateway": {"modelName": ""}}, "llm-gateway:gateway.modelName", "model name"),
        ({"gamingMode": "yes"}, "llm-gateway:gamingMode", "true or false"),
        ({"namespace": "LLM_Gateway"}, "llm-gateway:namespace", "DNS label"),
        ({"vllm": {"image": "vllm/vllm-openai"}}, "llm-gateway:vllm.image", "exact tag"),
        ({"vllm": {"image": "vllm/vllm-openai:latest"}}, "llm-gateway:vllm.image", "pin an exact version"),
        ({"vllm": {"imageDigest": "sha256:abc"}}, "llm-gateway:vllm.imageDigest", "64 hex"),
        (
            {"vllm": {"resources": {"limits": {"memory": "lots"}}}},
            "llm-gateway:vllm.resources.limits.memory",
            "quantity",
        ),
        ({"vllm": {"resources": {"limit": {}}}}, "llm-gateway:vllm.resources.limit", "did you mean `limits`"),
        ({"vllm": {"tolerations": [{"operator": "Maybe"}]}}, "llm-gateway:vllm.tolerations[0].operator", "Exists"),
        ({"vllm": {"tolerations": {"key": "x"}}}, "llm-gateway:vllm.tolerations", "a list"),
        ({"vllm": {"nodeSelector": {"gpu": 1}}}, "llm-gateway:vllm.nodeSelector.gpu", "quote numbers"),
        ({"vllm": "[1, 2"}, "llm-gateway:vllm", "expected an object"),
        ({"vllm": [1, 2]}, "llm-gateway:vllm", "expected an object"),
        ({"gateway": {"timeoutSeconds": 5}}, "llm-gateway:gateway.timeoutSeconds", "unknown key"),
        ({"openai": {"timeoutSeconds": 1}}, "llm-gateway:openai.timeoutSeconds", "from 5 to 3600"),
        ({"openai": {"apiBase": "http://api.openai.com"}}, "llm-gateway:openai.apiBase", "https://"),
        ({"openai": {"enabled": "no"}}, "llm-gateway:openai.enabled", "true or false"),
        ({"gateway": {"replicas": 0}}, "llm-gateway:gateway.replicas", "from 1 to 20"),
        ({"gateway": {"cooldownSeconds": 5}}, "llm-gateway:gateway.cooldownSeconds", "at least"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_fix(raw, key, fix):
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    message = str(caught.value)
    assert message.startswith(key + " "), message
    assert fix in message


def test_missing_openai_key_says_how_to_set_it_as_a_secret():
    with pytest.raises(ConfigError, match="pulumi config set --secret llm-gateway:openaiApiKey"):
        parse({}, key_state="missing")


def test_plaintext_openai_key_is_refused_without_showing_it():
    with pytest.raises(ConfigError, match="plain text") as caught:
        parse({}, key_state="plaintext")
    assert "value not shown" in str(caught.value)


def test_no_key_needed_without_the_cloud_tier():
    settings = parse({"openai": {"enabled": False}}, key_state="missing")
    assert [tier.name for tier in failover_chain(settings)] == ["vllm", "ollama"]


def test_long_bad_values_are_shortened_in_the_message():
    with pytest.raises(ConfigError) as caught:
        parse({"namespace": "x" * 500})
    assert len(str(caught.value)) < 300


_json_leaf = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=12), kids, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["namespace", "gamingMode", "vllm", "ollama", "openai", "gateway", "vlm", ""])
_object_keys = st.sampled_from(
    [
        "replicas",
        "gpuCount",
        "model",
        "image",
        "imageDigest",
        "resources",
        "tolerations",
        "nodeSelector",
        "timeoutSeconds",
        "enabled",
        "modelName",
        "numRetries",
        "cooldownSeconds",
        "storageSize",
        "extraArgs",
        "x",
    ]
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, st.one_of(_json, st.dictionaries(_object_keys, _json, max_size=4)), max_size=4))
def test_any_input_is_either_valid_with_cloud_last_or_a_config_error(raw):
    try:
        settings = parse(raw)
    except ConfigError as error:
        assert str(error).startswith("llm-gateway:")
        return
    chain = failover_chain(settings)
    assert chain[-1].name == "openai"
    assert [tier.in_cluster for tier in chain] == [True, True, False]


def test_a_long_unknown_key_is_shortened_in_the_message_too():
    # Found by the hostile-config property test: a 300-character key was echoed in full.
    with pytest.raises(ConfigError) as caught:
        parse({"vllm": {"a" * 500: 1}})
    message = str(caught.value)
    assert message.startswith("llm-gateway:vllm.aaaa") and "unknown key" in message
    assert len(message) < 600


@pytest.mark.parametrize("alias", ["chat", "chat-ollama", "chat-openai"])
def test_an_alias_may_not_name_the_chain_or_one_of_its_steps(alias):
    with pytest.raises(ConfigError, match=r"llm-gateway:gateway\.modelAliases\[1\]"):
        parse_settings({"gateway": {"modelAliases": ["vllm-qwen", alias]}}, openai_key="secret")


def test_an_alias_listed_twice_is_refused():
    with pytest.raises(ConfigError, match=r"modelAliases\[1\].*listed twice"):
        parse_settings({"gateway": {"modelAliases": ["vllm-qwen", "vllm-qwen"]}}, openai_key="secret")

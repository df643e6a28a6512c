"""Issue 20 item 3: one context for the chain, memory that holds it, and no prompt ever cut.

Ollama 0.12.6 cuts a prompt longer than its context without an error (runner/ollamarunner/runner.go
`truncating input prompt`), so in Gaming Mode a long document was answered from a fragment of itself.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from core.chain import OLLAMA_NEVER_TRUNCATE
from core.declarations import ConfigError
from core.litellm_config import litellm_config
from core.settings import parse_settings
from core.stack_files import stack_config, stack_settings
from drill import tokenizer
from drill.client import DRILL_MASTER_KEY
from gateway import context_check
from gateway.contract import CONTEXT_TOKENS
from pulumi_harness import DEPLOYMENT, run_program

KEY = {"openaiApiKey": "sk-test"}
ROOT = Path(__file__).resolve().parent.parent


def settings(**raw):
    return parse_settings(raw, openai_key="secret")


def words(count: int, seed: int = 1) -> str:
    """English-like text of about `count` tokens (one word, one token)."""
    pick = random.Random(seed).choice
    return " ".join(
        pick(("the", "report", "said", "that", "sales", "rose", "in", "march", "and", "fell")) for _ in range(count)
    )


# ---- one setting, given to every local tier -----------------------------------------------------


def test_prod_gives_its_context_through_the_one_setting_not_vllm_arguments():
    prod = stack_settings("prod")
    assert prod.gateway.context_tokens == 8192
    assert not any("max-model-len" in argument for argument in prod.vllm.extra_args)
    assert "max-model-len" not in json.dumps(stack_config("prod"))


@pytest.mark.parametrize("argument", ["--max-model-len", "--max-model-len=4096", "--max_model_len"])
def test_max_model_len_in_vllm_extra_args_is_refused_naming_the_key_and_the_fix(argument):
    with pytest.raises(ConfigError) as error:
        settings(vllm={"extraArgs": ["--gpu-memory-utilization", "0.9", argument, "4096"]})
    assert error.value.key == "llm-gateway:vllm.extraArgs[2]"
    assert "llm-gateway:gateway.contextTokens" in str(error.value)


def test_vllm_and_ollama_are_both_given_the_context():
    run = run_program(
        {"gateway": {"contextTokens": 16384}, "ollama": {"resources": {"requests": {"memory": "4Gi"}}}}, KEY
    )
    vllm_args = run.one(DEPLOYMENT, "vllm").inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    at = vllm_args.index("--max-model-len")
    assert vllm_args[at + 1] == "16384" and vllm_args.count("--max-model-len") == 1
    init = run.one(DEPLOYMENT, "ollama").inputs["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"]: e.get("value") for e in init["env"]}["MODEL_CONTEXT"] == "16384"
    assert "PARAMETER num_ctx %s" in init["command"][2] and '"$MODEL_CONTEXT"' in init["command"][2]


def test_the_gateway_knows_the_context_of_each_local_tier_and_ollama_never_truncates():
    config = litellm_config(settings(gateway={"contextTokens": 6000}))
    by_tier = {entry["model_info"]["id"]: entry for entry in config["model_list"]}
    assert by_tier["vllm"]["model_info"][CONTEXT_TOKENS] == by_tier["ollama"]["model_info"][CONTEXT_TOKENS] == 6000
    assert CONTEXT_TOKENS not in by_tier["openai"]["model_info"]  # the cloud's window is not ours
    assert by_tier["ollama"]["litellm_params"]["extra_body"] == {"truncate": False, "shift": False}
    assert "context_check.handler" in config["litellm_settings"]["callbacks"]


# ---- memory that holds it -------------------------------------------------------------------------


def test_an_ollama_memory_request_that_cannot_hold_the_context_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as error:
        settings(gateway={"contextTokens": 32768})  # default request 4Gi; qwen2.5:3b needs ~4.3 GiB then
    assert error.value.key == "llm-gateway:ollama.resources.requests.memory"
    assert '"4353Mi"' in error.value.fix and "gateway.contextTokens to at most 29012" in error.value.fix
    assert settings(gateway={"contextTokens": 32768}, ollama={"resources": {"requests": {"memory": "4353Mi"}}})
    with pytest.raises(ConfigError, match="at least"):
        settings(ollama={"resources": {"requests": {"memory": "2Gi"}}})  # not even 8192 tokens


def test_a_context_beyond_what_the_model_was_trained_for_is_refused():
    with pytest.raises(ConfigError) as error:
        settings(gateway={"contextTokens": 65536}, ollama={"resources": {"requests": {"memory": "16Gi"}}})
    assert error.value.key == "llm-gateway:gateway.contextTokens" and "32768" in error.value.fix


def test_a_model_without_an_estimate_needs_its_memory_figures():
    with pytest.raises(ConfigError) as error:
        settings(ollama={"model": "llama3.2:3b"})
    assert error.value.key == "llm-gateway:ollama.modelMemory"
    figures = {"model": "llama3.2:3b", "modelMemory": "2500Mi", "memoryPerContextToken": 150_000}
    assert settings(ollama=figures).ollama.memory_per_context_token == 150_000
    with pytest.raises(ConfigError, match=r"ollama\.resources\.requests\.memory"):
        settings(ollama={**figures, "memoryPerContextToken": 400_000})


# ---- the estimate -----------------------------------------------------------------------------------

SAMPLES = {
    "english": words(3000),
    "readme": (ROOT / "README.md").read_text()[:40000],
    "code": (ROOT / "core" / "settings.py").read_text(),
    "numbers": "\n".join(",".join(str(random.Random(n).randint(0, 10**9)) for _ in range(8)) for n in range(300)),
    "cjk": "上下文长度是整个链的一个设置。" * 400,
}


@pytest.mark.parametrize("name", SAMPLES)
def test_the_estimate_never_counts_fewer_tokens_than_the_model_sees(name):
    text = SAMPLES[name]
    messages = [{"role": "user", "content": text}]
    texts, overhead = context_check.prompt_texts({"messages": messages})
    estimate = overhead + sum(context_check.text_tokens(text) for text in texts)  # what the check adds up
    seen = tokenizer.chat_tokens(messages)
    assert seen <= estimate <= 1.4 * seen, (estimate, seen)


def test_a_short_prompt_is_not_tokenised_and_a_huge_one_only_until_past_the_limit(monkeypatch):
    counted: list[int] = []
    real = context_check.text_tokens
    monkeypatch.setattr(context_check, "text_tokens", lambda text: counted.append(len(text)) or real(text))
    assert context_check.refusal({"messages": [{"role": "user", "content": words(100)}]}, 8192) is None
    assert counted == []
    refused = context_check.refusal({"messages": [{"role": "user", "content": words(200_000)}]}, 8192)
    assert refused.status_code == 400 and "maximum context length is 8192 tokens" in refused.detail
    assert sum(counted) < 3 * context_check.PIECE_CHARACTERS  # not the whole megabyte


def test_max_tokens_counts_against_the_context_as_vllm_counts_it():
    prompt = {"messages": [{"role": "user", "content": words(5000)}]}
    assert context_check.refusal(prompt, 8192) is None
    refused = context_check.refusal({**prompt, "max_tokens": 4000}, 8192)
    assert refused is not None and "4000 for the answer" in refused.detail


# ---- through the real proxy, in Gaming Mode ---------------------------------------------------------


def post(drill, body: dict) -> httpx.Response:
    payload = {"model": drill.settings.gateway.model_name, "stream": False, **body}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    with httpx.Client(timeout=120, trust_env=False) as client:
        return client.post(f"{drill.url}/v1/chat/completions", json=payload, headers=headers)


@pytest.fixture
def gaming_mode(fresh):
    """vLLM handed back (0 replicas: refused), Ollama with the chain's context."""
    fresh.standins["vllm"].set_mode("down")
    ollama = fresh.standins["ollama"]
    ollama.truncations.clear()
    yield fresh
    ollama.context_tokens = fresh.settings.gateway.context_tokens


@pytest.mark.drill
def test_ollama_stand_in_cuts_a_long_prompt_silently_as_ollama_does(gaming_mode):
    """What Gaming Mode did before: the same prompt straight to Ollama without `truncate: false`."""
    ollama = gaming_mode.standins["ollama"]
    ollama.context_tokens = None  # Ollama's default context
    body = {"model": ollama.model, "messages": [{"role": "user", "content": words(7000)}], "stream": False}
    with httpx.Client(timeout=30, trust_env=False) as client:
        answer = client.post(f"{ollama.url}/api/chat", json=body)
    assert answer.status_code == 200 and answer.json()["prompt_eval_count"] == 4096  # answered from a fragment
    assert ollama.truncations == [
        {"limit": 4096, "prompt": tokenizer.chat_tokens(body["messages"]), "keep": 4, "new": 4096}
    ]
    with httpx.Client(timeout=30, trust_env=False) as client:
        refused = client.post(f"{ollama.url}/api/chat", json={**body, **OLLAMA_NEVER_TRUNCATE})
    assert refused.status_code == 400 and refused.json() == {"error": "the input length exceeds the context length"}


@pytest.mark.drill
def test_a_long_prompt_in_gaming_mode_is_refused_naming_the_limit_and_reaches_no_tier(gaming_mode):
    context = gaming_mode.settings.gateway.context_tokens
    answer = post(gaming_mode, {"messages": [{"role": "user", "content": words(3 * context)}]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert f"maximum context length is {context} tokens" in error["message"] and error["param"] == "messages"
    assert gaming_mode.counts() == {"vllm": 0, "ollama": 0, "openai": 0}
    assert gaming_mode.standins["ollama"].truncations == []


@pytest.mark.drill
def test_a_long_prompt_that_fits_is_answered_whole_by_ollama(gaming_mode):
    context = gaming_mode.settings.gateway.context_tokens
    messages = [{"role": "user", "content": words(context - 1000)}]  # past Ollama's default 4096
    answer = post(gaming_mode, {"messages": messages})
    assert answer.status_code == 200 and answer.headers["x-litellm-model-id"] == "ollama", answer.text
    assert answer.json()["usage"]["prompt_tokens"] == tokenizer.chat_tokens(messages)  # the whole prompt
    assert gaming_mode.standins["ollama"].truncations == []
    assert gaming_mode.counts()["openai"] == 0


@pytest.mark.drill
def test_a_prompt_past_the_estimate_is_refused_by_ollama_itself_never_cut_never_sent_out(gaming_mode):
    """An Ollama with less context than the gateway believes (a model trained for less, which Ollama
    caps silently): the gateway lets the prompt through, Ollama's `truncate: false` refuses it."""
    ollama = gaming_mode.standins["ollama"]
    ollama.context_tokens = 2048
    answer = post(gaming_mode, {"messages": [{"role": "user", "content": words(4000)}]})
    assert answer.status_code == 400, answer.text
    assert ollama.truncations == [] and gaming_mode.counts()["openai"] == 0


@pytest.mark.drill
@pytest.mark.parametrize("field", [{"num_ctx": 512}, {"extra_body": {"truncate": True}}, {"keep_alive": 0}])
def test_a_client_cannot_change_the_context_or_undo_truncate_false(gaming_mode, field):
    """`keep_alive: 0` too: LiteLLM forwards it to Ollama's /api/chat, which unloads the model after
    the answer, and the next request waits for a reload."""
    answer = post(gaming_mode, {"messages": [{"role": "user", "content": "hi"}], **field})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == next(iter(field)), answer.text
    assert gaming_mode.counts() == {"vllm": 0, "ollama": 0, "openai": 0}


@pytest.mark.drill
def test_legacy_functions_count_against_the_context_as_tools_do(gaming_mode):
    """LiteLLM hands Ollama legacy `functions` as `tools`, rendered into the prompt: a short message
    with long function declarations is as long as the same declarations given as `tools`."""
    context = gaming_mode.settings.gateway.context_tokens
    function = {"name": "lookup", "description": words(context), "parameters": {"type": "object", "properties": {}}}
    for field in ({"functions": [function]}, {"tools": [{"type": "function", "function": function}]}):
        answer = post(gaming_mode, {"messages": [{"role": "user", "content": "hi"}], **field})
        assert answer.status_code == 400, (next(iter(field)), answer.text)
        assert answer.json()["error"]["param"] == "messages"
    assert gaming_mode.counts() == {"vllm": 0, "ollama": 0, "openai": 0}
    assert gaming_mode.standins["ollama"].truncations == []


def test_the_estimate_counts_legacy_functions_like_tools():
    function = {"name": "lookup", "description": words(9000), "parameters": {"type": "object"}}
    messages = [{"role": "user", "content": "hi"}]
    assert context_check.refusal({"messages": messages, "functions": [function]}, 8192) is not None
    assert context_check.refusal({"messages": messages}, 8192) is None

"""An answer's `model` names the model that answered, as that tier serves it (gateway/served_model.py).

The drill tests run the real LiteLLM proxy on the dev stack's config, against stand-ins that name
their model as the real servers do: vLLM its served model name, Ollama the (derived) model it was
asked for, OpenAI the dated model behind the alias.
"""

from __future__ import annotations

import importlib.util
from urllib.parse import urlsplit

import pytest

from core.litellm_config import litellm_config
from core.names import SERVED_MODEL_FILE
from core.ollama_model import served_model
from core.stack_files import stack_settings
from drill.client import chat
from drill.standins import cloud_snapshot
from gateway.contract import ANSWERS_AS

MODEL = "chat"
SETTINGS = stack_settings("dev")
# What a client must read in `model` when each tier answers.
ANSWERED_AS = {
    "vllm": SETTINGS.vllm.model,  # vLLM's served model name
    "ollama": SETTINGS.ollama.model,  # the operator's model, not the derived one Ollama runs
    "openai": cloud_snapshot(SETTINGS.openai.model),  # what OpenAI reports
}
# The faults that make each tier the one that answers.
ANSWERING = {"vllm": {}, "ollama": {"vllm": "down"}, "openai": {"vllm": "down", "ollama": "down"}}


def _served_model_module():
    spec = importlib.util.spec_from_file_location(SERVED_MODEL_FILE.stem, SERVED_MODEL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ollama_tier_answers_as_the_operators_model_and_the_plugin_reads_that_key():
    served = _served_model_module()
    ollama = next(m for m in litellm_config(SETTINGS)["model_list"] if m["model_info"]["id"] == "ollama")
    assert ollama["model_info"][ANSWERS_AS] == SETTINGS.ollama.model != served_model(SETTINGS.ollama.model)
    assert ollama["litellm_params"]["model"].endswith(served_model(SETTINGS.ollama.model))
    assert served._answers_as(ollama["model_info"]) == SETTINGS.ollama.model  # what the plugin reads
    others = [m["model_info"] for m in litellm_config(SETTINGS)["model_list"] if m["model_info"]["id"] != "ollama"]
    assert all(ANSWERS_AS not in info for info in others)  # they report their own model


def test_the_public_name_drops_only_the_prefix_litellm_wrote():
    public = _served_model_module().public_model
    assert (
        public("ollama_chat/qwen2.5:3b-llm-gateway", "ollama_chat/qwen2.5:3b-llm-gateway", "qwen2.5:3b") == "qwen2.5:3b"
    )
    # LiteLLM's `"ollama_chat/" + model` on a plain answer: the deployment's own string, prefix dropped.
    assert public("ollama_chat/qwen2.5:3b", "ollama_chat/qwen2.5:3b", None) == "qwen2.5:3b"
    assert public("gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", None) == "gpt-4o-mini-2024-07-18"
    # Names the tier reported itself keep their slashes: a model id, a served model named `openai/...`,
    # in a plain answer and in stream chunks (no deployment string: LiteLLM wrote nothing there).
    assert public("Qwen/Qwen2.5-7B-Instruct-AWQ", "vllm-progress/Qwen/Qwen2.5-7B-Instruct-AWQ", None) == (
        "Qwen/Qwen2.5-7B-Instruct-AWQ"
    )
    assert public("openai/gpt-oss-20b", "vllm-progress/openai/gpt-oss-20b", None) == "openai/gpt-oss-20b"
    assert public("openai/gpt-oss-20b", "openai/openai/gpt-oss-20b", None) == "openai/gpt-oss-20b"
    assert public("openai/gpt-oss-20b", None, None) == "openai/gpt-oss-20b"


def test_loading_the_plugin_again_does_not_wrap_the_stream_parser_twice():
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    _served_model_module()
    first = CustomStreamWrapper.handle_openai_chat_completion_chunk
    _served_model_module()  # LiteLLM execs callback files by path, possibly more than once
    assert CustomStreamWrapper.handle_openai_chat_completion_chunk is first
    wrapped = [cell.cell_contents for cell in first.__closure__ if callable(cell.cell_contents)]
    assert not any(getattr(inner, "names_the_reported_model", False) for inner in wrapped)


@pytest.mark.drill
@pytest.mark.parametrize("tier", ["vllm", "ollama", "openai"])
def test_a_plain_answer_names_the_model_that_answered(fresh, tier):
    fresh.enter_phase(ANSWERING[tier])
    answer = chat(fresh.url, MODEL)
    assert answer.status == 200, answer.body
    assert answer.tier == tier  # x-litellm-model-id still names the tier
    assert answer.body["model"] == ANSWERED_AS[tier]


@pytest.mark.drill
@pytest.mark.parametrize("tier", ["vllm", "ollama", "openai"])
def test_every_chunk_of_a_stream_names_the_model_that_answered(fresh, tier):
    fresh.enter_phase(ANSWERING[tier])
    answer = chat(fresh.url, MODEL, stream=True)
    assert answer.status == 200, answer.body
    assert answer.tier == tier
    assert answer.content == " ".join(fresh.standins[tier].words())
    assert len(answer.chunks) > len(fresh.standins[tier].words())  # the role and finish chunks too
    assert {chunk["model"] for chunk in answer.chunks} == {ANSWERED_AS[tier]}


@pytest.mark.drill
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_model_name_with_a_slash_of_its_own_is_reported_whole(fresh, stream):
    """A tier that serves `openai/gpt-oss-20b` (its Hugging Face name) is named so: LiteLLM added no
    prefix there, so none is taken away, on the provider whose prefix looks the same."""
    cloud = fresh.standins["openai"]
    cloud.answers_as = "openai/gpt-oss-20b"
    try:
        fresh.enter_phase(ANSWERING["openai"])
        answer = chat(fresh.url, MODEL, stream=stream)
    finally:
        cloud.answers_as = ANSWERED_AS["openai"]
    assert answer.status == 200 and answer.tier == "openai", answer.body
    names = {chunk["model"] for chunk in answer.chunks} if stream else {answer.body["model"]}
    assert names == {"openai/gpt-oss-20b"}


# Response headers LiteLLM adds that name the chain's insides (issue 20 review, item 2).
INTERNAL_HEADERS = {
    "x-litellm-model-name",
    "x-litellm-model-api-base",
    "x-litellm-model-group",
    "x-litellm-model-region",
    "x-litellm-version",
}


@pytest.mark.drill
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("tier", ["vllm", "ollama", "openai"])
def test_no_answer_names_the_chains_insides_in_its_headers(fresh, tier, stream):
    fresh.enter_phase(ANSWERING[tier])
    answer = chat(fresh.url, MODEL, stream=stream)
    assert answer.status == 200 and answer.tier == tier, answer.body  # the tier is still named
    assert not INTERNAL_HEADERS & answer.headers.keys(), answer.headers
    config = litellm_config(SETTINGS)
    internals = {
        *(entry["model_name"] for entry in config["model_list"] if entry["model_name"] != MODEL),
        *(entry["litellm_params"]["model"] for entry in config["model_list"]),
        *(urlsplit(standin.url).netloc for standin in fresh.standins.values()),
    }
    leaked = {(name, value) for name, value in answer.headers.items() for inner in internals if inner in value}
    assert not leaked

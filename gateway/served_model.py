"""The answer names the model that wrote it: a LiteLLM callback inside the proxy (shipped in the ConfigMap).

A client reads `model` to account, cache and evaluate by the model that answered, as OpenAI's own
API names it (ask for `gpt-4o-mini`, read `gpt-4o-mini-2024-07-18`). LiteLLM 1.108.7 on its own:
- stamps the name the client asked for (our alias `chat`) on the first tier's answers
  (proxy/common_request_processing.py `_override_openai_response_model`, proxy/proxy_server.py
  `_restamp_streaming_chunk_model`); after a fallback, plain answers keep the provider's string
  (`ollama_chat/qwen2.5:3b-llm-gateway`) and stream chunks get the model group (`chat-ollama`);
- stamps the deployment's own model on every stream chunk, dropping the dated name OpenAI sends in
  each of them: it keeps the chunk's name for Azure only (litellm_core_utils/streaming_handler.py
  `_dispatch_provider_chunk`; BerriAI/litellm#10572).

Here every answer carries the model as the tier that answered serves it: vLLM its served model
name, the cloud the dated model OpenAI reports, never a provider prefix, never our alias. A tier
whose `model_info.answers_as` is set (Ollama, which serves the model the init container derived
from the operator's, core/ollama_model.py) answers as that name instead. The response header
`x-litellm-model-id` still names the tier.

How, at the least cost per chunk:
- before the call, the request carries LiteLLM's own "return the raw model name" flag
  (`constants.RETURN_RAW_MODEL_NAME_METADATA_KEY`, which its complexity router sets): the proxy then
  leaves `model` alone, which also spares the copy of every chunk its restamping made;
- a stream's wrapper takes the model each chunk reports (one comparison per chunk; the name is
  worked out again only when it changes), as LiteLLM already does for Azure;
- a plain answer gets its name once, in the proxy's success hook.
"""

import base64
import os
import struct
import sys
from typing import Any

from litellm.constants import RETURN_RAW_MODEL_NAME_METADATA_KEY
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
from litellm.types.utils import EmbeddingResponse, ModelResponse

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import ANSWERS_AS


def public_model(reported: str, deployment_model: str | None, answers_as: str | None) -> str:
    """What `model` says: the tier's declared name if it has one, else what the tier reported.

    LiteLLM's provider prefix is dropped only where LiteLLM wrote it: a plain answer whose model is
    the deployment's own `<provider>/<model>` string (Ollama's transformation sets
    `"ollama_chat/" + model`, llms/ollama/chat/transformation.py). A name the tier reported itself is
    kept whole, slashes and all: vLLM may serve `openai/gpt-oss-20b`, and stream chunks carry the
    provider's own name (`deployment_model` None)."""
    if answers_as:
        return answers_as
    if deployment_model and reported == deployment_model and "/" in reported:
        return reported.split("/", 1)[1]
    return reported


def _answers_as(model_info: Any) -> str | None:
    return model_info.get(ANSWERS_AS) if model_info else None


def _stream_answers_as(stream: CustomStreamWrapper) -> str | None:
    """The answering deployment's `answers_as`, from the call LiteLLM is logging for this stream."""
    litellm_params = stream.logging_obj.model_call_details.get("litellm_params") or {}
    return _answers_as(litellm_params.get("model_info"))


def _streams_name_the_model_each_chunk_reports() -> None:
    """Every provider whose chunks carry a model (OpenAI, Ollama, …) passes each chunk through
    `handle_openai_chat_completion_chunk` before the wrapper stamps its own `model` on it; the
    chunks the wrapper makes itself (the finish and usage chunks) take `_cached_model_name`."""
    parse = CustomStreamWrapper.handle_openai_chat_completion_chunk
    if getattr(parse, "names_the_reported_model", False):
        return  # an earlier load of this file did it (LiteLLM execs callback files by path)

    def parse_naming_the_reported_model(stream: CustomStreamWrapper, chunk: Any) -> Any:
        reported = getattr(chunk, "model", None)
        if reported and reported != getattr(stream, "_llm_gateway_reported_model", None):
            stream._llm_gateway_reported_model = reported
            name = public_model(reported, None, _stream_answers_as(stream))
            stream.model = stream._cached_model_name = name
        return parse(stream, chunk)

    parse_naming_the_reported_model.names_the_reported_model = True
    CustomStreamWrapper.handle_openai_chat_completion_chunk = parse_naming_the_reported_model


_streams_name_the_model_each_chunk_reports()


class ServedModel(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        metadata = data.get("metadata")
        if metadata is None:
            metadata = data["metadata"] = {}
        if isinstance(metadata, dict):
            metadata[RETURN_RAW_MODEL_NAME_METADATA_KEY] = True
        return data

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        if isinstance(response, EmbeddingResponse):
            return self._embeddings_answer(data, response)
        if isinstance(response, ModelResponse) and response.model:
            # The proxy looked the answering deployment up by the response's model id.
            deployment = data.get("deployment")
            answers_as = _answers_as(getattr(deployment, "model_info", None))
            deployment_model = getattr(getattr(deployment, "litellm_params", None), "model", None)
            response.model = public_model(response.model, deployment_model, answers_as)
        return response

    @staticmethod
    def _embeddings_answer(data: dict, response: EmbeddingResponse) -> None:
        """An embeddings answer names the chain's model, not `ollama/<derived tag>`, and comes in the
        format asked: Ollama's tier answers floats (LiteLLM drops `encoding_format` for it), so a
        client that asked for base64, as OpenAI's SDK does by default, gets base64 from every tier."""
        deployment = data.get("deployment")
        answers_as = _answers_as(getattr(deployment, "model_info", None))
        deployment_model = getattr(getattr(deployment, "litellm_params", None), "model", None)
        if response.model:
            response.model = public_model(response.model, deployment_model, answers_as)
        if data.get("encoding_format") == "base64":
            for item in response.data or []:
                vector = item.get("embedding") if isinstance(item, dict) else getattr(item, "embedding", None)
                if not isinstance(vector, list):
                    continue  # already base64 (vLLM honours it)
                packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if isinstance(item, dict):
                    item["embedding"] = packed
                else:
                    item.embedding = packed
        return None


handler = ServedModel()

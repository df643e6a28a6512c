"""A prompt longer than the chain's context is refused with a 400 naming the limit: a LiteLLM callback
inside the proxy (shipped in the ConfigMap beside config.yaml).

Every local tier holds the same context (`gateway.contextTokens`: vLLM's --max-model-len, Ollama's
num_ctx), written by core/litellm_config.py into each local deployment's `model_info.context_tokens`.
Before any tier is called (`async_pre_call_hook`) the prompt's tokens are estimated; a prompt whose
estimate plus the answer the client asked room for (`max_tokens`) exceeds that context is answered
400 in OpenAI's format (param `messages`, reason `context_length_exceeded`). So a long prompt is never
cut by Ollama in Gaming Mode, and never sent to the cloud because it is long (NFR68): the cloud's
larger window is not a reason to leave the cluster.

The estimate is an upper bound for Qwen2/2.5 and Llama 3, whose vocabularies extend OpenAI's cl100k
and split text the same way except digits: Qwen takes one token per digit, cl100k up to three. So
tokens <= cl100k tokens + digits, plus the chat template's few tokens per message. Measured against
Qwen2.5's own vocabulary (docs/failover.md, "Long prompts"): 1-4 % high on English, German, French and
code, 20-34 % high on Russian, Chinese, Japanese and numbers; never low. A prompt within that margin
of the limit may be refused although it would fit. Short prompts are not tokenised at all: a
byte-level BPE token is at least one byte, so a prompt of fewer bytes than the limit fits. Long ones
are tokenised piece by piece only until the count passes the limit, so a huge prompt costs no more
than one at the limit. cl100k ships inside LiteLLM (litellm_core_utils/tokenizers): nothing is
downloaded.

If a prompt still got past the estimate (another tokenizer), no tier cuts it: vLLM refuses it with
its own 400, and Ollama is told `truncate: false` (core/chain.py OLLAMA_NEVER_TRUNCATE).

A client may not change the context either: `num_ctx` would reload Ollama's runner with another
context (server/sched.go needsReload), and a raw `extra_body` would replace the deployment's, which
carries `truncate: false` (LiteLLM's router puts the request's fields over the deployment's). Nor
how long Ollama keeps the model loaded: LiteLLM forwards `keep_alive` top-level to /api/chat
(llms/ollama/chat/transformation.py), and `keep_alive: 0` would unload the model after every answer.
"""

import asyncio
import json
import os
import sys
import unicodedata

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import CONTEXT_LENGTH_EXCEEDED, CONTEXT_TOKENS, INVALID_REQUEST, chain_groups

# The chat template's tokens around each message (Qwen2.5: <|im_start|>role\n ... <|im_end|>\n is 5).
PER_MESSAGE = 8
# The template's fixed part: the answer's header, and the default system prompt Qwen2.5 adds when
# the client sends none ("You are Qwen, created by Alibaba Cloud. ...": about 20 tokens).
PER_REQUEST = 40
# Tools are rendered as their JSON inside a system block with instructions (~150 tokens in Qwen2.5).
PER_TOOLS = 200
CHAT_CALLS = ("completion", "acompletion")
TEXT_CALLS = ("text_completion", "atext_completion")
EMBEDDING_CALLS = ("embedding", "aembedding")
# An embedding model's own tokens around each input (BERT-like models: [CLS] and [SEP]).
PER_INPUT = 2
# Fields that would change the context a tier runs with, or undo Ollama's `truncate: false`; and
# Ollama's `keep_alive`, which decides when the runner (and its context) is unloaded.
CONTEXT_FIELDS = ("num_ctx", "extra_body", "keep_alive")
CONTEXT_IS_OURS = "the context length is the gateway's (contextTokens)"
WHY_REFUSED = {"keep_alive": "how long the model stays loaded is the gateway's"}
PIECE_CHARACTERS = 16_384  # tokenised at a time, cut at whitespace (where a token ends anyway)


def _encoding():
    """cl100k, from the copy LiteLLM bundles (importing this module points tiktoken at it)."""
    from litellm.litellm_core_utils.default_encoding import encoding

    return encoding


def text_tokens(text: str) -> int:
    """At most this many tokens for Qwen2/2.5 and Llama 3: cl100k's count plus one per digit."""
    text = unicodedata.normalize("NFC", text)
    return len(_encoding().encode_ordinary(text)) + sum(character.isdigit() for character in text)


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") if isinstance(part, dict) and isinstance(part.get("text"), str) else json.dumps(part)
            for part in content
        )
    return "" if content is None else json.dumps(content)


def prompt_texts(data: dict) -> tuple[list[str], int]:
    """The texts a tier tokenises for this request, and the template tokens around them."""
    messages = data.get("messages")
    texts, overhead = [], PER_REQUEST
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            overhead += PER_MESSAGE
            texts.append(_content_text(message.get("content")))
            for extra in ("name", "tool_calls", "function_call", "tool_call_id"):
                if message.get(extra) is not None:
                    texts.append(_content_text(message[extra]))
    prompt = data.get("prompt")
    if prompt is not None:
        texts.append(_content_text(prompt))
    # Legacy `functions` reach Ollama as `tools` (LiteLLM converts them), rendered into the prompt alike.
    for field in ("tools", "functions"):
        if data.get(field):
            overhead += PER_TOOLS
            texts.append(json.dumps(data[field]))
    return texts, overhead


def answer_room(data: dict) -> int:
    """The answer's tokens the client asked room for, as vLLM counts them against its context."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = data.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 1  # at least the first token of the answer


def pieces(text: str):
    """`text` in pieces of about PIECE_CHARACTERS, each ending before whitespace."""
    while len(text) > PIECE_CHARACTERS:
        cut = max(text.rfind(" ", 0, PIECE_CHARACTERS), text.rfind("\n", 0, PIECE_CHARACTERS))
        cut = cut if cut > 0 else PIECE_CHARACTERS
        yield text[:cut]
        text = text[cut:]
    yield text


def fits_by_bytes(texts: list[str], overhead: int, budget: int) -> bool:
    """Fewer bytes than room: it fits, whatever the tokenizer (a byte-level BPE token is >= 1 byte)."""
    return sum(len(text.encode()) for text in texts) + overhead <= budget


def estimated_tokens(data: dict, budget: int) -> tuple[int, bool]:
    """(the prompt's tokens estimated from above, whether all were counted): counting stops once
    past `budget`, and below it the exact count does not matter."""
    texts, overhead = prompt_texts(data)
    if fits_by_bytes(texts, overhead, budget):
        return overhead, False
    total = overhead
    for text in texts:
        for piece in pieces(text):
            total += text_tokens(piece)
            if total > budget:
                return total, False
    return total, True


def too_long(context: int, tokens: int, counted_all: bool, room: int) -> HTTPException:
    """OpenAI's words for it (its code is `context_length_exceeded`), naming the gateway's limit."""
    asked = f" and {room} for the answer (max_tokens)" if room > 1 else ""
    amount = f"about {tokens}" if counted_all else f"more than {tokens - 1}"
    error = HTTPException(
        status_code=400,
        detail=(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{amount} tokens{asked} (estimated, possibly a few percent high). Please reduce the length of the "
            "messages."
        ),
    )
    error.type = "invalid_request_error"
    error.param = "messages"
    error.provider_specific_fields = {"reason": CONTEXT_LENGTH_EXCEEDED, "context_tokens": context}
    return error


def context_field(field: str) -> HTTPException:
    error = HTTPException(
        status_code=400,
        detail=f"Invalid value for '{field}': {WHY_REFUSED.get(field, CONTEXT_IS_OURS)}; remove it.",
    )
    error.type = "invalid_request_error"
    error.param = field
    error.provider_specific_fields = {"reason": INVALID_REQUEST}
    return error


def chain_context(requested: str | None = None) -> int | None:
    """The smallest context of the requested chain's local tiers (equal by design), or of every
    tier in the proxy's model list when no chain is named."""
    try:
        from litellm.proxy.proxy_server import llm_router
    except ImportError:
        return None
    if llm_router is None:
        return None
    groups = set(chain_groups(llm_router.fallbacks, requested)) if requested else None
    limits = [
        (entry.get("model_info") or {}).get(CONTEXT_TOKENS)
        for entry in llm_router.model_list or []
        if entry and (groups is None or entry.get("model_name") in groups)
    ]
    limits = [limit for limit in limits if isinstance(limit, int)]
    return min(limits) if limits else None


def refusal(data: dict, context: int | None) -> HTTPException | None:
    """Why this request cannot be served within `context` tokens, or None."""
    for field in CONTEXT_FIELDS:
        if data.get(field) is not None:
            return context_field(field)
    if context is None:
        return None
    room = answer_room(data)
    tokens, counted_all = estimated_tokens(data, context - room)
    return too_long(context, tokens, counted_all, room) if tokens + room > context else None


def embedding_inputs(data: dict) -> list:
    """An embeddings request's inputs, each its own sequence: a string, or a list of token ids."""
    value = data.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    return list(value) if isinstance(value, list) else []


def input_too_long(context: int, index: int, tokens: int) -> HTTPException:
    error = HTTPException(
        status_code=400,
        detail=(
            f"This model's maximum context length is {context} tokens. However, input {index} resulted in about "
            f"{tokens} tokens (estimated, possibly a few percent high). Please reduce the length of the input."
        ),
    )
    error.type = "invalid_request_error"
    error.param = "input"
    error.provider_specific_fields = {"reason": CONTEXT_LENGTH_EXCEEDED, "context_tokens": context}
    return error


def _may_overflow(text, context: int) -> bool:
    """More bytes (or token ids) than room: worth counting its tokens."""
    size = len(text) if isinstance(text, list) else len(text.encode()) if isinstance(text, str) else 0
    return size + PER_INPUT > context


def embedding_refusal(data: dict, context: int | None) -> HTTPException | None:
    """An input longer than the chain's context gets a 400 before any tier: vLLM would refuse it, but
    Ollama cuts it (truncate) and answers the vector of a shorter text, which fits no index."""
    if context is None:
        return None
    for index, text in enumerate(embedding_inputs(data)):
        if not _may_overflow(text, context):
            continue
        if isinstance(text, list):
            tokens = len(text) + PER_INPUT
        else:
            tokens = sum(text_tokens(piece) for piece in pieces(text)) + PER_INPUT
        if tokens > context:
            return input_too_long(context, index, tokens)
    return None


class ContextCheck(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if call_type in EMBEDDING_CALLS:
            context = chain_context(data.get("model"))
            if context is not None and any(_may_overflow(text, context) for text in embedding_inputs(data)):
                refused = await asyncio.to_thread(embedding_refusal, data, context)  # tokenising: off the loop
                if refused is not None:
                    raise refused
            return data
        if call_type not in CHAT_CALLS + TEXT_CALLS:
            return data
        context = chain_context(data.get("model"))
        if context is not None and not fits_by_bytes(*prompt_texts(data), context - answer_room(data)):
            # Tokenising a long prompt takes milliseconds (9 ms near 8192 tokens, 25 ms at most past
            # it): off the event loop, which serves every other request (tiktoken releases the GIL).
            refused = await asyncio.to_thread(refusal, data, context)
        else:
            refused = refusal(data, context)
        if refused is not None:
            raise refused
        return data


handler = ContextCheck()

"""The stand-in models' tokenizer: close to Qwen2.5's, from what ships offline.

Qwen2/2.5's vocabulary starts from OpenAI's cl100k and splits text with the same pattern except
digits, which it takes one at a time (dashscope's qwen_tokenizer.py PAT_STR: `\\p{N}`, where cl100k
has `\\p{N}{1,3}`). cl100k's merges with Qwen's pattern count like Qwen on digits and at least
like it elsewhere; cl100k itself ships inside LiteLLM (litellm_core_utils/tokenizers), so the
drill needs no download. The chat template is Qwen2.5's: `<|im_start|>role\\n...<|im_end|>\\n` per
message (5 tokens around the content) and `<|im_start|>assistant\\n` (3) for the answer.
"""

from __future__ import annotations

import functools
import os
from typing import Any

QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
AROUND_MESSAGE = 5
ANSWER_HEADER = 3


@functools.cache
def _encoding():
    # Importing litellm fetches its model cost map from the internet unless told not to: the drill
    # talks to loopback only (the proxy it starts is told the same by gateway_environment).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import tiktoken
    from litellm.litellm_core_utils.default_encoding import encoding as cl100k

    return tiktoken.Encoding(
        "qwen-like", pat_str=QWEN_PATTERN, mergeable_ranks=cl100k._mergeable_ranks, special_tokens={}
    )


def tokens(text: str) -> int:
    return len(_encoding().encode_ordinary(text))


def message_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    return tokens(content if isinstance(content, str) else str(content or "")) + AROUND_MESSAGE


def chat_tokens(messages: list[dict[str, Any]]) -> int:
    """The rendered chat prompt's tokens, as the runner receives it."""
    return sum(message_tokens(message) for message in messages) + ANSWER_HEADER

"""The chain's context length (`contextTokens`): how each local tier is given it, and what it costs.

Pure: no Pulumi import. One number for the whole chain, because a request fails over between tiers:
a prompt that fits vLLM must fit Ollama too, or Gaming Mode answers a different prompt.
- vLLM gets it as `--max-model-len` (components/vllm.py). vLLM refuses a longer prompt with a 400,
  and refuses to start when the GPU cannot hold the KV cache for that length
  (vllm v0.11.0 vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory): GPU memory is
  vLLM's own check, at start, in the open.
- Ollama gets it as `PARAMETER num_ctx` of the served model (components/ollama.py). Left alone it is
  4096 (ollama v0.12.6 envconfig/config.go OLLAMA_CONTEXT_LENGTH), and a longer prompt is cut
  without an error (runner/ollamarunner/runner.go: `truncating input prompt`). Ollama sizes the
  runner's memory from it, and refuses to load a model that does not fit ("model requires more
  system memory", llm/server.go): at request time, which would be a failover to the cloud. So the
  stack is refused here instead when the container's memory request cannot hold it.

The memory figures are estimates, made the way Ollama makes its own (fs/ggml/ggml.go GraphSize,
v0.12.6, for the `qwen2` architecture, f16 KV cache, one request at a time, batch 512):
- per context token: the KV cache, layers x 2 (K, V) x KV heads x head size x 2 bytes, plus the
  attention's compute buffer, 4 x batch x (1 + heads) bytes;
- apart from the context: the model file plus the output buffer, 4 x batch x (embedding + vocabulary).
Ollama takes the larger of its two buffer terms; adding both keeps the estimate on the high side.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MODEL_LEN_FLAG = "--max-model-len"
BATCH = 512  # Ollama's default num_batch (api/types.go DefaultOptions)
F16_BYTES = 2
FLOAT_BYTES = 4


@dataclass(frozen=True)
class ModelShape:
    """What Ollama's memory estimate reads from a model (its GGUF metadata)."""

    file_bytes: int  # the model's size as `ollama list` shows it
    layers: int
    heads: int
    kv_heads: int
    head_size: int
    embedding: int
    vocabulary: int
    trained_context: int  # Ollama caps num_ctx at this (llm/server.go "requested context size too large")

    @property
    def bytes_per_context_token(self) -> int:
        kv_cache = self.layers * 2 * self.kv_heads * self.head_size * F16_BYTES
        attention = FLOAT_BYTES * BATCH * (1 + self.heads)
        return kv_cache + attention

    @property
    def bytes_apart_from_context(self) -> int:
        return self.file_bytes + FLOAT_BYTES * BATCH * (self.embedding + self.vocabulary)


# Qwen2.5 (the default family): shapes from the Qwen2.5 technical report (layers, query/KV heads),
# sizes of the Ollama library's default quantisation (Q4_K_M) as its model pages list them.
_QWEN_VOCABULARY = 151_936
KNOWN_OLLAMA_MODELS = {
    "qwen2.5:0.5b": ModelShape(398_000_000, 24, 14, 2, 64, 896, _QWEN_VOCABULARY, 32_768),
    "qwen2.5:1.5b": ModelShape(986_000_000, 28, 12, 2, 128, 1536, _QWEN_VOCABULARY, 32_768),
    "qwen2.5:3b": ModelShape(1_900_000_000, 36, 16, 2, 128, 2048, _QWEN_VOCABULARY, 32_768),
    "qwen2.5:7b": ModelShape(4_700_000_000, 28, 28, 4, 128, 3584, _QWEN_VOCABULARY, 32_768),
}


def sets_max_model_len(argument: str) -> bool:
    """`--max-model-len 8192`, `--max-model-len=8192`, `--max_model_len ...` (vLLM's parser takes
    underscores for dashes): the chain's context belongs to `contextTokens`."""
    name = argument.split("=", 1)[0].replace("_", "-")
    return name == MAX_MODEL_LEN_FLAG


def memory_needed(apart_from_context: int, per_context_token: int, context_tokens: int) -> int:
    """Bytes an Ollama runner holding `context_tokens` needs, estimated."""
    return apart_from_context + per_context_token * context_tokens


def largest_context(apart_from_context: int, per_context_token: int, memory: int) -> int:
    """The longest context `memory` bytes hold by the same estimate (0 if not even the model)."""
    return max(0, (memory - apart_from_context) // per_context_token)


def mebibytes(amount: int) -> int:
    """Whole MiB, rounded up: what a fix may ask for without falling short."""
    return -(-amount // 2**20)

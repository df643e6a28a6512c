"""The stand-ins' embeddings, against what the real servers answer and what LiteLLM makes of it.

vLLM 0.11.0 (POST /v1/embeddings), Ollama 0.12.6 (POST /api/embed) and OpenAI (the cloud) as
drill/standins.py describes them, then the real LiteLLM SDK (`openai/`, `hosted_vllm/`, `ollama/`)
against them: what it sends, that it parses every answer into an EmbeddingResponse, how it takes
their errors. Loopback only; every stand-in is stopped, every wait bounded.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

import httpx
import litellm
import pytest

from drill.runner import free_port
from drill.standins import (
    BGE_M3,
    EmbeddingModel,
    OllamaStandIn,
    OpenAIStandIn,
    StandIn,
    decode_base64_vector,
    float32,
    go_float32,
    tokenizer,
)

VLLM_NAME = "BAAI/bge-m3"  # vLLM serves the Hugging Face id (no --served-model-name)
OLLAMA_TAG = "bge-m3"  # the same weights, as Ollama's library names them
TEXT = "The gateway falls over from vLLM to Ollama."
MATRYOSHKA = EmbeddingModel("example/matryoshka-embed", 768, 2048, matryoshka=(768, 512, 256))


@pytest.fixture
def started():
    """Start stand-ins through `started(standin)`; all are stopped after the test."""
    running: list[StandIn] = []

    def start(standin: StandIn) -> StandIn:
        running.append(standin.start())
        return standin

    yield start
    for standin in running:
        standin.set_mode("up")  # releases anything hung
        standin.stop()


@pytest.fixture
def vllm(started) -> OpenAIStandIn:
    return started(OpenAIStandIn("vllm", VLLM_NAME, free_port()))


@pytest.fixture
def ollama(started) -> OllamaStandIn:
    return started(OllamaStandIn("ollama", OLLAMA_TAG, free_port()))


@pytest.fixture
def cloud(started) -> OpenAIStandIn:
    return started(OpenAIStandIn("openai", "gpt-4o-mini", free_port(), snapshot="gpt-4o-mini-2024-07-18"))


def post(url: str, body, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(url, json=body, timeout=timeout)


def embed_vllm(standin: OpenAIStandIn, timeout: float = 10.0, **body) -> httpx.Response:
    return post(f"{standin.url}/v1/embeddings", {"model": standin.model, **body}, timeout)


def embed_ollama(standin: OllamaStandIn, timeout: float = 10.0, **body) -> httpx.Response:
    return post(f"{standin.url}/api/embed", {"model": standin.model, **body}, timeout)


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))


def gauges(standin: OpenAIStandIn) -> dict[str, float]:
    lines = httpx.get(f"{standin.url}/metrics", timeout=5).text.splitlines()
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vllm:")}


def wait_until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def in_background(call) -> tuple[threading.Thread, list]:
    """Run `call()` in a thread; its result (or exception) lands in the list."""
    result: list = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as error:  # handed to the test
            result.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# ---- vLLM 0.11.0 ----
def test_vllm_answers_with_the_real_field_set(vllm):
    answer = embed_vllm(vllm, input=TEXT)
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["id", "object", "created", "model", "data", "usage"]
    assert body["id"].startswith("embd-") and body["object"] == "list" and body["model"] == VLLM_NAME
    assert [list(item) for item in body["data"]] == [["index", "object", "embedding"]]
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    vector = body["data"][0]["embedding"]
    assert len(vector) == 1024 and math.isclose(norm(vector), 1.0, rel_tol=1e-6)
    assert vector == float32(vector)  # float32 values written exactly
    tokens = tokenizer.tokens(TEXT) + 2  # <s> … </s>
    assert body["usage"] == {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def test_vllm_names_its_served_model_whatever_the_request_said(vllm):
    assert post(f"{vllm.url}/v1/embeddings", {"input": "x"}).json()["model"] == VLLM_NAME  # no model: the default


def test_vllm_takes_every_input_form(vllm):
    ids = tokenizer._encoding().encode_ordinary(TEXT)
    text = embed_vllm(vllm, input=[TEXT, "second"]).json()
    assert [item["index"] for item in text["data"]] == [0, 1]
    one_token_list = embed_vllm(vllm, input=ids).json()
    assert len(one_token_list["data"]) == 1 and one_token_list["usage"]["prompt_tokens"] == len(ids)
    # Token ids are the same text to the model: the same vector.
    assert one_token_list["data"][0]["embedding"] == text["data"][0]["embedding"]
    two_token_lists = embed_vllm(vllm, input=[ids, ids[:3]]).json()
    assert two_token_lists["usage"]["prompt_tokens"] == len(ids) + 3


def test_vllm_base64_is_the_float32_bytes_of_the_float_answer(vllm):
    floats = embed_vllm(vllm, input=TEXT).json()["data"][0]["embedding"]
    encoded = embed_vllm(vllm, input=TEXT, encoding_format="base64").json()["data"][0]["embedding"]
    assert isinstance(encoded, str) and decode_base64_vector(encoded) == floats


def test_vllm_refuses_dimensions_unless_the_model_is_matryoshka(vllm, started):
    refused = embed_vllm(vllm, input=TEXT, dimensions=256)
    assert refused.status_code == 400
    message = (
        'Model "BAAI/bge-m3" does not support matryoshka representation, '
        "changing output dimensions will lead to poor results."
    )
    assert refused.json() == {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    assert vllm.served["embeddings-invalid"] == 1 and vllm.embedding_requests == 0

    matryoshka = started(OpenAIStandIn("vllm", "matryoshka", free_port(), embedding_model=MATRYOSHKA))
    full = embed_vllm(matryoshka, input=TEXT).json()["data"][0]["embedding"]
    cut = embed_vllm(matryoshka, input=TEXT, dimensions=256).json()["data"][0]["embedding"]
    assert len(full) == 768 and len(cut) == 256 and math.isclose(norm(cut), 1.0, rel_tol=1e-6)
    assert cosine(cut, full[:256]) > 0.999999  # the first 256, normalised again
    other = embed_vllm(matryoshka, input=TEXT, dimensions=300)
    assert other.status_code == 400
    assert other.json()["error"]["message"].startswith('Model "matryoshka" only supports [768, 512, 256] matryoshka')


def test_vllm_refuses_an_input_longer_than_its_context(started):
    vllm = started(OpenAIStandIn("vllm", VLLM_NAME, free_port()))
    vllm.context_tokens = 64  # --max-model-len
    long_text = " ".join(f"w{i}" for i in range(200))
    tokens = tokenizer.tokens(long_text) + 2
    refused = embed_vllm(vllm, input=["short", long_text])
    assert refused.status_code == 400
    message = (
        f"This model's maximum context length is 64 tokens. However, your request has {tokens} input tokens. "
        "Please reduce the length of the input messages."
    )
    assert refused.json()["error"] == {"message": message, "type": "BadRequestError", "param": None, "code": 400}
    assert embed_vllm(vllm, input=list(range(65))).status_code == 400  # token ids count as they are
    cut = embed_vllm(vllm, input=long_text, truncate_prompt_tokens=10).json()
    assert cut["usage"]["prompt_tokens"] <= 10
    assert (
        embed_vllm(vllm, input=long_text, truncate_prompt_tokens=65)
        .json()["error"]["message"]
        .startswith("truncate_prompt_tokens value is greater than max_model_len")
    )
    assert vllm.prompt_tokens == cut["usage"]["prompt_tokens"]  # refusals never reached the engine


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        ({"input": []}, 400, "BadRequestError", "please provide at least one prompt"),
        ({"input": [[]]}, 400, "BadRequestError", "please provide at least one prompt"),
        ({"input": "x", "encoding_format": "int8"}, 400, "Bad Request", "encoding_format: Input should be"),
        ({"input": [1, "x"]}, 400, "Bad Request", "input: Input should be"),
        ({"input": "x", "model": "other"}, 404, "NotFoundError", "The model `other` does not exist."),
        ({"input": [10**6]}, 400, "BadRequestError", "Token id 1000000 is out of vocabulary"),
    ],
)
def test_vllm_refuses_as_vllm_does(vllm, body, status, error_type, message):
    answer = post(f"{vllm.url}/v1/embeddings", {"model": VLLM_NAME, **body})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["type"] == error_type and error["message"].startswith(message) and error["code"] == status


def test_vllm_chat_and_embedding_models_each_refuse_the_other_route_with_http_200(vllm, started):
    """vLLM 0.11.0 returns the ErrorResponse object from the route: FastAPI sends it as a 200."""
    chat_model = started(OpenAIStandIn("vllm", "Qwen/Qwen2.5-0.5B-Instruct", free_port()))
    answer = embed_vllm(chat_model, input=TEXT)
    assert answer.status_code == 200
    assert answer.json()["error"]["message"] == "The model does not support Embeddings API"
    chat = post(
        f"{vllm.url}/v1/chat/completions", {"model": VLLM_NAME, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert chat.status_code == 200
    assert chat.json()["error"]["message"] == "The model does not support Chat Completions API"
    assert chat_model.served["unsupported"] == vllm.served["unsupported"] == 1


def test_vllm_each_input_takes_an_engine_slot_queues_and_counts_its_prompt_tokens(vllm):
    vllm.set_mode("slow", delay=0.4, slots=1)
    before = gauges(vllm)["vllm:prompt_tokens_total"]
    thread, result = in_background(lambda: embed_vllm(vllm, input=[TEXT, "second", "third"]))
    assert wait_until(lambda: gauges(vllm)["vllm:num_requests_waiting"] == 2.0)
    assert gauges(vllm)["vllm:num_requests_running"] == 1.0
    thread.join(10)
    answer = result[0].json()
    assert len(answer["data"]) == 3
    metrics = gauges(vllm)
    assert metrics["vllm:prompt_tokens_total"] - before == answer["usage"]["prompt_tokens"]
    assert metrics["vllm:generation_tokens_total"] == 0.0  # pooling produces no tokens
    assert metrics["vllm:num_requests_running"] == metrics["vllm:num_requests_waiting"] == 0.0
    assert vllm.peak_running == 1 and vllm.embedding_requests == 1


def test_a_chat_waits_for_the_slot_an_embedding_holds(cloud):
    """The slots are the server's, whichever route took them (the cloud stand-in serves both routes;
    a real vLLM serves one task per engine, so there embeddings queue behind embeddings)."""
    cloud.set_mode("slow", delay=0.5, slots=1)
    request = {"model": "text-embedding-3-small", "input": TEXT}
    thread, _ = in_background(lambda: post(f"{cloud.url}/v1/embeddings", request))
    assert wait_until(lambda: cloud.running == 1)
    started_at = time.monotonic()
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert post(f"{cloud.url}/v1/chat/completions", chat).status_code == 200
    assert time.monotonic() - started_at >= 0.3
    thread.join(5)


@pytest.mark.parametrize("mode", ["hang", "freeze", "stall"])
def test_vllm_embeddings_never_answer_when_hung_or_frozen(vllm, mode):
    vllm.set_mode(mode)
    with pytest.raises(httpx.ReadTimeout):
        embed_vllm(vllm, input=TEXT, timeout=0.5)
    assert httpx.get(f"{vllm.url}/health", timeout=2).status_code == 200  # the server is still up
    if mode == "freeze":
        assert gauges(vllm)["vllm:num_requests_waiting"] >= 1.0  # queued, never started
    assert vllm.embedding_requests == 0 and vllm.served["embeddings-received"] == 1


@pytest.mark.parametrize(("status", "error_type"), [(500, "InternalServerError"), (503, "ServiceUnavailableError")])
def test_vllm_error_mode(vllm, status, error_type):
    vllm.set_mode("error", status=status)
    answer = embed_vllm(vllm, input=TEXT)
    assert answer.status_code == status and answer.json()["error"]["type"] == error_type


def test_vllm_slow_refused_and_blackholed(vllm):
    vllm.set_mode("slow", delay=0.5)
    started_at = time.monotonic()
    assert embed_vllm(vllm, input=TEXT).status_code == 200 and time.monotonic() - started_at >= 0.5
    vllm.set_mode("down")
    with pytest.raises(httpx.ConnectError):
        embed_vllm(vllm, input=TEXT)
    vllm.set_mode("blackhole")
    with pytest.raises(httpx.ConnectTimeout):
        post(f"{vllm.url}/v1/embeddings", {"input": TEXT}, timeout=0.5)
    vllm.set_mode("up")
    assert embed_vllm(vllm, input=TEXT).status_code == 200


def test_vllm_garbage_mode_cuts_the_body(vllm):
    vllm.set_mode("garbage")
    answer = embed_vllm(vllm, input=TEXT)
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_probes_and_clients_are_counted_apart(vllm, ollama):
    embed_vllm(vllm, input=["test"])  # LiteLLM's health check of an embedding model
    embed_vllm(vllm, input=TEXT)
    embed_ollama(ollama, input=["test"])
    assert vllm.served["embeddings-probe"] == vllm.served["embeddings"] == 1
    assert ollama.served["embeddings-probe"] == 1 and ollama.embedding_requests == 0
    assert len(vllm.received_at) == 1  # client requests only
    assert vllm.client_requests == 0  # chat's counter is untouched


# ---- Ollama 0.12.6 ----
def test_ollama_answers_with_the_real_field_set(ollama):
    answer = embed_ollama(ollama, input=[TEXT, "second"])
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
    assert body["model"] == OLLAMA_TAG and len(body["embeddings"]) == 2
    assert all(len(vector) == 1024 and math.isclose(norm(vector), 1.0, rel_tol=1e-5) for vector in body["embeddings"])
    # No special tokens in the count (llm/server.go Tokenize adds none).
    assert body["prompt_eval_count"] == tokenizer.tokens(TEXT) + tokenizer.tokens("second")
    assert isinstance(body["total_duration"], int) and body["total_duration"] >= body["load_duration"] > 0


def test_ollama_echoes_the_name_it_was_asked_for(ollama):
    for name in ("bge-m3:latest", "BGE-M3", "registry.ollama.ai/library/bge-m3"):
        assert post(f"{ollama.url}/api/embed", {"model": name, "input": "x"}).json()["model"] == name


def test_an_empty_ollama_embed_only_loads_the_model(started):
    ollama = started(OllamaStandIn("ollama", OLLAMA_TAG, free_port(), cold_load=0.3))
    assert httpx.get(f"{ollama.url}/api/ps", timeout=5).json()["models"] == []
    started_at = time.monotonic()
    assert embed_ollama(ollama).json() == {"model": OLLAMA_TAG, "embeddings": []}
    assert time.monotonic() - started_at >= 0.3
    assert [m["name"] for m in httpx.get(f"{ollama.url}/api/ps", timeout=5).json()["models"]] == [OLLAMA_TAG]
    assert embed_ollama(ollama, input="").json() == {"model": OLLAMA_TAG, "embeddings": []}  # "" is no input


def test_a_cold_ollama_model_pays_its_load_and_keep_alive_zero_unloads_it(started):
    ollama = started(OllamaStandIn("ollama", OLLAMA_TAG, free_port(), cold_load=0.4))
    first = embed_ollama(ollama, input=TEXT).json()
    assert first["load_duration"] >= 0.4e9
    warm = embed_ollama(ollama, input=TEXT, keep_alive=0).json()
    assert warm["load_duration"] < 0.2e9
    assert embed_ollama(ollama, input=TEXT).json()["load_duration"] >= 0.4e9  # unloaded after the last one
    assert embed_ollama(ollama, input=TEXT, keep_alive="1x").json() == {"error": 'time: invalid duration "1x"'}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": OLLAMA_TAG, "input": 5}, 400, "invalid input type"),
        ({"model": OLLAMA_TAG, "input": ["a", 1]}, 400, "invalid input type"),
        ({"input": "x"}, 400, "model is required"),
        ({"model": "nomic-embed-text", "input": "x"}, 404, 'model "nomic-embed-text" not found, try pulling it first'),
        (
            {"model": OLLAMA_TAG, "input": "x", "dimensions": 2.5},
            400,
            "json: cannot unmarshal number 2.5 into Go struct field EmbedRequest.dimensions of type int",
        ),
        (
            {"model": OLLAMA_TAG, "input": "x", "truncate": "no"},
            400,
            "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool",
        ),
    ],
)
def test_ollama_refuses_as_ollama_does(ollama, body, status, error):
    answer = post(f"{ollama.url}/api/embed", body)
    assert answer.status_code == status and answer.json() == {"error": error}


def test_ollama_cuts_a_long_input_to_its_context_unless_told_not_to(ollama):
    long_text = " ".join(f"w{i}" for i in range(1200))
    tokens = tokenizer.tokens(long_text)
    assert 4096 < tokens <= 8190  # over Ollama's default num_ctx, within bge-m3's context
    cut = embed_ollama(ollama, input=long_text).json()
    assert cut["prompt_eval_count"] == 4094  # room for BOS and EOS
    assert ollama.embed_truncations == [{"ctxLen": 4094, "tokenCount": tokens}]
    kept = tokenizer._encoding().decode(tokenizer._encoding().encode_ordinary(long_text)[:4094])
    assert cut["embeddings"][0] == embed_ollama(ollama, input=kept).json()["embeddings"][0]
    refused = embed_ollama(ollama, input=long_text, truncate=False)
    assert refused.status_code == 400 and refused.json() == {"error": "input exceeds maximum context length"}
    whole = embed_ollama(ollama, input=long_text, options={"num_ctx": 8192}).json()
    assert whole["prompt_eval_count"] == tokens and whole["embeddings"] != cut["embeddings"]


def test_ollama_dimensions_cut_and_normalise_again(ollama):
    full = embed_ollama(ollama, input=TEXT).json()["embeddings"][0]
    cut = embed_ollama(ollama, input=TEXT, dimensions=256).json()["embeddings"][0]
    assert len(cut) == 256 and math.isclose(norm(cut), 1.0, rel_tol=1e-5) and cosine(cut, full[:256]) > 0.99999
    assert len(embed_ollama(ollama, input=TEXT, dimensions=5000).json()["embeddings"][0]) == 1024  # no error


def test_ollama_chat_and_embedding_models_each_answer_the_other_as_ollama_does(ollama, started):
    chat = post(f"{ollama.url}/api/chat", {"model": OLLAMA_TAG, "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 400 and chat.json() == {"error": '"bge-m3" does not support chat'}
    preload = post(f"{ollama.url}/api/generate", {"model": OLLAMA_TAG})
    assert preload.status_code == 400 and preload.json() == {"error": '"bge-m3" does not support generate'}
    # A chat model on the llama.cpp runner embeds anyway, with its own hidden state: another model's vector.
    qwen = started(OllamaStandIn("ollama", "qwen2.5:0.5b", free_port()))
    vector = embed_ollama(qwen, input=TEXT).json()["embeddings"][0]
    assert len(vector) == 896
    # A chat model on the new engine refuses.
    qwen3 = started(OllamaStandIn("ollama", "qwen3:0.6b", free_port()))
    refused = embed_ollama(qwen3, input=TEXT)
    assert refused.status_code == 500 and refused.json() == {"error": "this model does not support embeddings"}


def test_one_ollama_serves_a_chat_model_and_an_embedding_model(started):
    ollama = started(
        OllamaStandIn("ollama", "qwen2.5:0.5b", free_port(), cold_load=0.2, embedding_tags={"bge-m3": VLLM_NAME})
    )
    assert {m["name"] for m in httpx.get(f"{ollama.url}/api/tags", timeout=5).json()["models"]} == {
        "qwen2.5:0.5b",
        "bge-m3:latest",
    }
    answer = post(f"{ollama.url}/api/embed", {"model": "bge-m3", "input": TEXT}).json()
    assert len(answer["embeddings"][0]) == 1024 and answer["load_duration"] >= 0.2e9
    assert [m["name"] for m in httpx.get(f"{ollama.url}/api/ps", timeout=5).json()["models"]] == ["bge-m3:latest"]
    chat = post(
        f"{ollama.url}/api/chat",
        {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}], "stream": False},
    )
    assert chat.status_code == 200 and chat.json()["message"]["content"].startswith("[ollama]")


def test_ollama_fault_modes(ollama):
    ollama.set_mode("error", status=503)
    busy = embed_ollama(ollama, input=TEXT)
    assert busy.status_code == 503
    assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    for mode in ("hang", "freeze"):
        ollama.set_mode(mode)
        with pytest.raises(httpx.ReadTimeout):
            embed_ollama(ollama, input=TEXT, timeout=0.5)
    ollama.set_mode("down")
    with pytest.raises(httpx.ConnectError):
        embed_ollama(ollama, input=TEXT)
    ollama.set_mode("up")
    assert embed_ollama(ollama, input=TEXT).status_code == 200
    # 4 reached it (the refused one did not); the frozen one, released when the port closed, may
    # have finished for a client that had left.
    assert ollama.served["embeddings-received"] == 4 and ollama.embedding_requests in (1, 2)


# ---- the cloud ----
def test_the_cloud_embeds_with_openais_models_only(cloud):
    answer = post(f"{cloud.url}/v1/embeddings", {"model": "text-embedding-3-small", "input": TEXT}).json()
    assert list(answer) == ["object", "data", "model", "usage"]
    assert answer["model"] == "text-embedding-3-small" and len(answer["data"][0]["embedding"]) == 1536
    assert answer["usage"] == {"prompt_tokens": tokenizer.tokens(TEXT), "total_tokens": tokenizer.tokens(TEXT)}
    cut = post(f"{cloud.url}/v1/embeddings", {"model": "text-embedding-3-small", "input": TEXT, "dimensions": 256})
    assert len(cut.json()["data"][0]["embedding"]) == 256
    refused = post(f"{cloud.url}/v1/embeddings", {"model": VLLM_NAME, "input": TEXT})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    ada = post(f"{cloud.url}/v1/embeddings", {"model": "text-embedding-ada-002", "input": TEXT, "dimensions": 256})
    assert ada.status_code == 400
    assert cloud.embedding_requests == 2 and cloud.served["embeddings-received"] == 4


# ---- comparability ----
def test_the_same_weights_give_the_same_vector_on_vllm_and_on_ollama(vllm, ollama, cloud, started):
    from_vllm = embed_vllm(vllm, input=[TEXT, "other text"]).json()["data"]
    from_ollama = embed_ollama(ollama, input=[TEXT, "other text"]).json()["embeddings"]
    # Equal at the precision both compute in; the JSON texts differ (Python writes the float32's exact
    # value, Go its shortest decimal), so compare float32 values, or by cosine.
    assert float32(from_vllm[0]["embedding"]) == float32(from_ollama[0])
    assert from_vllm[0]["embedding"] != from_ollama[0]
    assert cosine(from_vllm[1]["embedding"], from_ollama[1]) > 0.9999999
    assert cosine(from_vllm[0]["embedding"], from_vllm[1]["embedding"]) < 0.2  # another text
    # Other weights: nothing in common.
    cloud_vector = post(f"{cloud.url}/v1/embeddings", {"model": "text-embedding-3-large", "input": TEXT}).json()
    assert len(cloud_vector["data"][0]["embedding"]) == 3072
    renamed = started(OpenAIStandIn("vllm", "bge-m3", free_port(), embedding_model=VLLM_NAME))
    assert embed_vllm(renamed, input=TEXT).json()["data"][0]["embedding"] == from_vllm[0]["embedding"]
    other = started(OpenAIStandIn("vllm", "intfloat/e5-large", free_port(), embedding_model="intfloat/e5-large"))
    assert abs(cosine(embed_vllm(other, input=TEXT).json()["data"][0]["embedding"], from_vllm[0]["embedding"])) < 0.2


def test_the_gateways_derived_ollama_model_is_known_by_its_library_name(vllm, started):
    """The drill starts a stand-in per tier with the tier's served model: Ollama's is the model the
    init container derives (`bge-m3:567m-llm-gateway`), still bge-m3's weights."""
    derived = started(OllamaStandIn("ollama", "bge-m3:567m-llm-gateway", free_port()))
    vector = embed_ollama(derived, input=TEXT).json()["embeddings"][0]
    assert float32(vector) == embed_vllm(vllm, input=TEXT).json()["data"][0]["embedding"]


def test_ollamas_numbers_are_gos_shortest_float32_text(started):
    assert go_float32([0.1, 1 / 3, 1e-7]) == [0.1, 0.33333334, 1e-7]  # what Go's encoding/json writes
    assert float32(go_float32([1 / 3])) == float32([1 / 3]) and go_float32([1 / 3]) != float32([1 / 3])
    short = started(OpenAIStandIn("vllm", VLLM_NAME, free_port(), dimensions=512))
    assert len(embed_vllm(short, input=TEXT).json()["data"][0]["embedding"]) == 512  # a model's own length


def test_vectors_are_the_same_in_every_process():
    """Seeded by the weights and the text alone (no PYTHONHASHSEED, no clock)."""
    assert BGE_M3.vector("hello")[:3] == pytest.approx([-0.0241412, 0.0162915, 0.0076406], abs=1e-6)


# ---- the real LiteLLM SDK against them ----
def run(coroutine, seconds: float = 20.0):
    return asyncio.run(asyncio.wait_for(coroutine, seconds))


@pytest.mark.parametrize(
    ("provider", "sent"),
    [
        # The openai SDK, body as given: no encoding_format unless asked (litellm/llms/openai/openai.py
        # make_openai_embedding_request), a string input stays a string.
        ("openai", {"model": VLLM_NAME, "input": TEXT}),
        # litellm/llms/hosted_vllm/embedding/transformation.py: input always a list.
        ("hosted_vllm", {"model": VLLM_NAME, "input": [TEXT]}),
    ],
)
def test_litellm_parses_vllms_answer(vllm, provider, sent):
    answer = run(
        litellm.aembedding(model=f"{provider}/{VLLM_NAME}", input=TEXT, api_base=f"{vllm.url}/v1", api_key="none")
    )
    assert isinstance(answer, litellm.EmbeddingResponse)
    assert vllm.last_embedding_body == sent
    assert answer.model == VLLM_NAME and len(answer.data) == 1 and len(answer.data[0]["embedding"]) == 1024
    assert answer.usage.prompt_tokens == tokenizer.tokens(TEXT) + 2 and answer.usage.completion_tokens == 0
    assert vllm.embedding_requests == 1


def test_litellm_passes_base64_through_from_vllm(vllm):
    answer = run(
        litellm.aembedding(
            model=f"hosted_vllm/{VLLM_NAME}", input=[TEXT], encoding_format="base64", api_base=f"{vllm.url}/v1"
        )
    )
    assert vllm.last_embedding_body["encoding_format"] == "base64"
    assert decode_base64_vector(answer.data[0]["embedding"]) == BGE_M3.vector(TEXT)


def test_litellm_parses_ollamas_answer(ollama):
    """litellm/llms/ollama/completion/handler.py: POST {api_base}/api/embed with {model, input: [..]}."""
    answer = run(litellm.aembedding(model=f"ollama/{OLLAMA_TAG}", input=TEXT, api_base=ollama.url, dimensions=512))
    assert ollama.last_embedding_body == {"model": OLLAMA_TAG, "input": [TEXT], "dimensions": 512}
    assert isinstance(answer, litellm.EmbeddingResponse) and answer.model == f"ollama/{OLLAMA_TAG}"
    assert len(answer.data[0]["embedding"]) == 512
    assert answer.usage.prompt_tokens == tokenizer.tokens(TEXT)  # Ollama's prompt_eval_count


def test_litellm_sends_ollamas_own_fields_and_refuses_encoding_format(ollama):
    run(
        litellm.aembedding(
            model=f"ollama/{OLLAMA_TAG}", input=["a"], api_base=ollama.url, truncate=False, keep_alive="5m"
        )
    )
    assert ollama.last_embedding_body == {"model": OLLAMA_TAG, "input": ["a"], "truncate": False, "keep_alive": "5m"}
    # What the openai SDK sends by default (base64) is not an Ollama field: without drop_params LiteLLM
    # refuses before sending anything (utils.py get_optional_params_embeddings).
    with pytest.raises(litellm.UnsupportedParamsError):
        run(
            litellm.aembedding(model=f"ollama/{OLLAMA_TAG}", input=["a"], api_base=ollama.url, encoding_format="base64")
        )
    assert ollama.served["embeddings-received"] == 1


def test_litellm_parses_the_clouds_answer(cloud):
    answer = run(
        litellm.aembedding(model="openai/text-embedding-3-small", input=[TEXT], api_base=f"{cloud.url}/v1", api_key="x")
    )
    assert answer.model == "text-embedding-3-small" and len(answer.data[0]["embedding"]) == 1536
    assert cloud.embedding_requests == 1


def test_a_failover_between_the_tiers_of_an_embeddings_chain_returns_comparable_vectors(vllm, ollama):
    """What a client gets from vLLM, and from Ollama once vLLM is gone, through LiteLLM."""
    first = run(litellm.aembedding(model=f"hosted_vllm/{VLLM_NAME}", input=[TEXT], api_base=f"{vllm.url}/v1"))
    vllm.set_mode("down")
    with pytest.raises(litellm.InternalServerError):
        run(litellm.aembedding(model=f"hosted_vllm/{VLLM_NAME}", input=[TEXT], api_base=f"{vllm.url}/v1"))
    second = run(litellm.aembedding(model=f"ollama/{OLLAMA_TAG}", input=[TEXT], api_base=ollama.url))
    assert float32(first.data[0]["embedding"]) == float32(second.data[0]["embedding"])
    assert cosine(first.data[0]["embedding"], second.data[0]["embedding"]) > 0.9999999


def test_litellm_maps_the_servers_refusals(vllm, ollama, started):
    long_text = " ".join(f"w{i}" for i in range(9000))
    with pytest.raises(litellm.ContextWindowExceededError):
        run(litellm.aembedding(model=f"hosted_vllm/{VLLM_NAME}", input=[long_text], api_base=f"{vllm.url}/v1"))
    with pytest.raises(litellm.BadRequestError) as over:
        run(litellm.aembedding(model=f"ollama/{OLLAMA_TAG}", input=[long_text], api_base=ollama.url, truncate=False))
    assert over.value.status_code == 400
    with pytest.raises(litellm.NotFoundError):
        run(litellm.aembedding(model="ollama/nomic-embed-text", input=["a"], api_base=ollama.url))
    # vLLM's HTTP 200 error body (a chat model) still ends as a 400 in LiteLLM.
    chat_model = started(OpenAIStandIn("vllm", "Qwen/Qwen2.5-0.5B-Instruct", free_port()))
    with pytest.raises(litellm.BadRequestError, match="does not support Embeddings API"):
        run(litellm.aembedding(model=f"hosted_vllm/{chat_model.model}", input=["a"], api_base=f"{chat_model.url}/v1"))


@pytest.mark.parametrize(
    ("provider", "path", "error"),
    [
        # A refused connection: a 500 (cooled down, 5xx) from hosted_vllm/, but an APIConnectionError
        # from ollama/ (never cooled down: router_utils/cooldown_handlers.py).
        ("hosted_vllm", "/v1", litellm.InternalServerError),
        ("ollama", "", litellm.APIConnectionError),
    ],
)
def test_litellm_names_a_refused_connection_by_provider(provider, path, error):
    with pytest.raises(error):
        run(litellm.aembedding(model=f"{provider}/m", input=["a"], api_base=f"http://127.0.0.1:{free_port()}{path}"))


def test_litellm_takes_a_chat_models_vector_from_ollama_without_complaint(started):
    """The trap an embeddings chain must keep out: a chat model on Ollama's llama.cpp runner embeds."""
    qwen = started(OllamaStandIn("ollama", "qwen2.5:0.5b", free_port()))
    answer = run(litellm.aembedding(model="ollama/qwen2.5:0.5b", input=[TEXT], api_base=qwen.url))
    assert len(answer.data[0]["embedding"]) == 896


def test_litellm_does_not_bound_an_ollama_embedding_by_its_timeout(ollama):
    """litellm/llms/ollama/completion/handler.py posts through the module-level client: the call's
    `timeout` is not passed; only `litellm.request_timeout` (default 6000 s) bounds it."""
    ollama.set_mode("hang")
    started_at = time.monotonic()
    with pytest.raises(TimeoutError):
        run(litellm.aembedding(model=f"ollama/{OLLAMA_TAG}", input=["a"], api_base=ollama.url, timeout=0.3), 1.5)
    assert time.monotonic() - started_at >= 1.4

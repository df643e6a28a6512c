"""A client's mistake gets a client error (the real proxy on the dev stack's rendered config).

401 for a missing, malformed or wrong key; 400 naming the field for a malformed request; streams
that the official `openai` client can parse; a small public surface. Then hypothesis sends
malformed requests of every kind through the real proxy: each answer must be a valid completion
or stream, or a 4xx in OpenAI's format — never a 5xx, never the cloud.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litellm.constants import OPENAI_CHAT_COMPLETION_PARAMS
from litellm.proxy._types import LiteLLMRoutes
from litellm.proxy.auth import auth_utils
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from drill.runner import DRILL_MASTER_KEY, DRILL_OPENAI_KEY

pytestmark = pytest.mark.drill

GOOD = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
KEYED = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
OUTCOMES: Counter[str] = Counter()
PROBES = ("/health/liveliness", "/health/liveness", "/health/readiness")


def post(drill, body=None, headers=None, content=None):
    return httpx.post(
        f"{drill.url}/v1/chat/completions",
        json=body if content is None else None,
        content=content,
        headers=headers if headers is not None else KEYED,
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    assert isinstance(error["message"], str) and error["message"]
    assert DRILL_MASTER_KEY not in response.text and "sk-wrong" not in response.text
    return error


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "No API key was sent"),
        ({"Authorization": "Bearer sk-wrong-key-0123456789"}, "not valid"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not valid"),
        ({"Authorization": f"Bearer {DRILL_MASTER_KEY}x"}, "not valid"),
    ],
    ids=["missing", "wrong", "empty-bearer", "basic", "almost-right"],
)
def test_a_missing_or_wrong_key_is_a_401_that_says_which(drill, headers, says):
    error = assert_openai_error(post(drill, GOOD, headers=headers), 401)
    assert says in error["message"]
    assert "Retry" not in error["message"]  # not an outage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "chat", "messages": "hi"}, "messages"),
        ({"model": "chat", "messages": []}, "messages"),
        ({"model": "chat", "messages": [{"content": "no role"}]}, "messages[0].role"),
        ({**GOOD, "stream": "yes"}, "stream"),
        ({**GOOD, "max_tokens": -1}, "max_tokens"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "stop": [1, 2]}, "stop"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_field_and_no_tier_sees_it(drill, body, param):
    drill.reset_counts()
    error = assert_openai_error(post(drill, body), 400)
    assert error["param"] == param and param.split("[")[0] in error["message"]
    assert sum(s.served["client-received"] for s in drill.standins.values()) == 0


def test_a_request_vllm_refuses_is_that_400_and_goes_nowhere_else(drill):
    drill.all_up()
    drill.reset_counts()
    # A sampling extra the gateway does not know and passes through (a too-long request is the
    # gateway's own refusal now: gateway/context_check.py, before any tier).
    error = assert_openai_error(post(drill, {**GOOD, "top_k": -5}), 400)
    assert "top_k" in error["message"]
    assert drill.standins["vllm"].served["invalid"] == 1
    assert drill.standins["ollama"].served["client-received"] == drill.cloud.served["client-received"] == 0


def test_a_stream_is_openai_sse_that_the_official_client_parses(drill):
    drill.all_up()
    with httpx.stream("POST", f"{drill.url}/v1/chat/completions", json={**GOOD, "stream": True}, headers=KEYED) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(event)) for event in events[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("[vllm]")


def test_without_a_key_only_the_health_probes_answer(drill):
    for path in ("/health/liveliness", "/health/readiness"):
        assert httpx.get(f"{drill.url}{path}").status_code == 200
    # Docs and the admin UI are off (NO_DOCS, NO_REDOC, NO_OPENAPI, DISABLE_ADMIN_UI), metrics and the
    # API need the key, and LiteLLM's fixed public routes (LiteLLMRoutes.public_routes, which no
    # setting removes) are closed at the front door (gateway/request_check.py).
    closed = ["/docs", "/redoc", "/openapi.json", "/metrics/", "/v1/models", "/model/info", "/key/list"]
    closed += [path for path in LiteLLMRoutes.public_routes.value if "{" not in path and path not in PROBES]
    for path in closed:
        response = httpx.get(f"{drill.url}{path}")
        assert_openai_error(response, 401)
        assert DRILL_OPENAI_KEY not in response.text and "127.0.0.1" not in response.text, path
    assert len(closed) > 20


# --- Evidence against what was not thought of ---------------------------------------------------

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)
FIELDS = st.sampled_from(
    ["model", "messages", "stream", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "tools",
     "tool_choice", "response_format", "stream_options", "logprobs", "user", "frequency_penalty", "unknown_field"]
)  # fmt: skip
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\u0000", "\ud7ff\ue000", "🚀" * 20, "\u202e", "a" * 5000, "\n\r\t"]
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot", ""]), "content": ODD_TEXT | JSON_VALUE}
)


@st.composite
def malformed_requests(draw):
    body = dict(GOOD, messages=[{"role": "user", "content": draw(ODD_TEXT)}])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(FIELDS)
        body[field] = draw(JSON_VALUE | st.lists(MESSAGE, max_size=3) | st.integers(-(2**64), 2**64) | st.just(True))
        if draw(st.booleans()) and field in body and field != "model":
            del body[field]
    body["model"] = "chat"  # an unknown model is LiteLLM's own 400, tested above
    raw = json.dumps(body).encode()
    shape = draw(st.sampled_from(["json", "json", "json", "truncated", "wrong-type", "not-an-object"]))
    if shape == "truncated":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))], "application/json", body
    if shape == "wrong-type":
        return raw, draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", ""])), body
    if shape == "not-an-object":
        return json.dumps(draw(JSON_VALUE)).encode(), "application/json", body
    return raw, "application/json", body


def assert_valid_answer(response: httpx.Response, body: dict) -> str:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= error.keys(), response.text
        return f"{response.status_code} {error['type']}"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", response.text[:300]
        for event in events[:-1]:
            parsed = json.loads(event)
            if "error" not in parsed:
                ChatCompletionChunk.model_validate(parsed)
        return "200 stream"
    ChatCompletion.model_validate(response.json())
    return "200 completion"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(malformed_requests())
def test_every_malformed_request_gets_a_valid_answer_or_an_openai_4xx_and_never_the_cloud(drill, request_parts):
    raw, content_type, body = request_parts
    cloud_before = drill.cloud.served["client-received"]
    headers = {**KEYED, **({"Content-Type": content_type} if content_type else {})}
    response = httpx.post(f"{drill.url}/v1/chat/completions", content=raw, headers=headers, timeout=30)
    outcome = assert_valid_answer(response, body)
    event(outcome)
    OUTCOMES[outcome] += 1
    assert drill.cloud.served["client-received"] == cloud_before


def test_the_fuzz_run_in_figures(drill):
    print(f"\n[fuzz] {sum(OUTCOMES.values())} malformed requests through the real proxy: {dict(OUTCOMES)}")
    assert sum(OUTCOMES.values()) >= 100
    assert not [outcome for outcome in OUTCOMES if outcome.startswith("5")]


# --- issue 20, item 6: every client mistake is a 4xx naming the field, on every route ------------

# What a traceback, a file path or a version looks like in a body (LiteLLM's own error names may stay).
INTERNALS = ("Traceback", "site-packages", 'File "', '.py", line', "python3", "Python 3", "127.0.0.1")


def assert_no_internals(text: str) -> None:
    assert not [word for word in INTERNALS if word in text], text[:400]


def no_tier_available_count(drill) -> float:
    metrics = httpx.get(f"{drill.url}/metrics/", headers=KEYED, timeout=10).text
    lines = [line for line in metrics.splitlines() if line.startswith("llm_gateway_failed_requests_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'reason="no_tier_available"' in line)


ASSISTANT_WITH_TOOL_CALLS_5 = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "x", "tool_calls": 5},
]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"api_base": "http://127.0.0.1:9/v1"}, "api_base"),
        ({"base_url": "http://127.0.0.1:9/v1"}, "base_url"),
        ({"user_config": {"model_list": []}}, "user_config"),
        ({"metadata": {"langfuse_host": "http://127.0.0.1:9"}}, "metadata.langfuse_host"),
        ({"aws_region_name": "os.environ/OPENAI_API_KEY"}, "aws_region_name"),  # LiteLLM's own refusal
        ({"temperature": 10**400}, "temperature"),
        ({"timeout": "x"}, "timeout"),
        ({"messages": ASSISTANT_WITH_TOOL_CALLS_5}, "messages[1].tool_calls"),
    ],
    ids=["api_base", "base_url", "user_config", "metadata", "secret-reference", "huge-temperature", "timeout-x",
         "tool_calls-5"],
)  # fmt: skip
def test_the_mistakes_that_were_outages_are_400s_naming_the_field(drill, change, param):
    drill.all_up()
    drill.reset_counts()
    alerts_before = no_tier_available_count(drill)
    error = assert_openai_error(post(drill, {**GOOD, **change}), 400)
    assert error["param"] == param and param.split(".")[-1].split("[")[0] in error["message"]
    assert drill.counts() == dict.fromkeys(drill.standins, 0)
    assert no_tier_available_count(drill) == alerts_before  # no page for a typo


def test_rerank_and_every_other_route_is_a_clean_404_without_internals(drill):
    drill.reset_counts()
    routes = ["/v1/rerank", "/rerank", "/v2/rerank", "/v1/completions", "/v1/embeddings", "/v1/responses",
              "/v1/messages", "/v1/audio/speech", "/v1/images/generations", "/utils/token_counter", "/x"]  # fmt: skip
    for path in routes:
        body = {"model": "chat", "query": "a", "documents": ["b"]}
        response = httpx.post(f"{drill.url}{path}", json=body, headers=KEYED)
        assert assert_openai_error(response, 404)["code"] == "unknown_url"
        assert_no_internals(response.text)
    assert drill.counts() == dict.fromkeys(drill.standins, 0)


# The fields LiteLLM itself interprets on a chat call (its OPENAI_CHAT_COMPLETION_PARAMS), its own list
# of refused parameters, and the server-owned credential fields it refuses with a secret reference.
INTERPRETED = sorted(set(OPENAI_CHAT_COMPLETION_PARAMS) - {"model", "messages"})
REFUSED = sorted(auth_utils._BANNED_REQUEST_BODY_PARAMS)
SERVER_OWNED = sorted(set(auth_utils._SECRET_RESOLVING_PARAMS) - set(REFUSED))
ITEM6: Counter[str] = Counter()


@st.composite
def client_mistakes(draw):
    body = dict(GOOD)
    kind = draw(st.sampled_from(["interpreted", "interpreted", "refused", "server-owned"]))
    if kind == "interpreted":
        for _ in range(draw(st.integers(1, 3))):
            body[draw(st.sampled_from(INTERPRETED))] = draw(JSON_VALUE | st.integers(-(10**400), 10**400))
    elif kind == "refused":
        body[draw(st.sampled_from(REFUSED))] = draw(JSON_VALUE)
    else:
        body[draw(st.sampled_from(SERVER_OWNED))] = "os.environ/" + draw(st.sampled_from(["OPENAI_API_KEY", "HOME"]))
    return kind, body


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(mistake=client_mistakes())
def test_fields_litellm_interprets_or_refuses_never_make_an_outage(drill, mistake):
    kind, body = mistake
    before = drill.counts()
    invalid_before = drill.standins["vllm"].served["invalid"]
    # json.dumps, not httpx's json=: a client may send NaN and Infinity (Python's json and LiteLLM
    # read them), and httpx refuses to write them.
    content = json.dumps(body).encode()
    headers = {**KEYED, "Content-Type": "application/json"}
    response = httpx.post(f"{drill.url}/v1/chat/completions", content=content, headers=headers, timeout=30)
    assert response.status_code < 500, response.text  # all tiers are up: no 503, no 500
    assert_no_internals(response.text)
    if response.status_code >= 400:
        error = assert_valid_answer(response, body)
        tier_refused = drill.standins["vllm"].served["invalid"] > invalid_before
        assert tier_refused or drill.counts() == before, (body, response.text)
        if kind != "interpreted":
            assert response.json()["error"]["param"] in body, response.text
        outcome = f"{kind} {error}"
    else:
        outcome = f"{kind} {assert_valid_answer(response, body)}"
    assert drill.counts()[drill.cloud.tier] == before[drill.cloud.tier]
    ITEM6[outcome] += 1
    event(outcome)


def test_item6_in_figures(drill):
    print(f"\n[client mistakes] {sum(ITEM6.values())} through the real proxy: {dict(ITEM6)}")
    assert sum(ITEM6.values()) >= 150 and not [o for o in ITEM6 if " 5" in o]

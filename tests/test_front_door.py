"""NFR68 at the edge (issue 20, items 1 and 5): no client reaches the cloud by naming it.

The real proxy on the dev stack's rendered config, with the old gateway's alias (`vllm-qwen`) and
an operator's own master key (not shaped like LiteLLM's `sk-` keys), in front of loopback stand-ins
that count what each tier received. Hypothesis chooses the names (internal groups, provider strings,
tier ids, odd text), the routes (every LLM route LiteLLM lists, path-model routes, `?model=`) and
LiteLLM's routing fields and headers; the cloud must receive nothing while the local tiers are up.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litellm.proxy._types import LiteLLMRoutes
from test_fallback import _gateway_module

from core.chain import failover_chain
from core.litellm_config import litellm_config
from core.names import REQUEST_CHECK_FILE
from core.settings import parse_settings
from core.stack_files import stack_settings
from drill.runner import Drill

door = _gateway_module(REQUEST_CHECK_FILE)

OLD_KEY = "old-gateway-key-0123456789abcdef"  # the seed's clients keep theirs
KEYED = {"Authorization": f"Bearer {OLD_KEY}"}
ALIAS = "vllm-qwen"
MESSAGES = [{"role": "user", "content": "hello"}]
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module")
def gateway():
    dev = stack_settings("dev")
    with_alias = replace(dev, gateway=replace(dev.gateway, model_aliases=(ALIAS,)))
    with Drill(with_alias, master_key=OLD_KEY) as running:
        yield running


def post(drill, path, body, headers=None):
    return httpx.post(f"{drill.url}{path}", json=body, headers={**KEYED, **(headers or {})}, timeout=30)


def answered_by(drill, model: str, limit: float = 30.0) -> str:
    """The tier that answers `model` once the one expected is routed to again (startup probes may
    have cooled vLLM down for a few seconds)."""
    deadline = time.monotonic() + limit
    while True:
        response = post(drill, "/v1/chat/completions", {"model": model, "messages": MESSAGES})
        tier = response.headers.get("x-litellm-model-id")
        if tier == "vllm" or time.monotonic() > deadline:
            return tier
        time.sleep(0.5)


def tier_counts(drill) -> dict[str, int]:
    return {tier: standin.served["client-received"] for tier, standin in drill.standins.items()}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    if code:
        assert error["code"] == code, error
    return error


# --- item 5: the old gateway's name and key ---------------------------------------------------


@pytest.mark.drill
def test_the_alias_and_the_operators_key_reach_the_chain_and_fail_over_like_it(gateway):
    gateway.all_up()
    assert answered_by(gateway, ALIAS) == "vllm"
    gateway.standins["vllm"].set_mode("down")
    try:
        gateway.reset_counts()
        response = post(gateway, "/v1/chat/completions", {"model": ALIAS, "messages": MESSAGES})
        # LiteLLM looks fallbacks up by the requested name: an alias left to it gets no fallback (503).
        assert response.status_code == 200 and response.headers["x-litellm-model-id"] == "ollama", response.text
        assert tier_counts(gateway) == {"vllm": 0, "ollama": 1, "openai": 0}
    finally:
        gateway.all_up()


# --- item 1: names, routes, fields ---------------------------------------------------------------


@pytest.mark.drill
def test_the_model_list_names_only_what_clients_may_call(gateway):
    for path in ("/v1/models", "/models"):
        listed = httpx.get(f"{gateway.url}{path}", headers=KEYED).json()
        assert [model["id"] for model in listed["data"]] == sorted(["chat", ALIAS])
    assert httpx.get(f"{gateway.url}/v1/models/{ALIAS}", headers=KEYED).json()["id"] == ALIAS
    assert_openai_error(httpx.get(f"{gateway.url}/v1/models/chat-openai", headers=KEYED), 404, "model_not_found")
    wrong_key = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": "Bearer sk-not-the-key"})
    assert_openai_error(wrong_key, 401)  # LiteLLM still checks the key; the list is not given away
    for path in ("/model/info", "/v1/model/info", "/v2/model/info", "/model_group/info", "/utils/model_info"):
        assert_openai_error(httpx.get(f"{gateway.url}{path}", headers=KEYED), 404, "unknown_url")
    assert httpx.get(f"{gateway.url}/metrics/", headers=KEYED).status_code == 200  # the ServiceMonitor's scrape


@pytest.mark.drill
def test_a_client_timeout_cannot_push_slow_healthy_tiers_to_the_cloud(gateway):
    """The issue's case: `"timeout": 0.5` against slow but healthy local tiers sent the prompt out."""
    gateway.enter_phase({"vllm": "slow", "ollama": "slow"})
    try:
        gateway.reset_counts()
        for lever in ({"timeout": 0.5}, {"stream_timeout": 0.5}, {"mock_testing_fallbacks": True}):
            response = post(gateway, "/v1/chat/completions", {"model": "chat", "messages": MESSAGES, **lever})
            assert assert_openai_error(response, 400)["param"] == next(iter(lever))
        steered = {"x-litellm-timeout": "0.5"}
        response = post(gateway, "/v1/chat/completions", {"model": "chat", "messages": MESSAGES}, steered)
        assert assert_openai_error(response, 400)["param"] == "x-litellm-timeout"
        assert tier_counts(gateway) == {"vllm": 0, "ollama": 0, "openai": 0}
    finally:
        gateway.all_up()


INTERNAL_NAMES = [tier.group for tier in failover_chain(stack_settings("dev"))[1:]]
NAMES = st.sampled_from(
    [*INTERNAL_NAMES, "vllm", "ollama", "openai", "gpt-4o-mini", "openai/gpt-4o-mini", "ollama_chat/qwen2.5:3b",
     "ollama_chat/qwen2.5:3b-llm-gateway", "vllm-progress/Qwen/Qwen2.5-7B-Instruct-AWQ", "*", "openai/*", "CHAT",
     "chat ", "chat-", "vllm-qwen-openai", "chat", ALIAS]
) | st.text(max_size=20)  # fmt: skip
# Every route LiteLLM lists for model calls, path-model ones with the name in the path.
LLM_ROUTES = sorted(
    {*LiteLLMRoutes.openai_routes.value, *LiteLLMRoutes.anthropic_routes.value, *LiteLLMRoutes.google_routes.value}
    | {"/queue/chat/completions", "/health", "/openai/v1/chat/completions", "/v1/chat/completions?model={model}"}
)
LEVERS = st.sampled_from(
    [*sorted(door.ROUTING_FIELDS), "mock_response", "mock_timeout", "_target_order", "api_base", "base_url",
     "user_config", "api_key", "extra_headers"]
)  # fmt: skip
JSON_VALUE = st.none() | st.booleans() | st.floats(0, 5) | st.text(max_size=10) | st.just(["chat-openai"])


@st.composite
def attempts(draw):
    name = draw(NAMES)
    in_path = quote(name, safe="/:*")
    chat_routes = st.sampled_from([*door.CHAT_PATHS, "/v1/chat/completions?model={model}"])
    route = draw(chat_routes | chat_routes | st.sampled_from(LLM_ROUTES))  # chat: half the tries
    route = route.replace("{model}", in_path).replace("{model_name}", in_path)
    body = {"model": draw(st.sampled_from([name, "chat", ALIAS])), "messages": MESSAGES}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        body[draw(LEVERS)] = draw(JSON_VALUE)
    headers = {}
    if draw(st.integers(0, 3)) == 0:
        headers[draw(st.sampled_from(sorted(h.decode() for h in door.STEERING_HEADERS)))] = "0.1"
    return draw(st.sampled_from(["POST", "POST", "POST", "GET"])), route, body, headers


@pytest.mark.drill
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(attempt=attempts())
def test_no_name_route_or_field_reaches_the_cloud_while_the_local_tiers_are_up(gateway, attempt):
    method, route, body, headers = attempt
    cloud_before = gateway.cloud.served["client-received"]
    response = httpx.request(method, f"{gateway.url}{route}", json=body, headers={**KEYED, **headers}, timeout=30)
    assert gateway.cloud.served["client-received"] == cloud_before, (method, route, body, response.text)
    assert response.status_code < 500, response.text
    client_call = method == "POST" and route in door.CHAT_PATHS and body["model"] in ("chat", ALIAS)
    clean = client_call and not headers and set(body) == {"model", "messages"}
    if response.status_code == 200 and method == "GET":  # the model list: the client names, nothing else
        listed = response.json().get("data") or [response.json()]
        assert {model["id"] for model in listed} <= {"chat", ALIAS}, response.text
    elif response.status_code == 200:
        assert clean and response.headers["x-litellm-model-id"] in ("vllm", "ollama"), (route, body)
    else:
        assert not clean, response.text
        assert_openai_error(response, response.status_code)
    TRIED[f"{response.status_code} {response.json().get('error', {}).get('code', 'answer')}"] += 1
    event(str(response.status_code))


@pytest.mark.drill
def test_with_ollama_down_no_internal_name_reaches_the_cloud(gateway):
    """The issue's second case: `chat-ollama` with Ollama down went to the cloud while vLLM was healthy."""
    gateway.enter_phase({"ollama": "down"})
    try:
        gateway.reset_counts()
        for name in INTERNAL_NAMES:
            for path in (
                "/v1/chat/completions",
                f"/openai/deployments/{name}/chat/completions",
                f"/engines/{name}/chat/completions",
            ):
                response = post(gateway, path, {"model": name, "messages": MESSAGES})
                assert response.status_code == 404, (path, response.text)
        assert tier_counts(gateway) == {"vllm": 0, "ollama": 0, "openai": 0}
    finally:
        gateway.all_up()


@pytest.mark.drill
@pytest.mark.parametrize(
    "field",
    [
        {"headers": {"Authorization": "Bearer sk-attacker", "OpenAI-Project": "proj_other"}},
        {"provider_specific_header": {"custom_llm_provider": "openai", "extra_headers": {"OpenAI-Project": "p"}}},
    ],
    ids=["headers", "provider_specific_header"],
)
def test_a_client_cannot_send_its_own_provider_headers(gateway, field):
    """LiteLLM sends `headers` (main.py: `kwargs.get("headers") or extra_headers`) and a
    `provider_specific_header`'s extra headers to the provider: the operator's Authorization replaced,
    another OpenAI project chosen. Refused with a 400 naming the field, even with the cloud answering."""
    gateway.enter_phase({"vllm": "down", "ollama": "down"})
    try:
        gateway.reset_counts()
        response = post(gateway, "/v1/chat/completions", {"model": "chat", "messages": MESSAGES, **field})
        assert assert_openai_error(response, 400, "unsupported_parameter")["param"] == next(iter(field))
        assert tier_counts(gateway) == {"vllm": 0, "ollama": 0, "openai": 0}
    finally:
        gateway.all_up()


@pytest.mark.drill
def test_a_browsers_cors_preflight_is_answered_as_litellm_answers_it(gateway):
    """A preflight carries no key (browsers never send one): a 401 there broke every browser client."""
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    asked = {**preflight, "Access-Control-Request-Headers": "authorization,content-type"}
    answer = httpx.options(f"{gateway.url}/v1/chat/completions", headers=asked)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert "POST" in answer.headers["access-control-allow-methods"]
    # A route the door does not serve stays unknown, preflight or not.
    refused = httpx.options(f"{gateway.url}/v1/embeddings", headers=preflight)
    assert_openai_error(refused, 404, "unknown_url")


@pytest.fixture(scope="module")
def with_admin_ui():
    """The dev stack with `gateway.adminUi` on (its database check bypassed: nothing here needs one)."""
    dev = stack_settings("dev")
    with Drill(replace(dev, gateway=replace(dev.gateway, admin_ui=True)), master_key=OLD_KEY) as running:
        yield running


# What the reviewer reached with the master key and the admin UI on: each prompts a model or rewires
# the chain, and none is one of the UI's own routes.
NOT_THE_CONSOLE = [
    (
        "POST",
        "/prompts/test",
        {"dotprompt_content": "---\nmodel: chat-openai\n---\n\nUser: hi", "prompt_variables": {}},
    ),
    ("POST", "/model/new", {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini"}}),
    ("POST", "/config/update", {"router_settings": {"fallbacks": []}}),
    ("POST", "/fallback", {"model": "chat", "fallback_models": ["chat-openai"]}),
    ("GET", "/model/info", None),
    ("GET", "/v2/model/info", None),
    ("POST", "/utils/token_counter", {"model": "chat-openai", "prompt": "hi"}),
    ("POST", "/anything/else", {"model": "chat-openai"}),
]


@pytest.mark.drill
def test_with_the_admin_ui_on_only_its_own_routes_open(with_admin_ui):
    with_admin_ui.all_up()
    assert answered_by(with_admin_ui, "chat") == "vllm"
    with_admin_ui.reset_counts()
    for method, path, body in NOT_THE_CONSOLE:
        response = httpx.request(method, f"{with_admin_ui.url}{path}", json=body, headers=KEYED, timeout=30)
        assert_openai_error(response, 404, "unknown_url")
    assert tier_counts(with_admin_ui) == {"vllm": 0, "ollama": 0, "openai": 0}
    ui = httpx.get(f"{with_admin_ui.url}/ui/", timeout=30)
    assert ui.status_code == 200 and "<html" in ui.text.lower()  # the UI's pages, without a key
    for path in ("/login", "/key/list", "/spend/logs", "/user/info"):  # past the door: LiteLLM answers
        response = httpx.get(f"{with_admin_ui.url}{path}", headers=KEYED, timeout=30)
        assert "unknown_url" not in response.text, (path, response.text)  # without a database, LiteLLM's own error


@pytest.mark.drill
def test_the_tries_in_figures(gateway):
    print(f"\n[front door] {sum(TRIED.values())} names x routes x fields, cloud received 0: {dict(TRIED)}")
    assert sum(TRIED.values()) >= 150


# --- the pure parts ----------------------------------------------------------------------------


def test_a_model_in_the_url_is_refused_even_blank():
    """`?model=` with nothing after it was let through (hypothesis found it in the test above)."""
    for query in (b"model=", b"model=chat", b"x=1&model"):
        refusal = door.chat_request_problem({"model": "chat", "messages": MESSAGES}, {"chat": "chat"}, query)
        assert refusal is not None and refusal.param == "model", query


def test_the_door_reads_the_marker_and_aliases_the_chain_renders():
    settings = parse_settings({"gateway": {"modelAliases": [ALIAS, "qwen"]}}, openai_key="secret")
    config = litellm_config(settings)
    names = door.client_names(config["model_list"], config["router_settings"]["model_group_alias"])
    assert names == {"chat": "chat", ALIAS: "chat", "qwen": "chat"}
    # An alias of an internal group is not a client name, whatever the config says.
    assert door.client_names(config["model_list"], {"gpt": "chat-openai", "x": {"model": "chat"}}) == {
        "chat": "chat",
        "x": "chat",
    }


@pytest.mark.parametrize(
    ("method", "path", "open_"),
    [
        ("POST", "/v1/chat/completions", True),
        ("POST", "/chat/completions", True),
        ("GET", "/v1/models", True),
        ("GET", "/v1/models/chat", True),
        ("GET", "/health/readiness", True),
        ("GET", "/metrics/", True),
        ("GET", "/v1/chat/completions", False),
        ("POST", "/v1/completions", False),
        ("POST", "/v1/embeddings", False),
        ("POST", "/v1/rerank", False),
        ("POST", "/v1/responses", False),
        ("POST", "/v1/messages", False),
        ("POST", "/engines/chat/chat/completions", False),
        ("POST", "/openai/deployments/chat/chat/completions", False),
        ("GET", "/health", False),
        ("GET", "/model/info", False),
        ("POST", "/key/generate", False),
    ],
)
def test_the_allowlist(monkeypatch, method, path, open_):
    monkeypatch.setenv("DISABLE_ADMIN_UI", "True")
    monkeypatch.setenv("NO_DOCS", "True")
    assert door.admitted(method, path) is open_


def test_with_the_admin_ui_its_console_opens_but_no_llm_route():
    for path in ("/key/list", "/key/generate", "/key/sk-1/regenerate", "/ui/", "/login", "/spend/logs", "/team/t-1"):
        assert door.is_console_route(path), path
    for path in ("/v1/embeddings", "/queue/chat/completions", "/health", "/openai/v1/chat/completions", "/v1/rerank"):
        assert not door.is_console_route(path), path
    for _, path, _ in NOT_THE_CONSOLE:
        assert not door.is_console_route(path), path
    assert not door.is_console_route("/global/spend/reset")  # LiteLLM's master-key-only routes too


def test_loading_the_door_twice_wraps_the_proxy_once():
    """LiteLLM execs callback files by path, once per mention: each load has its own FrontDoor class."""
    from starlette.applications import Starlette

    before = Starlette()  # loaded before the proxy built its stack: an ordinary middleware
    door.install_front_door(before)
    _gateway_module(REQUEST_CHECK_FILE).install_front_door(before)
    assert len(before.user_middleware) == 1
    built = Starlette()  # loaded while the proxy starts (its stack is built by then): wrapped
    built.middleware_stack = stack = built.build_middleware_stack()
    door.install_front_door(built)
    _gateway_module(REQUEST_CHECK_FILE).install_front_door(built)
    assert built.middleware_stack.inner is stack


# --- several chains: each name on its own route ----------------------------------------------------

EMBEDDINGS_STACK = {
    "chains": [
        {
            "name": "embed",
            "kind": "embeddings",
            "aliases": ["text-embedding-bge-m3"],
            "tiers": [
                {"vllm": {"model": "BAAI/bge-m3"}, "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024}},
            ],
        }
    ]
}


def test_each_route_serves_its_own_chains_names_and_the_list_shows_all():
    config = litellm_config(parse_settings(EMBEDDINGS_STACK, openai_key="secret"))
    model_list, aliases = config["model_list"], config["router_settings"]["model_group_alias"]
    assert door.client_names(model_list, aliases) == {"chat": "chat"}
    assert door.client_names(model_list, aliases, "embedding") == {"embed": "embed", "text-embedding-bge-m3": "embed"}
    assert set(door.client_names(model_list, aliases, None)) == {"chat", "embed", "text-embedding-bge-m3"}


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"model": "chat", "input": "x"}, "model", 404),  # a chat chain is not served on the embeddings route
        ({"model": "embed"}, "input", 400),
        ({"model": "embed", "input": ""}, "input", 400),
        ({"model": "embed", "input": []}, "input", 400),
        ({"model": "embed", "input": ["a", 3.5]}, "input", 400),
        ({"model": "embed", "input": [[1, 2], []]}, "input", 400),
        ({"model": "embed", "input": ["a"] * 2049}, "input", 400),
        ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format", 400),
        ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions", 400),
        ({"model": "embed", "input": "x", "api_base": "http://evil"}, "api_base", 400),
        ({"model": "embed", "input": "x", "fallbacks": ["chat-openai"]}, "fallbacks", 400),
    ],
)
def test_the_embeddings_route_refuses_what_openai_refuses(body, param, status):
    names = {"embed": "embed"}
    refusal = door.embedding_request_problem(body, names, b"")
    assert refusal is not None and (refusal.status, refusal.param) == (status, param)


@pytest.mark.parametrize("given_input", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_the_embeddings_route_lets_every_openai_input_shape_through(given_input):
    body = {"model": "embed", "input": given_input, "encoding_format": "float", "dimensions": 1024, "user": "u"}
    assert door.embedding_request_problem(body, {"embed": "embed"}, b"") is None


@pytest.mark.parametrize("field", ["truncate", "options", "keep_alive", "num_ctx", "extra_body", "drop_params"])
def test_the_embeddings_route_refuses_ollamas_own_fields(field):
    """LiteLLM lets them over the deployment's: `truncate: true` would undo the cut-text backstop."""
    refusal = door.embedding_request_problem({"model": "embed", "input": "x", field: True}, {"embed": "embed"}, b"")
    assert refusal is not None and (refusal.status, refusal.param) == (400, field)


def test_the_chains_rules_come_from_the_rendered_config():
    config = litellm_config(parse_settings(EMBEDDINGS_STACK, openai_key="secret"))
    rules = door.embedding_rules(config["model_list"], config["router_settings"]["fallbacks"], ["embed"])
    assert rules == {"embed": door.EmbeddingRules(dimensions=1024, token_ids=True)}  # vLLM only: ids are fine
    names, with_ollama = {"embed": "embed"}, {"embed": door.EmbeddingRules(dimensions=1024, token_ids=False)}
    other_length = door.embedding_request_problem(
        {"model": "embed", "input": "x", "dimensions": 256}, names, b"", rules
    )
    assert other_length is not None and other_length.param == "dimensions"
    same_length = {"model": "embed", "input": "x", "dimensions": 1024}
    assert door.embedding_request_problem(same_length, names, b"", rules) is None
    ids = door.embedding_request_problem({"model": "embed", "input": [1, 2]}, names, b"", with_ollama)
    assert ids is not None and ids.param == "input"

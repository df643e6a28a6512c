"""A client's mistake gets a client error, and no client reaches past the chain: a LiteLLM callback
inside the proxy (shipped in the ConfigMap) and an ASGI front door it installs when it loads.

Registered under `litellm_settings.callbacks`, `RequestCheck` checks a chat request before any tier
sees it (`async_pre_call_hook`). A malformed request is answered 400 in OpenAI's error format,
naming the field (`param`) and what is wrong with it; nothing is sent to any tier, so a bad request
can neither be retried down the chain nor leave the cluster. The checks follow OpenAI's own API,
which rejects a wrong type with 400 ("Invalid type for 'stream': expected a boolean ..."): a
non-boolean `stream` is refused, not guessed. Fields this module does not know pass through
untouched (vLLM takes sampling extras such as `top_k`); the tier's own validation answers for
those, and a tier's 400 reaches the client as a 400 (gateway/honest_errors.py).

The front door (`FrontDoor`) is put around the proxy's middleware stack, in front of LiteLLM's
auth, body parsing and routing:
- no key → 401 (LiteLLM keeps fixed public routes, `LiteLLMRoutes.public_routes`, that no setting
  removes); without a key only the health probes answer, plus the docs (unless NO_DOCS) and the
  admin UI (unless DISABLE_ADMIN_UI): the switches LiteLLM reads;
- an allowlist of (method, path): chat completions, the model list, the probes, `/metrics/`, and
  the docs / the admin UI's console routes when the operator turned them on. Anything else is
  OpenAI's 404 `unknown_url`, so no other LiteLLM route (completions, embeddings, rerank,
  path-model routes, pass-through, websockets) can send a prompt anywhere;
- on chat, only the client names (the group marked client-facing, and its aliases) → else 404
  `model_not_found` before any tier is called; LiteLLM's routing fields and headers (timeouts,
  retries, fallbacks, mock_*) and its refused connection parameters (`api_base`, ...) → 400
  naming them; an alias is rewritten to the chain's own name, so fallbacks and cooldowns apply;
- a JSON body that is not an object (`null`, `[1, 2]`) → 400 (LiteLLM crashes on it into a bare
  500); the parsed body is handed to LiteLLM (`scope["parsed_body"]`) so it is parsed once;
- the model list (`/v1/models`, `/v1/models/{id}`) answers the client names only, once LiteLLM
  accepted the key;
- a chat answer's headers that name the chain's insides (`INTERNAL_HEADERS`) are dropped; a browser's
  CORS preflight on an admitted route goes, keyless, to LiteLLM's CORS answer;
- a body larger than `gateway.maxRequestBytes` → 413, before anything else: a declared
  Content-Length at once, without reading; a chunked body as soon as what arrived passes the limit.
  Bodies are buffered in linear time (a list of chunks joined once), and only up to the limit.
  LiteLLM's own limit (`general_settings.max_request_size_mb`, proxy/middleware/
  request_size_limit_middleware.py) applies only to its enterprise licence (`premium_user`).

A user message's content part of a type LiteLLM does not take (`utils.validate_chat_completion_user_messages`
raises a bare Exception) is a 400 naming it: left to LiteLLM, each tier's call fails the same way
before it is sent, and the client was told 503 "no tier available" after the whole chain was walked.
"""

import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import SpecialHeaders

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import (
    CHAT_MODE,
    CLIENT_FACING,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODE,
    INVALID_REQUEST,
    MAX_REQUEST_BYTES_ENV,
    MODE,
    chain_groups,
)

try:
    from litellm.types.llms.openai import ValidUserMessageContentTypes as USER_CONTENT_TYPES
except ImportError:  # a later LiteLLM: its own check still fails the request, as a 503
    USER_CONTENT_TYPES = None

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MOST_MESSAGES = 10_000
LARGEST_COUNT = 2**31 - 1


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    # An int is always finite (and math.isfinite overflows on one of 400 digits): only floats are checked.
    return _is_integer(value) or (isinstance(value, float) and math.isfinite(value))


def _between(low: float, high: float, whole: bool = False):
    """A number (a whole one if `whole`) from `low` to `high`; booleans are not numbers here."""
    is_kind = _is_integer if whole else _is_number
    expected = (
        f"expected a whole number from {low} to {high}" if whole else f"expected a number from {low:g} to {high:g}"
    )

    def check(value) -> str | None:
        return expected if not is_kind(value) or not low <= value <= high else None

    return check


def _of_type(kind: type | tuple[type, ...], described: str):
    def check(value) -> str | None:
        return None if isinstance(value, kind) else described

    return check


def _stop(value) -> str | None:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return None if not isinstance(value, list) or len(value) <= 4 else "expected at most 4 stop sequences"
    return "expected a string or a list of strings"


def _content(message: dict) -> str | None:
    content = message.get("content")
    if content is None:
        return None if message.get("role") == "assistant" else "expected a string or a list of content parts"
    if isinstance(content, str):
        return None
    if not isinstance(content, list) or not all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        return "expected a string or a list of content parts (objects with a `type`)"
    if message.get("role") == "user" and USER_CONTENT_TYPES is not None:
        unknown = next((part["type"] for part in content if part["type"] not in USER_CONTENT_TYPES), None)
        if unknown is not None:
            return f"content part type `{unknown[:40]}` is not one of: {', '.join(USER_CONTENT_TYPES)}"
    return None


def _tool_calls(value) -> tuple[str, str] | None:
    """(where inside, problem) for an assistant's `tool_calls`: OpenAI's list of function calls."""
    if not isinstance(value, list):
        return "", "expected a list of tool calls"
    for index, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f"[{index}]", "expected an object with a `function` holding a string `name`"
        if not isinstance(function.get("arguments", ""), str):
            return f"[{index}].function.arguments", "expected a string (the arguments as JSON text)"
    return None


def _messages(value) -> tuple[str, str] | None:
    """(param, problem) for the first thing wrong in `messages`, or None."""
    if not isinstance(value, list) or not value:
        return "messages", "expected a non-empty list of messages"
    if len(value) > MOST_MESSAGES:
        return "messages", f"expected at most {MOST_MESSAGES} messages"
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return where, "expected an object with `role` and `content`"
        if message.get("role") not in ROLES:
            return f"{where}.role", f"expected one of: {', '.join(ROLES)}"
        problem = _content(message)
        if problem:
            return f"{where}.content", problem
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            return f"{where}.tool_call_id", "expected a string (a tool message answers a tool call)"
        calls = _tool_calls(message["tool_calls"]) if message.get("tool_calls") is not None else None
        if calls:
            return f"{where}.tool_calls{calls[0]}", calls[1]
    return None


FIELDS = {
    "stream": _of_type(bool, "expected a boolean"),
    "stream_options": _of_type(dict, "expected an object"),
    "max_tokens": _between(1, LARGEST_COUNT, whole=True),
    "max_completion_tokens": _between(1, LARGEST_COUNT, whole=True),
    "n": _between(1, 128, whole=True),
    "temperature": _between(0, 2),
    "top_p": _between(0, 1),
    "presence_penalty": _between(-2, 2),
    "frequency_penalty": _between(-2, 2),
    "seed": _between(-(2**63), 2**63 - 1, whole=True),
    "stop": _stop,
    "logprobs": _of_type(bool, "expected a boolean"),
    "top_logprobs": _between(0, 20, whole=True),
    "user": _of_type(str, "expected a string"),
    "tools": _of_type(list, "expected a list of tools"),
    "tool_choice": _of_type((str, dict), "expected a string or an object"),
    "parallel_tool_calls": _of_type(bool, "expected a boolean"),
    "response_format": _of_type(dict, "expected an object"),
    "logit_bias": _of_type(dict, "expected an object of token ids to numbers"),
}


def problem_with(data: dict) -> tuple[str, str] | None:
    """(param, what is wrong) for the first malformed field of a chat request, or None."""
    wrong = _messages(data.get("messages"))
    if wrong:
        return wrong
    for field, check in FIELDS.items():
        if field in data and data[field] is not None:
            problem = check(data[field])
            if problem:
                return field, problem
    return None


def invalid_request(param: str, problem: str) -> HTTPException:
    """OpenAI's error format: message, type, param; LiteLLM reads `.type` and `.param` from it."""
    error = HTTPException(status_code=400, detail=f"Invalid value for '{param}': {problem}.")
    error.type = "invalid_request_error"
    error.param = param
    error.provider_specific_fields = {"reason": INVALID_REQUEST}
    return error


class RequestCheck(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if call_type not in ("completion", "acompletion"):
            return data
        wrong = problem_with(data)
        if wrong:
            raise invalid_request(*wrong)
        return data


# ---- the front door ---------------------------------------------------------------------------
#
# NFR68 (the cloud only after vLLM and Ollama failed) must hold whatever a client with the key
# sends. LiteLLM 1.108.7 serves ~630 routes, and any model group by name on every route that takes
# a model (path-model routes, /v1/completions, /v1/embeddings, /v1/rerank, /v1/responses, ...), and
# `?model=` in the query wins over the body's model (`http_parsing_utils.resolve_inference_model`).
# A denylist would miss the next route LiteLLM adds; so the door admits only what an OpenAI chat
# client needs, and on the chat route only the names the operator gave clients.

CHAT_PATHS = ("/chat/completions", "/v1/chat/completions")
# Served only when the stack has an embeddings chain (its names, no other): else 404 as any other route.
EMBEDDINGS_PATHS = ("/embeddings", "/v1/embeddings")
MODEL_LIST_PATHS = ("/models", "/v1/models")
ONE_MODEL_PREFIXES = ("/models/", "/v1/models/")
PROBE_PATHS = ("/health/liveliness", "/health/liveness", "/health/readiness")
METRICS_PATHS = ("/metrics", "/metrics/")  # the ServiceMonitor's scrape (LiteLLM asks for the key there)
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
ADMITTED_GETS = frozenset((*MODEL_LIST_PATHS, *PROBE_PATHS, *METRICS_PATHS))
# Every header LiteLLM takes a key from (its SpecialHeaders): with one, LiteLLM's auth decides.
KEY_HEADERS = frozenset(header.value.lower().encode() for header in SpecialHeaders)
# Headers LiteLLM turns into routing (litellm_pre_call_utils.LiteLLMProxyRequestSetup) or into
# switching callbacks off (the spend guard is one).
STEERING_HEADERS = frozenset(
    name.encode()
    for name in (
        "x-litellm-timeout",
        "x-litellm-stream-timeout",
        "x-litellm-num-retries",
        "x-litellm-keepalive-seconds",
        "x-litellm-disable-callbacks",
    )
)
# Body fields with which LiteLLM lets a caller steer the chain (read in router.py and main.py):
# timeouts, retries, fallbacks, the deployment or provider, the test levers. Refused, not ignored:
# a client that sends `timeout` believes it bounded its wait; dropping the field silently would
# leave it believing that forever, and a 400 naming the field tells it at the first try. No
# OpenAI client sends these (they are LiteLLM's own, not OpenAI's API).
ROUTING_FIELDS = frozenset(
    {
        "timeout", "request_timeout", "stream_timeout", "keepalive_seconds", "num_retries", "max_retries",
        "retry_policy", "model_group_retry_policy", "cooldown_time",
        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "default_fallbacks",
        "disable_fallbacks", "fallback_depth", "max_fallbacks", "router_settings_override", "include_fallback_errors",
        "specific_deployment", "deployment_id", "model_id", "model_info", "litellm_params", "custom_llm_provider",
        "routing_strategy", "routing_strategy_args", "routing_groups", "passthrough", "passthrough_on_no_deployment",
        "silent_model", "allowed_model_region", "enable_tag_filtering",
    }
)  # fmt: skip
ROUTING_PREFIXES = ("mock_", "_")  # mock_response, mock_testing_fallbacks, ...; _target_order, ...
# Where a request goes and with which credentials is the operator's: LiteLLM's own list of refused
# parameters (auth_utils.is_request_body_safe: api_base, base_url, user_config, ...) answered as a
# 400 here, before LiteLLM's auth turns its refusal into an outage; plus the connection fields of
# LiteLLM's OpenAI parameter list that it does not refuse (constants.OPENAI_CHAT_COMPLETION_PARAMS).
try:
    from litellm.proxy.auth.auth_utils import (
        _BANNED_METADATA_PARAMS,
        _BANNED_REQUEST_BODY_PARAMS,
        _NESTED_CONFIG_KEYS,
        _NESTED_METADATA_KEYS,
    )
except ImportError:  # a later LiteLLM: its own check still refuses, gateway/honest_errors.py says 400
    _BANNED_REQUEST_BODY_PARAMS = _BANNED_METADATA_PARAMS = _NESTED_CONFIG_KEYS = _NESTED_METADATA_KEYS = ()
# `headers` and `provider_specific_header` too: LiteLLM sends `kwargs.get("headers") or extra_headers`
# to the provider (main.py `completion`) and merges `provider_specific_header.extra_headers` into a
# call to the named provider (main.py `acompletion`): a client could replace the operator's
# Authorization or pick another OpenAI project.
CONNECTION_FIELDS = frozenset(
    {
        *_BANNED_REQUEST_BODY_PARAMS, "api_key", "api_version", "organization", "extra_headers", "default_headers",
        "headers", "provider_specific_header",
    }
)  # fmt: skip
NESTED_REFUSED = {
    **{key: frozenset(_BANNED_REQUEST_BODY_PARAMS) for key in _NESTED_CONFIG_KEYS},
    **{key: frozenset(_BANNED_METADATA_PARAMS) for key in _NESTED_METADATA_KEYS},
}
# Words of LLM routes that LiteLLM's own classification (RouteChecks.is_llm_api_route) misses.
LLM_ROUTE_WORDS = ("completions", "embeddings", "rerank", "responses", "messages", "realtime", "generateContent")
STARTED = int(time.time())
# Response headers LiteLLM adds (proxy/common_request_processing.py `get_custom_headers`) that name
# the chain's insides: the provider's model string, the tier's Service URL, the internal group, the
# region and LiteLLM's version. Kept: `x-litellm-model-id` (the tier: vllm, ollama, openai, which the
# README promises) and `x-litellm-attempted-fallbacks` (a count, no name: it says an answer was a
# fallback, which the tier id says anyway, and LiteLLM's own fallback checks read it).
INTERNAL_HEADERS = frozenset(
    name.encode()
    for name in (
        "x-litellm-model-name",
        "x-litellm-model-api-base",
        "x-litellm-model-group",
        "x-litellm-model-region",
        "x-litellm-version",
    )
)
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")
BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
NOT_AN_OBJECT = "Invalid JSON payload: the request body must be a JSON object."


@dataclass(frozen=True)
class Refusal:
    """An answer in OpenAI's error format, given at the door: no tier, no LiteLLM."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    error_type: str = "invalid_request_error"


def max_request_bytes() -> int | None:
    """The pod's body limit; None (no limit) outside a pod that sets it."""
    value = os.environ.get(MAX_REQUEST_BYTES_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def too_large(limit: int) -> Refusal:
    message = f"Request body too large: this gateway takes at most {limit} bytes. Send a shorter request."
    return Refusal(413, message, code="request_too_large")


def declared_length(scope) -> int | None:
    """The Content-Length the client declared (uvicorn refuses a malformed one itself)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _switched_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def open_without_a_key(path: str) -> bool:
    if path in PROBE_PATHS:
        return True
    if not _switched_off("NO_DOCS") and path.startswith(DOCS_PATHS):
        return True
    # The admin UI needs LiteLLM's public routes (its pages, login, settings): all of them.
    return not _switched_off("DISABLE_ADMIN_UI")


# The admin UI, when the operator turns it on, gets its own routes and no others. LiteLLM 1.108.7
# serves 274 write routes besides chat, and `RouteChecks.is_llm_api_route` does not know most of the
# ones that prompt a model or rewire the chain: `POST /prompts/test` runs a dotprompt against any
# group (`model: chat-openai` → the cloud, every tier up), `/model/new|update|delete`,
# `/config/update`, `/fallback`, `/auto_router/manage` rewire it, `/model/info` names its insides.
# So the console is a list, read from LiteLLM's own route groups (proxy/_types.py `LiteLLMRoutes`):
# - its pages and login: the static UI (`/ui/`, `/_next/`; proxy_server.py mounts them), the UI's
#   config and logo, `/login`, `/v2/login`, `/sso/...`, `/onboarding/...`;
# - its management API for keys, users, teams and spend (`key_management_routes`,
#   `spend_tracking_routes`, `global_spend_tracking_routes`, the user/team/organization entries of
#   `management_routes` and `info_routes`): none of them calls a model or changes where one is sent.
# The UI's model, config, prompt and health pages therefore answer 404: the chain is the stack's
# (Pulumi), not something to edit live. The master key still mints keys here: a client given it
# could do what an admin does, so with the UI on, clients get virtual keys (settings.py refuses
# `gateway.adminUi` without `databaseUrl`; docs/failover.md). A key minted for `chat-openai` is
# still refused at the chat route: the door serves client names only, whatever the key allows.
UI_PAGES = (
    "/ui/", "/_next/", "/litellm-asset-prefix/_next/", "/.well-known/litellm-ui-config",
    "/litellm/.well-known/litellm-ui-config", "/login", "/v2/login", "/sso/", "/onboarding/",
    "/get_image", "/get_logo_url", "/get/ui_settings", "/get/user_banner", "/get/latest_release_info",
)  # fmt: skip
# Within LiteLLM's management groups, what touches the chain or calls a model.
CHAIN_ROUTES = (
    "/model", "/v1/model", "/v2/model", "/health", "/config", "/fallback", "/prompts", "/auto_router",
    "/utils", "/queue", "/v1/", "/models", "/mcp", "/agent", "/guardrails", "/jwt",
)  # fmt: skip


def _template(route: str) -> re.Pattern:
    """A LiteLLM route with `{key_id}`-style parameters as a pattern (one path segment each)."""
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"({[^}]+})", route)) + "$"
    )


@functools.cache
def console_routes() -> tuple[frozenset[str], tuple[re.Pattern, ...]]:
    """The admin UI's management API (exact paths, templated paths), from LiteLLM's route groups."""
    from litellm.proxy._types import LiteLLMRoutes

    groups = (
        LiteLLMRoutes.key_management_routes, LiteLLMRoutes.management_routes, LiteLLMRoutes.spend_tracking_routes,
        LiteLLMRoutes.global_spend_tracking_routes, LiteLLMRoutes.info_routes,
    )  # fmt: skip
    routes = {route for group in groups for route in group.value if not route.startswith(CHAIN_ROUTES)}
    exact = frozenset(route for route in routes if "{" not in route)
    return exact, tuple(_template(route) for route in sorted(routes - exact))


def is_console_route(path: str) -> bool:
    """The admin UI's own routes: its pages, its login, its key/user/team/spend API (above)."""
    if path == "/ui" or path.startswith(UI_PAGES):
        return True
    exact, templated = console_routes()
    return path in exact or any(pattern.match(path) for pattern in templated)


def admitted(method: str, path: str) -> bool:
    """The allowlist: chat, the model list, the probes and the metrics; the docs and the admin UI
    only when the operator turned them on. The LLM routes beyond chat never."""
    if method == "POST" and path in CHAT_PATHS:
        return True
    if method == "GET" and (path in ADMITTED_GETS or path.startswith(ONE_MODEL_PREFIXES)):
        return True
    if method == "GET" and not _switched_off("NO_DOCS") and path.startswith(DOCS_PATHS):
        return True
    return not _switched_off("DISABLE_ADMIN_UI") and is_console_route(path)


def unknown_route(method: str, path: str) -> Refusal:
    """OpenAI's own answer to a URL it does not serve: 404 `unknown_url`."""
    message = (
        f"Unknown request URL: {method} {path[:200]}. This gateway serves POST /v1/chat/completions and GET /v1/models."
    )
    return Refusal(404, message, code="unknown_url")


def model_not_found(model: str, names: Mapping[str, str]) -> Refusal:
    """OpenAI's answer to a model the caller may not use: 404 `model_not_found`."""
    served = ", ".join(sorted(names)) or "none"
    message = (
        f"The model `{model[:100]}` does not exist or you do not have access to it. This gateway serves: {served}."
    )
    return Refusal(404, message, param="model", code="model_not_found")


def _refused_field(data: dict) -> Refusal | None:
    for field in data:
        if field in ROUTING_FIELDS or field.startswith(ROUTING_PREFIXES):
            message = (
                f"Unsupported parameter: '{field}'. The gateway decides timeouts, retries and fallbacks "
                "(its chain is fixed by its operator): remove it."
            )
            return Refusal(400, message, param=field, code="unsupported_parameter")
        if field in CONNECTION_FIELDS:
            return _not_the_clients(field)
    for container, refused in NESTED_REFUSED.items():
        nested = data.get(container)
        if isinstance(nested, dict):
            for field in nested:
                if field in refused:
                    return _not_the_clients(f"{container}.{field}")
    return None


def _not_the_clients(param: str) -> Refusal:
    message = (
        f"Unsupported parameter: '{param}'. Where the gateway sends a request, and with which credentials, "
        "is set by its operator: remove it."
    )
    return Refusal(400, message, param=param, code="unsupported_parameter")


def chat_request_problem(data: dict, names: Mapping[str, str], query_string: bytes) -> Refusal | None:
    """What the door refuses in a chat request (a JSON object), or None."""
    return _model_problem(data, names, query_string) or _refused_field(data)


# OpenAI's embeddings API: at most 2048 inputs a request; what each field may be.
MOST_INPUTS = 2048
EMBEDDING_FIELDS = {
    "encoding_format": lambda v: None if v in ("float", "base64") else "expected 'float' or 'base64'",
    "dimensions": _between(1, 65536, whole=True),
    "user": _of_type(str, "expected a string"),
}


def _embedding_input_problem(value) -> str | None:
    """`input`: a string, a list of strings, a list of token ids, or a list of such lists; none empty."""
    if isinstance(value, str):
        return None if value else "expected a non-empty string"
    if not isinstance(value, list) or not value:
        return "expected a string, a list of strings or a list of token ids, non-empty"
    if len(value) > MOST_INPUTS:
        return f"at most {MOST_INPUTS} inputs"
    if all(_is_integer(item) for item in value):
        return None
    for item in value:
        if isinstance(item, str) and item:
            continue
        if isinstance(item, list) and item and all(_is_integer(token) for token in item):
            continue
        return "every input must be a non-empty string or a non-empty list of token ids"
    return None


# Ollama's own fields, which LiteLLM passes to /api/embed over the deployment's: a client could undo
# `truncate: false` (a vector of a cut text), or reload the shared runner with another context.
OLLAMA_FIELDS = ("truncate", "options", "keep_alive", "num_ctx", "extra_body", "drop_params")


@dataclass(frozen=True)
class EmbeddingRules:
    """What a chain's tiers all take: its declared vector length, and token ids (not Ollama's)."""

    dimensions: int | None = None
    token_ids: bool = True


def embedding_request_problem(
    data: dict, names: Mapping[str, str], query_string: bytes, rules: Mapping[str, EmbeddingRules] | None = None
) -> Refusal | None:
    """What the door refuses in an embeddings request (a JSON object), or None."""
    refusal = _model_problem(data, names, query_string) or _refused_field(data)
    if refusal is not None:
        return refusal
    for field in OLLAMA_FIELDS:
        if field in data:
            message = f"Unsupported parameter: '{field}'. How a model runs is set by the gateway's operator: remove it."
            return Refusal(400, message, param=field, code="unsupported_parameter")
    chain = (rules or {}).get(names[data["model"]], EmbeddingRules())
    asked = data.get("dimensions")
    if asked is not None and chain.dimensions is not None and asked != chain.dimensions:
        message = (
            f"Invalid value for 'dimensions': this model's vectors have {chain.dimensions}; another length could not "
            "be searched in the same index. Remove it, or ask for that."
        )
        return Refusal(400, message, param="dimensions")
    if (
        not chain.token_ids
        and isinstance(data.get("input"), list)
        and any(isinstance(item, list) or _is_integer(item) for item in data["input"])
    ):
        return Refusal(400, "Invalid value for 'input': this model takes text, not token ids.", param="input")
    if "input" not in data:
        return Refusal(400, "You must provide an input parameter.", param="input")
    wrong = _embedding_input_problem(data["input"])
    if wrong:
        return Refusal(400, f"Invalid value for 'input': {wrong}.", param="input")
    for field, check in EMBEDDING_FIELDS.items():
        if data.get(field) is not None and (problem := check(data[field])):
            return Refusal(400, f"Invalid value for '{field}': {problem}.", param=field)
    return None


def _model_problem(data: dict, names: Mapping[str, str], query_string: bytes) -> Refusal | None:
    """The model: in the body, a string, one of the names this route serves."""
    if query_string and any(
        key == "model" for key, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    ):
        return Refusal(400, "Invalid parameter: the model goes in the JSON body, not the URL.", param="model")
    model = data.get("model")
    if model is None:
        return Refusal(400, "You must provide a model parameter.", param="model")
    if not isinstance(model, str):
        return Refusal(400, "Invalid type for 'model': expected a string.", param="model")
    if model not in names:
        return model_not_found(model, names)
    return None


def client_names(
    model_list: list[dict] | None, aliases: Mapping[str, Any] | None, mode: str | None = CHAT_MODE
) -> dict[str, str]:
    """Each name a client may call → the chain's group it stands for: the groups marked client-facing
    (of chains serving `mode`, LiteLLM's `model_info.mode`; None: every chain), and each
    `model_group_alias` of one (LiteLLM's alias: a string, or `{"model": ...}`)."""
    heads = {
        entry.get("model_name")
        for entry in model_list or []
        if (entry.get("model_info") or {}).get(CLIENT_FACING)
        and mode in (None, (entry.get("model_info") or {}).get(MODE, CHAT_MODE))
    }
    names = {head: head for head in heads}
    for alias, target in (aliases or {}).items():
        group = target if isinstance(target, str) else (target or {}).get("model")
        if group in heads:
            names.setdefault(alias, group)
    return names


def embedding_rules(model_list: list[dict] | None, fallbacks, heads) -> dict[str, EmbeddingRules]:
    """Each embeddings chain's head → what all its tiers take (the rendered `embedding_dimensions`; no
    token ids where a tier is Ollama's: LiteLLM sends Ollama text only)."""
    by_group: dict[str, list[dict]] = {}
    for entry in model_list or []:
        by_group.setdefault(entry.get("model_name"), []).append(entry)
    rules = {}
    for head in set(heads):
        entries = [entry for group in chain_groups(fallbacks, head) for entry in by_group.get(group, [])]
        declared = {(e.get("model_info") or {}).get(EMBEDDING_DIMENSIONS) for e in entries} - {None}
        ollama = any(str((e.get("litellm_params") or {}).get("model", "")).startswith("ollama") for e in entries)
        rules[head] = EmbeddingRules(declared.pop() if len(declared) == 1 else None, not ollama)
    return rules


class _ClientNames:
    """The router's client names by mode (chat, embedding; None: all), computed once per router
    (LiteLLM builds it at start)."""

    def __init__(self) -> None:
        self._router: Any = None
        self._names: dict[str | None, dict[str, str]] = {}
        self._rules: dict[str, EmbeddingRules] = {}

    def get(self, mode: str | None = CHAT_MODE) -> dict[str, str]:
        self._refresh()
        return self._names.get(mode, {})

    def embedding_rules(self) -> dict[str, EmbeddingRules]:
        self._refresh()
        return self._rules

    def _refresh(self) -> None:
        proxy = sys.modules.get("litellm.proxy.proxy_server")
        router = getattr(proxy, "llm_router", None)
        if router is not None and router is not self._router:
            self._names = {
                each: client_names(router.model_list, router.model_group_alias, each)
                for each in (CHAT_MODE, EMBEDDING_MODE, None)
            }
            self._rules = embedding_rules(router.model_list, router.fallbacks, self._names[EMBEDDING_MODE].values())
            self._router = router


def model_list_body(names: Mapping[str, str], one: str | None = None) -> bytes:
    """OpenAI's model list (or one model object): the client names, nothing of the chain behind."""
    entries = [{"id": name, "object": "model", "created": STARTED, "owned_by": "llm-gateway"} for name in sorted(names)]
    if one is not None:
        return orjson.dumps(next(entry for entry in entries if entry["id"] == one))
    return orjson.dumps({"object": "list", "data": entries})


async def _answer(send, refusal: Refusal) -> None:
    error = {
        "message": refusal.message,
        "type": refusal.error_type,
        "param": refusal.param,
        "code": refusal.code or str(refusal.status),
    }
    body = orjson.dumps({"error": error})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _parsed(body: bytes) -> tuple[Any, bool]:
    """(the JSON value, whether it parsed). orjson, as LiteLLM's own first try; what orjson rejects
    goes to LiteLLM, which repairs surrogates or answers 400 (json only says whether it is an object)."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body), False
    except ValueError:
        return None, False


def _serialized(data: dict) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:  # lone surrogates, which only json takes: LiteLLM answers those itself
        return json.dumps(data).encode()


class BodyTooLarge(Exception):
    """More of the body arrived than the limit allows: reading stopped there."""


async def _whole_body(receive, limit: int | None) -> bytes | None:
    """The body, or None if the client left before sending all of it. Chunks are joined once at the
    end, in linear time (`body += chunk` copies the whole body at every chunk, and 48 MB arrives in
    hundreds of chunks). Past `limit`, reading stops: BodyTooLarge."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that hands the buffered body over as one message, then what the client sends
    (LiteLLM listens for the disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again():
        return pending.pop() if pending else await receive()

    return receive_again


class FrontDoor:
    """ASGI, in front of everything LiteLLM does: no key → 401; not on the allowlist → 404; a chat
    request for a name clients may not call, or with a routing or connection field → 404 / 400; an
    alias → the chain's own name; the model list → the client names only; a body over the limit → 413."""

    # LiteLLM execs callback files by path, once per mention: each load defines its own FrontDoor
    # class, so `isinstance` cannot tell an earlier load's door. This marker can.
    is_llm_gateway_front_door = True

    def __init__(self, inner, limit: int | None = None) -> None:
        self.inner = inner
        self.names = _ClientNames()
        self.limit = limit if limit is not None else max_request_bytes()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":  # LiteLLM's realtime routes: no chat client needs them
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        if self.limit is not None and (declared_length(scope) or 0) > self.limit:
            return await _answer(send, too_large(self.limit))  # not a byte of it read
        method, path = scope.get("method", ""), scope.get("path", "")
        if is_preflight(method, scope):  # as LiteLLM answers it, for the routes the door admits
            if self._serves(preflight_method(scope), path):
                return await self.inner(scope, receive, send)
            return await _answer(send, unknown_route(preflight_method(scope), path))
        has_key = steering = form = False
        for name, value in scope.get("headers", []):
            has_key = has_key or name in KEY_HEADERS
            steering = steering or name in STEERING_HEADERS
            form = form or (name == b"content-type" and value.lower().startswith(FORM_TYPES))
        if not has_key and not open_without_a_key(path):
            message = "No API key was sent: send the gateway's key as `Authorization: Bearer <key>`."
            return await _answer(send, Refusal(401, message, error_type="auth_error"))
        if not self._serves(method, path):
            return await _answer(send, unknown_route(method, path))
        if method == "POST" and (path in CHAT_PATHS or path in EMBEDDINGS_PATHS):
            if steering:
                return await _answer(send, _steering_header(scope))
            if form:  # LiteLLM would parse a form into a request: chat is JSON, as OpenAI's
                return await _answer(send, Refusal(400, NOT_AN_OBJECT, param="request_body"))
            return await self._chat(scope, receive, send, EMBEDDING_MODE if path in EMBEDDINGS_PATHS else CHAT_MODE)
        if method == "GET" and (path in MODEL_LIST_PATHS or path.startswith(ONE_MODEL_PREFIXES)):
            return await self._models(scope, receive, send, path)
        if method in BODY_METHODS and self.limit is not None:  # the admin UI's routes, when on
            body = await self._body_or_answer(receive, send)
            if body is None:
                return None
            receive = _replay(body, receive)
        return await self.inner(scope, receive, send)

    async def _body_or_answer(self, receive, send) -> bytes | None:
        """The whole body; None once it is answered (413 past the limit) or the client left."""
        try:
            return await _whole_body(receive, self.limit)
        except BodyTooLarge:
            await _answer(send, too_large(self.limit))
            return None

    def _serves(self, method: str, path: str) -> bool:
        """The allowlist, and the embeddings route while an embeddings chain exists."""
        if method == "POST" and path in EMBEDDINGS_PATHS:
            return bool(self.names.get(EMBEDDING_MODE))
        return admitted(method, path)

    async def _chat(self, scope, receive, send, mode: str = CHAT_MODE) -> None:
        """A chat or an embeddings request: checked at the door, an alias rewritten to its chain."""
        body = await self._body_or_answer(receive, send)
        if body is None:
            return None
        data, parsed = _parsed(body) if body.strip() else ({}, False)
        if (parsed or data is not None) and not isinstance(data, dict):  # `null` parses to None
            return await _answer(send, Refusal(400, NOT_AN_OBJECT, param="request_body"))
        if isinstance(data, dict):
            names = self.names.get(mode)
            query = scope.get("query_string", b"")
            if mode == CHAT_MODE:
                refusal = chat_request_problem(data, names, query)
            else:
                refusal = embedding_request_problem(data, names, query, self.names.embedding_rules())
            if refusal is not None:
                return await _answer(send, refusal)
            if names[data["model"]] != data["model"]:  # an alias: the chain behind it sees its own name
                data["model"] = names[data["model"]]
                body = _serialized(data)
            if parsed:  # LiteLLM reads this instead of parsing the body again (read_request_body)
                scope["parsed_body"] = (tuple(data), data)
        return await self.inner(scope, _replay(body, receive), _without_internal_headers(send))

    async def _models(self, scope, receive, send, path: str) -> None:
        """LiteLLM checks the key (asked as GET /v1/models); its 200 is replaced by the client names."""
        names = self.names.get(None)
        one = path.split("/models/", 1)[1] if path.startswith(ONE_MODEL_PREFIXES) else None
        if one is not None and one not in names:
            return await _answer(send, model_not_found(one, names))
        start: dict = {}

        async def replace_the_list(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                if message["status"] != 200:
                    await send(message)
                return
            if start.get("status") != 200:
                return await send(message)
            if message.get("more_body"):
                return
            body = model_list_body(names, one)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        listed = {**scope, "path": "/v1/models", "raw_path": b"/v1/models", "query_string": b""}
        return await self.inner(listed, receive, replace_the_list)


def _without_internal_headers(send):
    """A `send` that drops INTERNAL_HEADERS from the response head (a stream's too: one head)."""

    async def send_public(message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (name, value) for name, value in message.get("headers", []) if name.lower() not in INTERNAL_HEADERS
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_public


def is_preflight(method: str, scope) -> bool:
    """A browser's CORS preflight: OPTIONS with the method it wants to send. It carries no key and no
    body; LiteLLM's CORSMiddleware answers it (proxy_server.py), no route is run."""
    return method == "OPTIONS" and any(name == b"access-control-request-method" for name, _ in scope.get("headers", []))


def preflight_method(scope) -> str:
    value = next(value for name, value in scope["headers"] if name == b"access-control-request-method")
    return value.decode("latin-1").strip().upper()


def _steering_header(scope) -> Refusal:
    name = next(name for name, _ in scope["headers"] if name in STEERING_HEADERS).decode()
    message = f"Unsupported header: '{name}'. The gateway decides timeouts, retries and callbacks: remove it."
    return Refusal(400, message, param=name, code="unsupported_parameter")


def _is_front_door(candidate: Any) -> bool:
    return getattr(candidate, "is_llm_gateway_front_door", False)


def install_front_door(app: Any) -> None:
    """Wrap the app's ASGI stack once, whichever load of this file did it first. LiteLLM loads this
    module while starting (its stack is built by then); before that, the wrapper goes in as an
    ordinary middleware."""
    if app.middleware_stack is None:
        if not any(_is_front_door(middleware.cls) for middleware in app.user_middleware):
            app.add_middleware(FrontDoor)
    elif not _is_front_door(app.middleware_stack):
        app.middleware_stack = FrontDoor(app.middleware_stack)


def _install_front_door() -> None:
    try:
        from litellm.proxy.proxy_server import app
    except ImportError:  # imported outside the proxy (unit tests): nothing to guard
        return
    install_front_door(app)


handler = RequestCheck()
_install_front_door()

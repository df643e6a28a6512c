"""A client's mistake gets a client error: a LiteLLM callback inside the proxy (shipped in the ConfigMap).

Registered under `litellm_settings.callbacks`, it checks a chat request before any tier sees it
(`async_pre_call_hook`). A malformed request is answered 400 in OpenAI's error format, naming the
field (`param`) and what is wrong with it; nothing is sent to any tier, so a bad request can
neither be retried down the chain nor leave the cluster. The checks follow OpenAI's own API, which
rejects a wrong type with 400 ("Invalid type for 'stream': expected a boolean ..."): a non-boolean
`stream` is refused, not guessed. Fields this module does not know pass through untouched (vLLM
takes sampling extras such as `top_k`); the tier's own validation answers for those, and a tier's
400 reaches the client as a 400 (gateway/honest_errors.py).

Two things LiteLLM 1.108.7 does before any hook runs are handled at its front door, an ASGI wrapper
put around the proxy's middleware stack when this module loads (`FrontDoor`):
- a chat request whose JSON body is not an object (`null`, `[1, 2]`, `"x"`) crashes its auth path
  (`auth_exception_handler.handle_authentication_error` calls `request_data.get`) into a bare
  `500 Internal Server Error`: it gets a 400 in OpenAI's format instead;
- LiteLLM keeps a fixed list of public routes (`LiteLLMRoutes.public_routes`: `/`, `/routes`,
  `/ui`, `/config/yaml`, model hubs, ...) that no setting removes. Without a key, only the health
  probes are answered, plus the docs (unless NO_DOCS) and the admin UI (unless DISABLE_ADMIN_UI):
  the same switches LiteLLM reads. Anything else without a key is a 401.
"""

import json
import math
import os

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import SpecialHeaders

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MOST_MESSAGES = 10_000
LARGEST_COUNT = 2**31 - 1


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_integer(value) or isinstance(value, float)) and math.isfinite(value)


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
    if isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        return None
    return "expected a string or a list of content parts (objects with a `type`)"


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
    error.provider_specific_fields = {"reason": "invalid_request"}
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

CHAT_PATHS = ("/chat/completions", "/v1/chat/completions")
PROBE_PATHS = ("/health/liveliness", "/health/liveness", "/health/readiness")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
# Every header LiteLLM takes a key from (its SpecialHeaders): with one, LiteLLM's auth decides.
KEY_HEADERS = {header.value.lower().encode() for header in SpecialHeaders}


def _switched_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def open_without_a_key(path: str) -> bool:
    if path in PROBE_PATHS:
        return True
    if not _switched_off("NO_DOCS") and path.startswith(DOCS_PATHS):
        return True
    # The admin UI needs LiteLLM's public routes (its pages, login, settings): all of them.
    return not _switched_off("DISABLE_ADMIN_UI")


async def _answer(send, status: int, message: str, error_type: str, param: str | None) -> None:
    error = {"message": message, "type": error_type, "param": param, "code": str(status)}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _not_an_object(body: bytes) -> bool:
    """Valid JSON that is not an object. Invalid JSON is left to LiteLLM, which answers it 400."""
    try:
        return not isinstance(json.loads(body), dict) if body.strip() else False
    except ValueError:
        return False


class FrontDoor:
    """ASGI: in front of everything LiteLLM does, for the two cases above; the rest passes through."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path = scope.get("path", "")
        has_key = any(name in KEY_HEADERS for name, _ in scope.get("headers", []))
        if not has_key and not open_without_a_key(path):
            message = "No API key was sent: send the gateway's key as `Authorization: Bearer <key>`."
            return await _answer(send, 401, message, "auth_error", None)
        if scope.get("method") == "POST" and path in CHAT_PATHS:
            messages, body = [], b""
            while True:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            if _not_an_object(body):
                problem = "Invalid JSON payload: the request body must be a JSON object."
                return await _answer(send, 400, problem, "invalid_request_error", "request_body")
            replay = iter(messages)

            async def receive_again():
                return next(replay, None) or await receive()

            return await self.inner(scope, receive_again, send)
        return await self.inner(scope, receive, send)


def _install_front_door() -> None:
    """Wrap the proxy's ASGI stack once. LiteLLM loads this module while starting (its stack is
    built by then); before that, the wrapper goes in as an ordinary middleware."""
    try:
        from litellm.proxy.proxy_server import app
    except ImportError:  # imported outside the proxy (unit tests): nothing to guard
        return
    if app.middleware_stack is None:
        app.add_middleware(FrontDoor)
    elif not isinstance(app.middleware_stack, FrontDoor):
        app.middleware_stack = FrontDoor(app.middleware_stack)


handler = RequestCheck()
_install_front_door()

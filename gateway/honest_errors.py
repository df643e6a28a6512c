"""Truthful errors for clients when the chain cannot answer: a LiteLLM callback inside the proxy.

Shipped in the gateway's ConfigMap beside config.yaml and registered under
`litellm_settings.callbacks`. Without it, LiteLLM 1.108.7 answers "every tier down" with HTTP 500
and a message naming internal hosts, ports and the fallback walk. With it, in OpenAI's error format:
- a tier rejected the request as invalid (400, 413, 422) → that status, message without addresses;
- the cloud tier rejected the gateway's own credentials → 503, reason `upstream_auth_failed`;
- the cloud tier's rate limit → 429, reason `cloud_rate_limited`;
- the spend guard cannot reach its counts in Redis (policy "closed") → 429, reason
  `cloud_guard_unavailable`;
- anything else (refused, hung, 5xx on every tier) → 503, reason `no_tier_available`, Retry-After.
- an error inside a stream, after the 200 went out → one error event in that format (503, reason
  `stream_interrupted`), then `[DONE]`: never LiteLLM's event with the exception's traceback.
The reason is in `error.provider_specific_fields.reason`.
No message carries an address, a port or a key fragment.
"""

import json
import logging
import os
import re
import sys

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

# The facts shared with the program: contract.py, shipped beside this file (its docstring says how and why).
if (_here := os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(_here)
from contract import (
    CLOUD_GUARD_UNAVAILABLE,
    CLOUD_RATE_LIMITED,
    FAILED_REQUESTS,
    INVALID_REQUEST,
    LEAVES_CLUSTER,
    NO_TIER_AVAILABLE,
    REDIS_DOWN_TAG,
    STREAM_INTERRUPTED,
    UPSTREAM_AUTH_FAILED,
    chain_groups,
    gateway_counter,
)

_log = logging.getLogger("llm_gateway.honest_errors")

# Served at /metrics/ with LiteLLM's own metrics (same registry): what the client was told, by
# reason. LiteLLM counts the failed request against the first tier's error (a vLLM 500), which
# does not say whether the chain was out of tiers, rate-limited or refused by the cloud.
FAILURES = gateway_counter(
    FAILED_REQUESTS,
    "Requests answered with an error by the gateway, by the reason the client was given and the chain asked",
    ["reason", "status", "requested_model"],
)

CLIENT_ERROR_STATUSES = (400, 413, 422)
# LiteLLM's refusal of a parameter a client may not set (auth_utils.is_request_body_safe and its
# helpers raise ValueError("Rejected Request: <param> ...")): the request check's front door answers
# LiteLLM's list itself; this catches what a later list adds, instead of a 503 that pages someone.
REJECTED_PARAMETER = re.compile(r"Rejected Request: ([A-Za-z0-9_.\-]+)")
RETRY_AFTER_SECONDS = "10"

_SECRETS_AND_ADDRESSES = [
    re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{4,}"),  # key fragments
    re.compile(r"Bearer\s+\S+", re.IGNORECASE),
    re.compile(r"https?://\S+"),
    re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b"),  # IPv4, with port
    re.compile(r"\[[0-9a-f:]+\](:\d+)?", re.IGNORECASE),  # IPv6
    re.compile(r"\b[a-z0-9-]+(\.[a-z0-9-]+)*\.(svc|local|internal|cluster)(\.[a-z.]+)?(:\d+)?\b", re.IGNORECASE),
    re.compile(r"\b(localhost|REDACTED)(:\d+)?\b"),
    re.compile(r"<[^>]*object at 0x[0-9a-f]+>"),
    re.compile(r":\d{2,5}\b"),  # any port left over
]


def sanitize(text: str) -> str:
    for pattern in _SECRETS_AND_ADDRESSES:
        text = pattern.sub("[internal]", text)
    return re.sub(r"\s+", " ", text).strip()[:400]


def _last_tier_message(text: str) -> str:
    """LiteLLM appends 'Fallback to X also failed: <error>': the last one is the last tier's word."""
    return text.rsplit("also failed:", 1)[-1]


def _client_error_status(exception: Exception, text: str) -> int | None:
    status = getattr(exception, "status_code", None)
    last = _last_tier_message(text)
    if "also failed:" in text:
        if re.search(r"BadRequestError|UnprocessableEntityError|ContextWindowExceededError", last):
            return 400
        return None
    return status if status in CLIENT_ERROR_STATUSES else None


async def _cloud_cooldown(requested: str) -> tuple[str | None, str]:
    """The status and (start of the) error that put the chain's cloud tier in cooldown, if it is cooling
    down. Read asynchronously: with Redis, cooldowns may be read from it, and a slow Redis must not
    block every other request of this process meanwhile."""
    try:
        from litellm.proxy.proxy_server import llm_router
    except ImportError:
        return None, ""
    if llm_router is None:
        return None, ""
    groups = chain_groups(llm_router.fallbacks, requested)
    cloud_ids = [
        deployment["model_info"]["id"]
        for deployment in llm_router.model_list or []
        if (deployment.get("model_info") or {}).get(LEAVES_CLUSTER) and deployment.get("model_name") in groups
    ]
    for _, cooldown in await llm_router.cooldown_cache.async_get_active_cooldowns(cloud_ids, None):
        return str(cooldown.get("status_code")), str(cooldown.get("exception_received") or "")
    return None, ""


def _error(status: int, message: str, error_type: str, reason: str, requested: str = "") -> HTTPException:
    """LiteLLM turns this into OpenAI's error body: message, type (read from `.type`), code (the
    status) and `provider_specific_fields` (here: the machine-readable reason). `requested`: the
    chain the client asked for (the front door admits only the chains' names: few label values)."""
    FAILURES.labels(reason=reason, status=str(status), requested_model=requested).inc()
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status in (429, 503) else None
    error = HTTPException(status_code=status, detail=message, headers=headers)
    error.type = error_type
    error.provider_specific_fields = {"reason": reason}
    return error


def _unauthorized(message: str) -> HTTPException:
    """401 in OpenAI's format. On LiteLLM's auth path the body's `type` is always `auth_error` and
    its `code` the status (auth_exception_handler._as_proxy_exception); the message says what is wrong."""
    error = HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})
    error.param = None
    return error


def _auth_failure(exception: Exception) -> HTTPException | None:
    """The client's key is missing, malformed or not valid: a 401 that says which, never a 503
    (a client told to retry an outage that does not exist retries forever) and never the key."""
    text = str(exception)
    if "No api key passed in" in text:
        return _unauthorized("No API key was sent: send the gateway's key as `Authorization: Bearer <key>`.")
    if "Malformed API Key passed in" in text:
        return _unauthorized("The Authorization header is malformed: expected `Authorization: Bearer <key>`.")
    # Without a database the master key is the only key, and LiteLLM answers any other one with
    # 400 "No connected db."; with one, an unknown key is "Invalid proxy server token passed".
    if getattr(exception, "type", None) == "no_db_connection" or "Invalid proxy server token" in text:
        return _unauthorized("The API key is not valid for this gateway.")
    return None


def _refused_parameter(exception: Exception) -> HTTPException | None:
    """A parameter LiteLLM refuses in a client's body: the client's mistake, a 400 naming it. On
    LiteLLM's auth path the body's `type` is `auth_error` whatever is returned here."""
    found = REJECTED_PARAMETER.match(str(exception))
    if found is None:
        return None
    param = found.group(1)
    message = f"Unsupported parameter: '{param}'. The gateway does not take it from clients: remove it."
    error = _error(400, message, "invalid_request_error", INVALID_REQUEST)
    error.param = param
    return error


class HonestErrors(CustomLogger):
    async def async_post_call_failure_hook(
        self, request_data, original_exception, user_api_key_dict, traceback_str=None
    ) -> HTTPException | None:
        auth = _auth_failure(original_exception) or _refused_parameter(original_exception)
        if auth is not None:
            return auth
        if isinstance(original_exception, ProxyException | HTTPException):
            return None  # the gateway's own answers (budgets, bad routes, request checks) are already right
        text = str(original_exception)
        requested = _requested(request_data)
        client_status = _client_error_status(original_exception, text)
        if client_status is not None:
            detail = sanitize(_last_tier_message(text).split("LiteLLM:", 1)[0])
            message = f"The model rejected the request: {detail}"
            return _error(client_status, message, "invalid_request_error", INVALID_REQUEST, requested)
        cloud_status, cloud_error = await _cloud_cooldown(requested)
        if cloud_status in ("401", "403") or re.search(r"AuthenticationError|PermissionDeniedError", text):
            return _error(
                503,
                "No local inference tier is available, and the cloud tier rejected the gateway's credentials "
                "(an operator must fix the cloud tier's key: llm-gateway:openaiApiKey, or the one its tier names "
                "in apiKey).",
                "service_unavailable_error",
                UPSTREAM_AUTH_FAILED,
                requested,
            )
        if REDIS_DOWN_TAG in cloud_error or REDIS_DOWN_TAG in _last_tier_message(text):
            return _error(
                429,
                "No local inference tier is available, and the cloud tier is closed: its spend guard cannot reach "
                "the gateway's shared state (Redis). Retry later.",
                "rate_limit_error",
                CLOUD_GUARD_UNAVAILABLE,
                requested,
            )
        if cloud_status == "429" or re.search(r"RateLimitError", _last_tier_message(text)):
            return _error(
                429,
                "No local inference tier is available, and the cloud tier's rate limit is reached. Retry later.",
                "rate_limit_error",
                CLOUD_RATE_LIMITED,
                requested,
            )
        return _error(
            503,
            "No inference tier could answer this request right now (every tier failed or is unavailable). Retry later.",
            "service_unavailable_error",
            NO_TIER_AVAILABLE,
            requested,
        )

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        """An error raised inside a stream, after the 200 went out, reaches the client as one clean
        error event. LiteLLM's own event would carry the exception's text: for an error it did not
        map, a whole traceback (venv paths, the config directory, line numbers). Failover Bench S10."""
        try:
            async for chunk in response:
                yield chunk
        except Exception as failed:  # any error mid-stream: the client gets none of its internals
            # ... and the operator all of them: this replaces LiteLLM's own log line for it.
            _log.warning("a stream failed after its first chunk: %s", type(failed).__name__, exc_info=True)
            yield stream_error_event(_requested(request_data))


def _requested(request_data) -> str:
    """The chain the client called (an alias already rewritten to it by the front door)."""
    model = (request_data or {}).get("model") if isinstance(request_data, dict) else None
    return model[:100] if isinstance(model, str) else ""


def stream_error_event(requested: str = "") -> str:
    """One SSE event in OpenAI's error format. LiteLLM's stream (proxy_server.async_data_generator) sends a
    `data: ` string as the stream's last event, then `[DONE]`."""
    FAILURES.labels(reason=STREAM_INTERRUPTED, status="503", requested_model=requested).inc()
    error = {
        "message": "The answer broke off after it had started: what was sent is incomplete. Retry the request.",
        "type": "service_unavailable_error",
        "param": None,
        "code": "503",
        "provider_specific_fields": {"reason": STREAM_INTERRUPTED},
    }
    return f"data: {json.dumps({'error': error})}\n\n"


handler = HonestErrors()

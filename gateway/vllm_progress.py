"""vLLM by progress, not by total duration: a LiteLLM custom provider that runs inside the proxy.

Shipped in the gateway's ConfigMap beside config.yaml (LiteLLM loads `custom_handler` modules from
the config's directory first). The vLLM tier's deployment uses model `vllm-progress/<model>`.

Why: LiteLLM's `timeout` is one number for the whole answer. Short, it cuts healthy long answers
and re-sends them down the chain; long, a request already sent to a hung vLLM waits all of it.
This handler always asks vLLM for a stream, even when the client wants one plain response, and
watches the stream instead:
- `first_token_timeout`: from sending the request to vLLM's first event (headers included);
- `stall_timeout`: the longest silence allowed between two events once tokens flow;
- `timeout` (the deployment's own): an overall cap, so nothing runs forever.
When a limit fires it raises `litellm.Timeout`, which the router treats like any timeout: it
falls back to the next tier and cools vLLM down. For a non-streaming client it assembles the usual
chat.completion (id, created, model, content, tool calls, finish_reason, usage) from the events.

A streaming client whose vLLM stream stalls after it has received chunks gets an error and no
fallback: splicing two tiers' text into one answer would be worse than a clean failure.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import litellm
from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk, ModelResponse

PROVIDER = "vllm-progress"
LIMIT_KEYS = ("first_token_timeout", "stall_timeout")
# LiteLLM mixes these into the parameters it hands a custom provider; vLLM must not get them.
NOT_FOR_VLLM = {"stream", "stream_options", "max_retries", "timeout", *LIMIT_KEYS}


class Limits:
    # A plain class, not a dataclass: LiteLLM execs this file without registering it in
    # sys.modules, and dataclasses look their module up there.
    def __init__(self, first_token: float, stall: float, total: float) -> None:
        self.first_token = first_token
        self.stall = stall
        self.total = total


def _limits(optional_params: dict[str, Any], litellm_params: dict[str, Any] | None, timeout: Any) -> Limits:
    merged = {**(litellm_params or {}), **optional_params}
    total = timeout if isinstance(timeout, int | float) else 600.0
    return Limits(
        first_token=float(merged.get("first_token_timeout") or 4.0),
        stall=float(merged.get("stall_timeout") or 5.0),
        total=float(total),
    )


def _payload(model: str, messages: list, optional_params: dict[str, Any]) -> dict[str, Any]:
    payload = {key: value for key, value in optional_params.items() if key not in NOT_FOR_VLLM}
    payload.update(model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    return payload


_STATUS_ERRORS = {
    400: litellm.BadRequestError,
    401: litellm.AuthenticationError,
    404: litellm.NotFoundError,
    429: litellm.RateLimitError,
    500: litellm.InternalServerError,
    502: litellm.BadGatewayError,
    503: litellm.ServiceUnavailableError,
}


def _status_error(status: int, body: str, model: str) -> Exception:
    """vLLM's HTTP error as the litellm exception the router knows (a 400 stays a 400: no fallback)."""
    try:
        message = json.loads(body).get("error", {}).get("message") or body
    except (ValueError, AttributeError):
        message = body
    message = f"vLLM answered {status}: {str(message)[:500]}"
    error_class = _STATUS_ERRORS.get(status)
    if error_class is None:
        return litellm.APIError(status_code=status, message=message, llm_provider=PROVIDER, model=model)
    return error_class(message=message, model=model, llm_provider=PROVIDER)


class _Clients:
    """One pooled HTTP client per event loop (the proxy may run several workers/loops)."""

    def __init__(self) -> None:
        self.by_loop: dict[int, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        key = id(asyncio.get_running_loop())
        if key not in self.by_loop:
            # Our own time limits govern; httpx's read timeout stays out of the way.
            self.by_loop[key] = httpx.AsyncClient(timeout=httpx.Timeout(None), trust_env=False)
        return self.by_loop[key]


_clients = _Clients()


async def vllm_events(
    api_base: str, api_key: str | None, payload: dict[str, Any], limits: Limits, model: str
) -> AsyncIterator[dict[str, Any]]:
    """vLLM's raw stream events (parsed JSON), or litellm exceptions when vLLM stops progressing."""
    url = f"{api_base.rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {api_key or 'none'}", "Accept": "text/event-stream"}
    started = time.monotonic()

    def fired(what: str, seconds: float) -> litellm.Timeout:
        return litellm.Timeout(
            message=f"vLLM made no progress: {what} ({seconds:g} s)", model=model, llm_provider=PROVIDER
        )

    request = _clients.get().stream("POST", url, json=payload, headers=headers)
    try:
        response = await asyncio.wait_for(request.__aenter__(), limits.first_token)
    except TimeoutError:
        raise fired("no response headers within first_token_timeout", limits.first_token) from None
    except httpx.ConnectError as error:
        raise litellm.APIConnectionError(message=f"vLLM refused: {error}", llm_provider=PROVIDER, model=model) from None
    try:
        if response.status_code != 200:
            body = await asyncio.wait_for(response.aread(), limits.stall)
            raise _status_error(response.status_code, body.decode(errors="replace"), model)
        lines = response.aiter_lines()
        received_any = False
        while True:
            limit = limits.stall if received_any else limits.first_token - (time.monotonic() - started)
            limit = min(limit, limits.total - (time.monotonic() - started))
            if limit <= 0:
                raise fired("overall timeout", limits.total)
            try:
                line = await asyncio.wait_for(lines.__anext__(), limit)
            except StopAsyncIteration:
                return
            except TimeoutError:
                what = "stalled between tokens" if received_any else "no first token within first_token_timeout"
                raise fired(what, limits.stall if received_any else limits.first_token) from None
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            received_any = True
            yield json.loads(data)
    except httpx.HTTPError as error:
        raise litellm.APIConnectionError(
            message=f"vLLM stream broke: {error}", llm_provider=PROVIDER, model=model
        ) from None
    finally:
        await request.__aexit__(None, None, None)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    call = calls.setdefault(delta.get("index", 0), {"type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


async def assemble_completion(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """A whole chat.completion from vLLM's stream events, as vLLM would have answered it."""
    head: dict[str, Any] = {}
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    usage = None
    async for event in events:
        head = head or event
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                _merge_tool_call(calls, call)
            finish_reason = choice.get("finish_reason") or finish_reason
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not calls else None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created", int(time.time())),
        "model": head.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason or "stop"}],
        "usage": usage,
    }


def _stream_chunk(event: dict[str, Any]) -> GenericStreamingChunk | None:
    choices = event.get("choices") or []
    usage = event.get("usage")
    if not choices:
        if usage is None:
            return None
        return {"text": "", "is_finished": True, "finish_reason": "stop", "usage": usage, "index": 0}
    choice = choices[0]
    delta = choice.get("delta") or {}
    tool_calls = delta.get("tool_calls") or []
    chunk: GenericStreamingChunk = {
        "text": delta.get("content") or "",
        "is_finished": choice.get("finish_reason") is not None,
        "finish_reason": choice.get("finish_reason") or "",
        "usage": usage,
        "index": choice.get("index", 0),
    }
    if tool_calls:
        call = tool_calls[0]
        chunk["tool_use"] = {
            "id": call.get("id"),
            "type": "function",
            "function": call.get("function") or {},
            "index": call.get("index", 0),
        }
    return chunk


class VllmProgressHandler(CustomLLM):
    # LiteLLM calls these with keyword arguments only (main.py:_complete_custom_providers); the
    # ones not needed here (encoding, logging_obj, model_response, ...) are accepted and ignored.
    async def acompletion(
        self, model, messages, api_base, api_key, optional_params, litellm_params=None, timeout=None, **_
    ) -> ModelResponse:
        limits = _limits(optional_params, litellm_params, timeout)
        events = vllm_events(api_base, api_key, _payload(model, messages, optional_params), limits, model)
        return ModelResponse(**await assemble_completion(events))

    async def astreaming(
        self, model, messages, api_base, api_key, optional_params, litellm_params=None, timeout=None, **_
    ) -> AsyncIterator[GenericStreamingChunk]:
        limits = _limits(optional_params, litellm_params, timeout)
        events = vllm_events(api_base, api_key, _payload(model, messages, optional_params), limits, model)
        async for event in events:
            chunk = _stream_chunk(event)
            if chunk is not None:
                yield chunk


handler = VllmProgressHandler()

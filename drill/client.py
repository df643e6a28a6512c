"""A minimal OpenAI-format client for the drill: one request, its tier, its latency."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# The gateway's bearer token in every drill (the runner starts the proxy with it).
DRILL_MASTER_KEY = "sk-drill-master-key"


@dataclass
class Answer:
    status: int
    seconds: float
    body: dict[str, Any]
    headers: dict[str, str]
    chunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tier(self) -> str | None:
        """The tier that served it, from LiteLLM's `x-litellm-model-id` (the deployment's id)."""
        return self.headers.get("x-litellm-model-id")

    @property
    def content(self) -> str:
        if self.chunks:
            return "".join((c["choices"][0]["delta"].get("content") or "") for c in self.chunks if c.get("choices"))
        choices = self.body.get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content") or ""


def chat(
    base_url: str,
    model: str,
    prompt: str = "hello",
    stream: bool = False,
    timeout: float = 120,
    api_key: str = DRILL_MASTER_KEY,
    client: httpx.Client | None = None,
) -> Answer:
    """One chat request. Pass `client` to reuse its connections (load runs); its timeout then applies."""
    if client is None:
        with httpx.Client(timeout=timeout, trust_env=False) as own_client:
            return _send(own_client, base_url, model, prompt, stream, api_key)
    return _send(client, base_url, model, prompt, stream, api_key)


def _send(client: httpx.Client, base_url: str, model: str, prompt: str, stream: bool, api_key: str) -> Answer:
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{base_url}/v1/chat/completions"
    started = time.monotonic()
    if not stream:
        response = client.post(url, json=payload, headers=headers)
        return Answer(response.status_code, time.monotonic() - started, response.json(), dict(response.headers))
    chunks: list[dict[str, Any]] = []
    with client.stream("POST", url, json=payload, headers=headers) as response:
        body: dict[str, Any] = {}
        if response.status_code != 200:
            response.read()
            return Answer(response.status_code, time.monotonic() - started, response.json(), dict(response.headers))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:
                body = event
            else:
                chunks.append(event)
        return Answer(response.status_code, time.monotonic() - started, body, dict(response.headers), chunks)


def embed(
    base_url: str,
    model: str,
    texts: str | list[str] = "hello",
    timeout: float = 120,
    api_key: str = DRILL_MASTER_KEY,
    client: httpx.Client | None = None,
    **fields: object,
) -> Answer:
    """One embeddings request (`POST /v1/embeddings`, with any other `fields`); the vectors are in
    `body["data"]`."""
    payload = {"model": model, "input": texts, **fields}
    headers = {"Authorization": f"Bearer {api_key}"}
    started = time.monotonic()
    if client is None:
        with httpx.Client(timeout=timeout, trust_env=False) as own_client:
            response = own_client.post(f"{base_url}/v1/embeddings", json=payload, headers=headers)
    else:
        response = client.post(f"{base_url}/v1/embeddings", json=payload, headers=headers)
    return Answer(response.status_code, time.monotonic() - started, response.json(), dict(response.headers))

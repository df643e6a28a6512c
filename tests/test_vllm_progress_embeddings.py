"""Embeddings through gateway/vllm_progress.py: the chat chain's rules on `/v1/embeddings`.

The handler is called the way LiteLLM 1.108.7 calls it: `litellm.aembedding` with the deployment's
litellm_params as keyword arguments (what `Router.aembedding` does for a deployment), and the proxy's
own background health check (`proxy/health_check.py _run_model_health_check`) for the probe. vLLM is
a loopback stand-in written here (a busy engine whose /metrics counters move, a frozen one whose
counters stand still, error answers). NFR65: the next tier answers within 5 s of a failure.
"""

from __future__ import annotations

import array
import asyncio
import base64
import copy
import time
from typing import Any

import litellm
import pytest
from aiohttp import web
from litellm.proxy.health_check import _run_model_health_check

from drill.runner import free_port
from tests.test_failover_bench import progress_handler
from tests.test_same_tier_retry import serve_loopback

PROVIDER = "vllm-progress"
MODEL = "BAAI/bge-m3"
FIRST_TOKEN = STALL = 4.0  # the stack's defaults (vllm.firstTokenTimeoutSeconds, stallTimeoutSeconds)
# The handler looks at the clock every CHECK_EVERY_SECONDS (0.25 s); the rest is loop noise.
SLACK = 0.6
NFR65_SECONDS = 5.0


def deployment(api_base: str, **overrides: Any) -> dict[str, Any]:
    """An embeddings vLLM tier's litellm_params, as the config entry must hold them."""
    return {
        "model": f"{PROVIDER}/{MODEL}",
        "api_base": api_base,
        "api_key": "none",
        "timeout": 600,
        "first_token_timeout": FIRST_TOKEN,
        "stall_timeout": STALL,
        "max_queue_seconds": 0,
        "max_connections": 64,
        "max_retries": 0,
        "drop_params": True,
        **overrides,
    }


PROBE_INPUT = "test from litellm"  # the proxy's health check embeds this (proxy/health_check.py)
MODEL_INFO = {"id": "vllm-embed", "mode": "embedding", "health_check_timeout": 4, "health_check_params": {}}


class EmbeddingVllm:
    """vLLM's embeddings API on loopback. `mode`: "up" (answers at once), "busy" (answers after
    `delay` s; its /metrics counters move meanwhile, as when the engine works through a queue),
    "frozen" (never answers; counters stand still, one request running), or an HTTP status to answer.
    Each vector starts with `mark`, so a test tells the tiers' answers apart."""

    def __init__(self, mark: float = 0.25) -> None:
        self.mark = mark
        self.mode: str | int = "up"
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []
        self.health = 0
        self.probe_waits = False  # the probe's one input waits, as behind a burst in vLLM's queue
        self.queue_gauges = True  # False: renamed by an upgrade (the progress counters still read)
        self.prompt_tokens = 100
        self.running = 0
        self.runner: web.AppRunner | None = None
        self.api_base = ""

    async def start(self) -> EmbeddingVllm:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health_check)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.api_base = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        if self.probe_waits and body["input"] == [PROBE_INPUT]:
            await asyncio.sleep(60)  # queued behind a burst that came just after it; ended by cleanup
        if isinstance(self.mode, int):
            error = {"message": f"stand-in answers {self.mode}", "type": "BadRequestError", "code": self.mode}
            return web.json_response({"error": error}, status=self.mode)
        self.running += 1
        try:
            if self.mode == "frozen":
                await asyncio.sleep(60)  # ended by the test's cleanup
            await asyncio.sleep(self.delay if self.mode == "busy" else 0)
        finally:
            self.running -= 1
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[self.mark, 0.5, float(i)] for i in range(len(texts))]
        if body.get("encoding_format") == "base64":  # as vLLM and OpenAI encode it: float32, little-endian
            vectors = [base64.b64encode(array.array("f", vector).tobytes()).decode() for vector in vectors]
        data = [{"index": i, "object": "embedding", "embedding": vector} for i, vector in enumerate(vectors)]
        usage = {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts), "completion_tokens": 0}
        return web.json_response(
            {"id": "embd-1", "object": "list", "created": 1, "model": body["model"], "data": data, "usage": usage}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """vLLM's names (vllm/v1/metrics/loggers.py); the prompt counter moves while a busy engine works."""
        if self.mode == "busy" and self.running:
            self.prompt_tokens += 7
        running = self.running if self.mode != "frozen" else max(self.running, 1)
        labels = f'{{model_name="{MODEL}"}}'
        gauges = [f"vllm:num_requests_running{labels} {running}.0", f"vllm:num_requests_waiting{labels} 0.0"]
        lines = [
            *(gauges if self.queue_gauges else []),
            f"vllm:prompt_tokens_total{labels} {self.prompt_tokens}.0",
            f"vllm:generation_tokens_total{labels} 0.0",
        ]
        return web.Response(text="\n".join(lines) + "\n")

    async def health_check(self, request: web.Request) -> web.Response:
        self.health += 1
        return web.Response(status=self.mode if self.mode == 503 else 200)


def run_with_provider(scenario) -> Any:
    """`scenario(progress, vllm)` on a fresh event loop with a fresh copy of the handler registered as
    LiteLLM's custom provider (as `litellm_settings.custom_provider_map` registers it)."""
    progress = progress_handler()
    registered = [{"provider": PROVIDER, "custom_handler": progress.handler}]

    async def run():
        vllm = await EmbeddingVllm().start()
        try:
            return await scenario(progress, vllm)
        finally:
            await vllm.stop()
            await close_pools(progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(litellm, "custom_provider_map", registered)
        patch.setattr(litellm, "provider_list", [*litellm.provider_list, PROVIDER])
        patch.setattr(litellm, "_custom_providers", [*litellm._custom_providers, PROVIDER])
        return asyncio.run(run())


async def close_pools(progress) -> None:
    for session in progress._sessions.by_loop.values():
        await session.close()
    for client in progress._probe_clients.by_loop.values():
        await client.aclose()


async def embed(api_base: str, texts: Any = ("hello", "world"), **params: Any) -> tuple[Any, float]:
    """One `litellm.aembedding` as the router makes it for the deployment; (answer or error, seconds)."""
    started = time.monotonic()
    call = {**deployment(api_base), **params}
    try:
        answer = await litellm.aembedding(input=list(texts) if not isinstance(texts, str) else texts, **call)
    except Exception as failed:
        return failed, time.monotonic() - started
    return answer, time.monotonic() - started


def test_an_idle_engine_answers_with_vllms_vectors():
    async def scenario(progress, vllm):
        return await embed(vllm.api_base), vllm.received

    (answer, took), received = run_with_provider(scenario)
    assert isinstance(answer, litellm.EmbeddingResponse), answer
    assert [item["embedding"] for item in answer.model_dump()["data"]] == [[0.25, 0.5, 0.0], [0.25, 0.5, 1.0]]
    assert answer.usage.prompt_tokens == 6
    # vLLM gets the served model and the input, none of the deployment's limits.
    assert received == [{"model": MODEL, "input": ["hello", "world"]}]
    print(f"\n[embeddings] idle engine answered in {took:.3f} s")


def test_a_busy_engine_is_waited_for_past_the_first_token_limit():
    async def scenario(progress, vllm):
        vllm.mode, vllm.delay = "busy", FIRST_TOKEN + 2.5
        return await embed(vllm.api_base)

    answer, took = run_with_provider(scenario)
    assert isinstance(answer, litellm.EmbeddingResponse), answer
    print(f"\n[embeddings] busy engine (counters moving), a {FIRST_TOKEN + 2.5:g} s answer: vLLM's after {took:.2f} s")
    assert took >= FIRST_TOKEN + 2.5


def test_a_frozen_engine_is_given_up_on_within_the_first_token_limit():
    async def scenario(progress, vllm):
        vllm.mode = "frozen"
        return await embed(vllm.api_base)

    failed, took = run_with_provider(scenario)
    # A Timeout: the router falls back and cools vLLM down for everyone.
    assert isinstance(failed, litellm.Timeout), failed
    assert "no first token and no engine progress" in str(failed)
    print(f"\n[embeddings] frozen engine: litellm.Timeout after {took:.2f} s (first_token_timeout {FIRST_TOKEN:g})")
    assert FIRST_TOKEN <= took <= FIRST_TOKEN + SLACK < NFR65_SECONDS


def test_a_refused_connection_fails_over_at_once():
    async def scenario(progress, vllm):
        return await embed(f"http://127.0.0.1:{free_port()}/v1")

    failed, took = run_with_provider(scenario)
    # Not a Timeout: a refusal is an outage the probe and the next request see at once, no cooldown.
    assert isinstance(failed, litellm.APIConnectionError) and not isinstance(failed, litellm.Timeout), failed
    print(f"\n[embeddings] refused: APIConnectionError after {took:.3f} s")
    assert took < 0.5


def test_a_400_stays_a_400_so_the_chain_stops():
    async def scenario(progress, vllm):
        vllm.mode = 400
        return await embed(vllm.api_base), len(vllm.received)

    (failed, _), requests = run_with_provider(scenario)
    assert isinstance(failed, litellm.BadRequestError), failed
    assert "vLLM answered 400: stand-in answers 400" in str(failed)
    assert requests == 1  # not retried on vLLM either


def test_a_503_is_tried_once_more_on_vllm_then_handed_on():
    async def scenario(progress, vllm):
        vllm.mode = 503
        return await embed(vllm.api_base), len(vllm.received)

    (failed, took), requests = run_with_provider(scenario)
    assert isinstance(failed, litellm.ServiceUnavailableError), failed
    assert requests == 2 and took < 1.0


def test_the_whole_answer_cap_holds_without_a_cooldown():
    async def scenario(progress, vllm):
        vllm.mode, vllm.delay = "busy", 30
        return await embed(vllm.api_base, timeout=5)

    failed, took = run_with_provider(scenario)
    assert isinstance(failed, litellm.APIConnectionError) and not isinstance(failed, litellm.Timeout), failed
    assert "whole-answer cap of 5 s" in str(failed)
    assert 5 <= took < 5 + SLACK


def test_the_queue_budget_spills_a_busy_engines_request_without_a_cooldown():
    async def scenario(progress, vllm):
        vllm.mode, vllm.delay = "busy", 30
        return await embed(vllm.api_base, max_queue_seconds=2)

    failed, took = run_with_provider(scenario)
    assert isinstance(failed, litellm.APIConnectionError) and not isinstance(failed, litellm.Timeout), failed
    assert "queue budget" in str(failed)
    assert 2 <= took < 2 + SLACK


def test_the_clients_encoding_format_and_dimensions_reach_vllm():
    # OpenAI's SDK sends encoding_format=base64 unless told otherwise. Without the deployment's
    # drop_params LiteLLM refuses it for a custom provider (a 400 that would stop the chain) ...
    async def refused(progress, vllm):
        return await embed(vllm.api_base, encoding_format="base64", drop_params=None), vllm.received

    (failed, _), received = run_with_provider(refused)
    assert isinstance(failed, litellm.UnsupportedParamsError) and failed.status_code == 400, failed
    assert received == []

    # ... with it, LiteLLM drops them, and the handler reads them back from the proxy's request.
    async def restored(progress, vllm):
        body = {"model": "embed", "input": "hi", "encoding_format": "base64", "dimensions": 8, "user": "u"}
        fields = {"encoding_format": "base64", "dimensions": 8, "proxy_server_request": {"body": body}}
        return await embed(vllm.api_base, "hi", **fields), vllm.received

    (answer, _), received = run_with_provider(restored)
    assert isinstance(answer, litellm.EmbeddingResponse), answer
    assert received == [{"model": MODEL, "input": "hi", "encoding_format": "base64", "dimensions": 8}]


# --- the background health check ------------------------------------------------------------------


async def health_check(api_base: str) -> dict[str, Any]:
    """What the proxy's background health check makes of the deployment (its own code, unchanged)."""
    info = {**copy.deepcopy(MODEL_INFO), "health_check_params": {"engine_probe": True}}
    return await _run_model_health_check({"litellm_params": deployment(api_base), "model_info": info})


def test_the_probe_embeds_one_input_on_an_idle_engine():
    async def scenario(progress, vllm):
        return await health_check(vllm.api_base), vllm.received, vllm.health

    result, received, health = run_with_provider(scenario)
    assert "error" not in result, result
    assert health == 1
    # The health check's own input, one of it: an embedding that cannot queue.
    assert received == [{"model": MODEL, "input": [PROBE_INPUT]}]


@pytest.mark.parametrize("queue_gauges", [True, False], ids=["queue-read", "queue-gauges-renamed"])
def test_the_probe_judges_a_busy_engine_by_its_progress_without_queueing_behind_it(queue_gauges):
    # Without vLLM's queue gauges (the counters still read), this process's open request says busy.
    async def scenario(progress, vllm):
        vllm.mode, vllm.delay, vllm.queue_gauges = "busy", 10, queue_gauges
        working = asyncio.ensure_future(embed(vllm.api_base))
        await asyncio.sleep(0.2)
        result = await health_check(vllm.api_base)
        working.cancel()
        return result, len(vllm.received)

    result, requests = run_with_provider(scenario)
    assert "error" not in result, result
    assert requests == 1  # only the client's: the probe sent no embedding


def probe_overtaken(by: str | None) -> tuple[dict[str, Any], float, tuple[int, int]]:
    """The probe finds the engine idle and sends its one input; it waits in the engine. `by`: the
    mode of the engine when clients' requests arrive just after it ("busy": it works through them,
    its counters move; "frozen": they hang too), or None (no one comes). The health check's result,
    seconds from the input's arrival, and the watch's open and quiet requests after it."""

    async def scenario(progress, vllm):
        vllm.probe_waits = True
        probing = asyncio.ensure_future(health_check(vllm.api_base))
        while not vllm.received:
            await asyncio.sleep(0.01)
        arrived = time.monotonic()
        working = []
        if by is not None:
            vllm.mode, vllm.delay = by, 10
            working = [asyncio.ensure_future(embed(vllm.api_base)) for _ in range(3)]
        result = await probing
        took = time.monotonic() - arrived
        for request in working:
            request.cancel()
        await asyncio.sleep(0.1)  # the cancelled probe request's own cleanup
        watch = progress._watches.get(vllm.api_base)
        return result, took, (watch.open_requests, watch.quiet_requests)

    return run_with_provider(scenario)


def test_a_burst_right_after_an_idle_probe_is_busy_not_hung():
    # Before: the input waited out the health check's 4 s, and vLLM was cooled down at peak load.
    result, took, left = probe_overtaken("busy")
    assert "error" not in result, result
    # Judged by vLLM's counters, sampled every 0.5 s from the start: 0.74 s measured (1.8 s when the
    # sampling began after a quiet second, too late for a probe timeout of 1 s).
    assert took < 1.5, took
    assert left == (0, 0)


def test_a_burst_into_a_frozen_engine_still_fails_the_probe():
    # Requests that arrive are not progress; tokens (counters) moving are.
    result, took, left = probe_overtaken("frozen")
    assert isinstance(result.get("exception"), litellm.Timeout), result
    assert took >= MODEL_INFO["health_check_timeout"] - SLACK
    assert left == (0, 0)


def test_an_idle_engine_that_does_not_answer_the_probe_still_fails_it():
    result, took, left = probe_overtaken(None)
    assert isinstance(result.get("exception"), litellm.Timeout), result
    assert took >= MODEL_INFO["health_check_timeout"] - SLACK
    assert left == (0, 0)


def test_a_request_held_open_by_its_client_does_not_make_an_idle_engine_busy():
    # A stream vLLM finished long ago stays open in the gateway while its client stops reading.
    # vLLM's queue is empty: the probe asks the engine for one input, and it answers.
    async def scenario(progress, vllm):
        progress._watches.get(vllm.api_base).open_requests += 1
        return await health_check(vllm.api_base), vllm.received

    result, received = run_with_provider(scenario)
    assert "error" not in result, result  # before: Timeout ("requests are open and no token moved")
    assert received == [{"model": MODEL, "input": [PROBE_INPUT]}]


def test_a_sample_overtaken_by_a_later_one_is_not_the_baseline():
    # Two samples overlap; the first one's answer (older counters) comes last. As the baseline, it
    # would make the next sample of a hung engine "move".
    answers = iter([(0.5, 100), (0, 107), (0, 107)])  # (delay, counters) per /metrics request

    async def metrics(request: web.Request) -> web.Response:
        delay, counters = next(answers)
        await asyncio.sleep(delay)
        return web.Response(text=f'vllm:generation_tokens_total{{model_name="m"}} {counters}.0\n')

    async def scenario() -> float:
        runner, api_base = await serve_loopback("GET", "/metrics", metrics)
        progress = progress_handler()
        try:
            watch = progress.EngineWatch(api_base)
            first = asyncio.ensure_future(watch.sample())
            await asyncio.sleep(0.1)
            await watch.sample()  # asked later, answered first: 107
            await first  # 100, too late
            await watch.sample()  # 107 again: nothing moved
            return watch.counters_moved_at
        finally:
            await close_pools(progress)
            await runner.cleanup()

    assert asyncio.run(scenario()) == 0.0


def test_the_probe_fails_a_frozen_engine():
    async def scenario(progress, vllm):
        vllm.mode = "frozen"
        started = time.monotonic()
        result = await health_check(vllm.api_base)
        return result, time.monotonic() - started, len(vllm.received)

    result, took, requests = run_with_provider(scenario)
    assert isinstance(result.get("exception"), litellm.Timeout), result
    assert requests == 0 and took < MODEL_INFO["health_check_timeout"]


def test_the_probe_passes_on_a_failing_health_endpoint():
    async def scenario(progress, vllm):
        vllm.mode = 503
        return await health_check(vllm.api_base)

    result = run_with_provider(scenario)
    assert isinstance(result.get("exception"), litellm.ServiceUnavailableError), result


def test_a_synchronous_call_says_what_to_call_instead():
    with pytest.raises(NotImplementedError, match="aembedding"):
        progress_handler().handler.embedding(model=MODEL, input=["x"])

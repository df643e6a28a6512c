"""Failover Bench (issue 21): the scorer's rules, the fault provider's faults, the bench on the real
proxy, and garbage mid-stream from every tier.

The bench runs the catalogue's `full` profile (drill/failover_bench.py): its long waits (120 s of
silence, 20 s to a first token, 30 s of stall) bound how long the provider *would* wait; this gateway
gives up on a quiet vLLM after its own 4-5 s limits, so they cost ~5 s each here. The one long
scenario is S15, a fixed sequence of 20 requests 4 s apart (80 s): the whole bench takes about
three minutes. The catalogue's `fast` sequence (10 requests 1.2 s apart, a 6 s outage) ends before
the gateway's 10 s cooldown can lapse, so it would score our recovery on timings the gateway never
meets in deployment: not a faithful subset.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from core.names import PROGRESS_HANDLER_FILE
from core.stack_files import stack_settings
from drill.client import DRILL_MASTER_KEY
from drill.failover_bench import (
    SCENARIOS,
    BenchGateway,
    CallResult,
    Check,
    Metrics,
    evaluate,
    metrics_from,
    run_scenarios,
    summary,
    verdict,
)
from drill.fault_provider import CANONICAL_ANSWER, PROFILES, FaultProvider
from tests.test_fallback import _gateway_module

SETTINGS = stack_settings("dev")
# Never in anything a client reads: addresses, ports, key fragments, Python's traceback and paths.
INTERNAL_DETAIL = re.compile(
    r"127\.0\.0\.1|localhost|:\d{2,5}\b|svc\.cluster|0x[0-9a-f]{6,}|sk-|Traceback|File \"|\.py\b|site-packages|"
    r"/tmp/|github\.com/BerriAI"
)
SCENARIO = {scenario.id: scenario for scenario in SCENARIOS}


# --- the scorer (METHODOLOGY.md "Scoring a cell"), without a gateway --------------------------------


def metrics(**facts) -> Metrics:
    base = {"outcome": "success", "complete": True, "elapsed_s": 1.0, "fallback_model": "gpt-4o-mini"}
    return Metrics(**{**base, **facts})


def score(scenario_id: str, m: Metrics) -> str:
    scenario = SCENARIO[scenario_id]
    return verdict(scenario, [evaluate(check, m) for check in scenario.checks], m)[0]


def test_the_catalogue_has_its_sixteen_scenarios_in_order():
    assert [scenario.id for scenario in SCENARIOS] == [f"S{n:02d}" for n in range(1, 17)]


def test_rescued_with_clean_conduct_passes_and_an_advisory_slip_is_partial():
    assert score("S03", metrics(primary_times=[0.0, 0.1])) == "pass"
    assert score("S03", metrics(primary_times=[0.0], attempts_fallback=1)) == "partial"  # failed over instead
    assert score("S01", metrics(primary_times=[0.0, 2.0])) == "pass"
    assert score("S01", metrics(primary_times=[0.0, 0.6])) == "partial"  # Retry-After not honoured
    assert score("S01", metrics(primary_times=[0.0, 0.2, 0.4])) == "fail"  # hammering is a required check


def test_a_clean_error_is_safe_and_a_truncated_success_or_a_hang_fails():
    assert score("S08", metrics(outcome="error", complete=False, error="in-band error event")) == "safe"
    assert score("S08", metrics(complete=False)) == "fail"
    assert score("S05", metrics(outcome="hang", complete=False)) == "fail"
    assert score("S09", metrics(outcome="error", complete=False, elapsed_s=46.0)) == "fail"  # past its bound
    assert score("S10", metrics(alive_after=False)) == "fail"  # the gateway did not survive it


def test_a_rejection_is_passed_on_and_routing_around_it_is_partial():
    assert score("S13", metrics(outcome="error", complete=False, primary_times=[0.0])) == "pass"
    assert score("S13", metrics(primary_times=[0.0], attempts_fallback=1)) == "partial"
    assert score("S13", metrics(outcome="error", complete=False, primary_times=[0.0, 0.1])) == "fail"


def test_a_context_retry_must_shrink():
    assert score("S12", metrics(outcome="error", complete=False, primary_times=[0.0])) == "safe"
    compacted = metrics(primary_times=[0.0, 1.0], primary_prompt_tokens=[100, 60], attempts_fallback=0)
    assert score("S12", compacted) == "pass"
    resent = metrics(outcome="error", complete=False, primary_times=[0.0, 1.0], primary_prompt_tokens=[100, 100])
    assert score("S12", resent) == "fail"


def test_accounting_names_the_fallback_model():
    dated = metrics(primary_times=[0.0], attempts_fallback=1, reported_model="gpt-4o-mini-2024-07-18", usage={"x": 1})
    assert score("S16", dated) == "pass"
    assert score("S16", metrics(primary_times=[0.0], attempts_fallback=1, reported_model="chat-openai")) == "fail"
    assert score("S16", metrics(primary_times=[0.0], attempts_fallback=1, reported_model="gpt-4o-mini")) == "partial"


def test_an_informational_check_never_moves_the_verdict():
    check = Check("fallback_attempted", "fallback_used", advisory=True, informational=True)
    assert evaluate(check, metrics(attempts_fallback=0)).status == "info"


def test_probes_are_not_attempts():
    provider = FaultProvider("Qwen/Qwen2.5-7B", "gpt-4o-mini")
    provider.configure("503_persistent")
    provider.log = [
        provider._record("Qwen2.5-7B", True, [{"role": "user", "content": "What's 1 + 1?"}]),
        provider._record("Qwen2.5-7B", False, [{"role": "user", "content": "x"}]),
    ]
    m = metrics_from(CallResult(True, 1.0, CANONICAL_ANSWER), provider.log, "Qwen/Qwen2.5-7B", "gpt-4o-mini")
    assert (m.attempts_primary, m.probes) == (1, 1)


# --- the fault provider, spoken to directly ---------------------------------------------------------


@pytest.fixture(scope="module")
def provider():
    running = FaultProvider("Qwen/Qwen2.5-7B", "gpt-4o-mini", PROFILES["fast"]).start()
    yield running
    running.stop()


def ask(provider: FaultProvider, model: str, stream: bool = True, messages=None) -> httpx.Response:
    body = {"model": model, "messages": messages or [{"role": "user", "content": "hi"}], "stream": stream}
    with httpx.Client(timeout=10, trust_env=False) as client:
        return client.post(f"{provider.url}/v1/chat/completions", json=body)


def stream_text(response: httpx.Response) -> tuple[str, int]:
    """The content a careful client assembles, and how many events it could not parse."""
    parts, bad = [], 0
    for line in response.text.splitlines():
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            bad += 1
            continue
        parts += [(choice.get("delta") or {}).get("content") or "" for choice in event.get("choices") or []]
    return "".join(parts), bad


def test_one_off_faults_hit_the_first_attempt_only(provider):
    provider.configure("429_retry_after_once")
    first, second = ask(provider, "Qwen/Qwen2.5-7B"), ask(provider, "Qwen/Qwen2.5-7B")
    assert (first.status_code, first.headers["retry-after"], second.status_code) == (429, "2", 200)
    provider.configure("reset_once")
    with pytest.raises(httpx.TransportError):
        ask(provider, "Qwen/Qwen2.5-7B")
    assert ask(provider, "Qwen/Qwen2.5-7B").status_code == 200
    assert [entry.attempt for entry in provider.log] == [1, 2]


def test_stream_faults_are_the_catalogues(provider):
    provider.configure("malformed_chunk")
    assert stream_text(ask(provider, "qwen2.5-7b")) == (CANONICAL_ANSWER, 1)  # keyed on the name after the slash
    provider.configure("stream_cut")
    with pytest.raises(httpx.RemoteProtocolError):  # no terminating chunk
        ask(provider, "Qwen/Qwen2.5-7B")
    provider.configure("no_done")
    response = ask(provider, "Qwen/Qwen2.5-7B")
    assert "[DONE]" not in response.text and stream_text(response)[0] == CANONICAL_ANSWER


def test_the_noprefill_fallback_refuses_a_prefill_and_the_other_continues_it(provider):
    provider.configure("ok", fallback_fault="ok_noprefill")
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A gateway earns trust"}]
    assert ask(provider, "gpt-4o-mini", messages=prefill).status_code == 400
    continued = ask(provider, "Qwen/Qwen2.5-7B", stream=False, messages=prefill).json()
    assert "A gateway earns trust" + continued["choices"][0]["message"]["content"] == CANONICAL_ANSWER


# --- the bench on the real proxy --------------------------------------------------------------------


def gateway_metric(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics/", headers={"Authorization": f"Bearer {DRILL_MASTER_KEY}"}).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{", 1)[0].split(" ", 1)[0] == name
    ]
    return max(values) if values else None  # the worst of its series (one per vLLM engine)


BLIND_LOG_LINE = "cannot be read"


@pytest.fixture(scope="module")
def bench():
    """The dev stack's gateway with vLLM and the cloud at the fault provider, Ollama refused."""
    with BenchGateway(SETTINGS, timing=PROFILES["full"]) as gateway:
        yield gateway


@pytest.mark.drill
def test_failover_bench_full_profile_scores_12_pass_0_partial_0_fail(bench):
    results = run_scenarios(bench, "full", report=lambda line: print(f"\n[bench] {line}", end=""))
    counts = summary(results)
    verdicts = {result.scenario.id: result.verdict for result in results}
    print(f"\n[bench] {counts}")
    assert counts["pass"] >= 12 and counts["partial"] == 0 and counts["fail"] == 0, verdicts
    # Where our promises require "safe": no splicing of two models' text, a 400 stays in the cluster.
    assert {sid for sid, name in verdicts.items() if name != "pass"} <= {"S08", "S09", "S12", "S14"}, verdicts
    for result in results:  # every error the client saw is clean, mid-stream ones included
        assert not INTERNAL_DETAIL.search(str(result.metrics.error or "")), (result.scenario.id, result.metrics.error)


@pytest.mark.drill
def test_without_vllms_metrics_the_operator_is_told_once(bench):
    # The fault provider has no /metrics, as a vLLM behind a NetworkPolicy. A silent vLLM makes the
    # watch sample them, twice a second, for several requests: still one log line.
    for _ in range(2):
        run_scenarios(bench, "full", only={"S06"})
    log = "\n".join(gateway.log_path.read_text(errors="replace") for gateway in bench.gateways)
    assert gateway_metric(bench.url, "llm_gateway_vllm_progress_blind") == 1.0
    assert log.count(BLIND_LOG_LINE) == 1, log[-3000:]


# --- garbage mid-stream from every tier, through the deployed config ---------------------------------


def raw_stream(url: str) -> tuple[int, str]:
    body = {"model": SETTINGS.gateway.model_name, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    with httpx.Client(timeout=60, trust_env=False) as client:
        response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    return response.status_code, response.text


def events(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line != "data: [DONE]"]


@pytest.mark.drill
@pytest.mark.parametrize("tier", ["vllm", "ollama", "openai"])
def test_garbage_mid_stream_from_any_tier_is_skipped_or_a_clean_error(fresh, tier):
    chain = ["vllm", "ollama", "openai"]
    for before in chain[: chain.index(tier)]:
        fresh.standins[before].set_mode("down")
    fresh.standins[tier].set_mode("garbage", stall_after=3)
    status, text = raw_stream(fresh.url)
    sent = events(text)  # every event the client gets is JSON
    errors = [event["error"] for event in sent if "error" in event]
    content = "".join((c.get("delta") or {}).get("content") or "" for e in sent for c in e.get("choices") or [])
    print(f"\n[garbage] {tier}: {'error event' if errors else 'whole answer'}: {errors or content}")
    assert status == 200
    assert not INTERNAL_DETAIL.search(text), text
    if errors:
        (error,) = errors
        assert set(error) >= {"message", "type", "param", "code"}  # OpenAI's error format
        assert error["provider_specific_fields"] == {"reason": "stream_interrupted"}
    else:
        assert content == " ".join(fresh.standins[tier].words())
    if tier == "vllm":  # our own parser skips the bad event: the answer arrives whole
        assert not errors


@pytest.mark.drill
def test_with_vllms_metrics_readable_the_gateway_is_not_blind(fresh):
    time.sleep(SETTINGS.gateway.health_check_interval_seconds + 1)  # a probe samples /metrics
    assert gateway_metric(fresh.url, "llm_gateway_vllm_progress_blind") == 0.0
    assert BLIND_LOG_LINE not in fresh.log_path.read_text(errors="replace")


# --- the progress handler's own rules (gateway/vllm_progress.py), loaded as LiteLLM loads it ----------


def progress_handler():
    return _gateway_module(PROGRESS_HANDLER_FILE)


def test_one_retry_on_vllm_only_for_errors_that_ask_for_one_soon():
    progress = progress_handler()
    limits = progress.Limits(first_token=4, stall=5, max_queue=0, total=600, provider="vllm-progress")
    delay = progress.same_tier_retry_delay
    assert delay(500, None, limits) == 0.0 and delay(503, None, limits) == 0.0  # at once
    assert delay(429, "2", limits) == 2.0 and delay(503, "1", limits) == 1.0  # what the server asked
    assert delay(429, None, limits) is None  # no hint when: the next tier at once (S02)
    assert delay(429, "30", limits) is None  # longer than a quiet vLLM is waited for: the next tier
    assert delay(503, "Wed, 02 Dec 2026 16:00:00 GMT", limits) is None
    assert delay(400, None, limits) is None and delay(404, "1", limits) is None  # the same again fails the same


def test_an_event_that_is_not_json_is_skipped_not_raised():
    parsed = progress_handler()._parsed_event
    assert parsed('{"choices": []}') == {"choices": []}
    assert parsed('{"id": "x", "choices": [{"delta": {"content": ') is None
    assert parsed("42") is None and parsed("[1]") is None

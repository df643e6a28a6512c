"""Failover Bench's sixteen scenarios against this gateway, scored by the bench's public rules.

    .venv/bin/python -m drill.failover_bench [--profile full|fast] [--only S01,S10]

The catalogue is failoverbench/failoverbench `scenarios/catalogue.yaml` at commit 77a253095c3c
(methodology v0.1, the version behind the 2026-09-12 scorecard); the scoring rules are its
METHODOLOGY.md and the check kinds its catalogue header lists. Stand-in and scorer are our own code
(`drill/fault_provider.py` and below), written from those definitions.

The system under test is the one the issue scored: the dev stack's rendered config on the real
LiteLLM proxy (drill/runner.py), the vLLM tier at the fault provider, Ollama refused (nothing listens
on its port), the cloud tier at the provider's healthy fallback model. The bench's client calls
the gateway's model name, streaming, and parses the stream as a careful client does: a malformed
event is skipped, an in-band error event is an error, never a truncated success.

One gateway serves all scenarios, where the bench gives each scenario a model (and so a LiteLLM
deployment) of its own. Before each scenario the provider is healed and the gateway is waited for
until it routes to vLLM again, so no scenario inherits the previous one's cooldown.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.chain import failover_chain
from core.settings import Settings
from core.stack_files import stack_settings
from drill.client import DRILL_MASTER_KEY
from drill.fault_provider import CANONICAL_ANSWER, PROFILES, Attempt, FaultProvider, Timing
from drill.runner import Drill, free_port
from drill.standins import LOOPBACK

CATALOGUE = "failoverbench/failoverbench scenarios/catalogue.yaml @ 77a253095c3c (methodology v0.1)"
PROMPT = "Explain in exactly sixty words why a gateway earns trust only when the provider behind it misbehaves."
ALIVE_PROBE_SECONDS = 10.0
VERDICTS = ("pass", "partial", "safe", "fail")


@dataclass(frozen=True)
class Check:
    id: str
    kind: str
    value: float | None = None
    window_s: float | None = None
    advisory: bool = False  # a failure makes "partial", not "fail"
    informational: bool = False  # never moves the verdict


@dataclass(frozen=True)
class Sequence:
    count: int
    interval_s: float
    per_request_max_wall_s: float


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    fault: str
    max_wall_s: float
    checks: tuple[Check, ...]
    fallback_fault: str = "ok"
    ideal: str = "success"  # S13: a clean error
    sequence: Sequence | None = None
    fast_sequence: Sequence | None = None


NO_HANG = Check("no_hang", "no_hang")
NO_TRUNCATED = Check("no_truncated_success", "no_truncated_success")
BOUNDED_6 = Check("bounded_attempts", "attempts_primary_max", 6)
SCENARIOS = (
    Scenario("S01", "429 with Retry-After", "429_retry_after_once", 20, (
        Check("retried", "attempts_primary_min", 2, advisory=True),
        Check("retry_after_honoured", "first_gap_min_s", 1.8, advisory=True),
        Check("no_hammer", "max_attempts_within", 2, window_s=1.5),
    )),
    Scenario("S02", "429 without Retry-After, persistent", "429_persistent", 40, (
        Check("no_hammer", "max_attempts_within", 4, window_s=3), BOUNDED_6, NO_HANG,
    )),
    Scenario("S03", "500 once, then healthy", "500_once", 20, (
        NO_HANG, Check("same_provider_retry", "attempts_primary_min", 2, advisory=True),
    )),
    Scenario("S04", "503 persistent", "503_persistent", 40, (BOUNDED_6, NO_HANG)),
    Scenario("S05", "TCP reset before headers", "reset_once", 20, (NO_HANG,)),
    Scenario("S06", "No response at all", "no_response", 130, (
        Check("within_budget", "wall_max_s", 100), NO_HANG,
        Check("silent_route_not_retried", "attempts_primary_max", 1, advisory=True),
    )),
    Scenario("S07", "Slow first token", "slow_ttft", 60, (
        NO_HANG, Check("ttft_limit", "wall_max_s", 15, advisory=True),
    )),
    Scenario("S08", "Stream cut mid-answer", "stream_cut", 40, (NO_TRUNCATED, NO_HANG)),
    Scenario("S09", "Stream stalls", "stream_stall", 70, (
        Check("bounded", "wall_max_s", 45), NO_TRUNCATED, Check("alive_after", "alive_after"), NO_HANG,
    )),
    Scenario("S10", "Malformed chunk in the stream", "malformed_chunk", 30, (
        Check("alive_after", "alive_after"), Check("no_garbage", "no_truncated_success"), NO_HANG,
        Check("recovered_in_place", "complete", advisory=True),
    )),
    Scenario("S11", "Stream ends without [DONE]", "no_done", 30, (
        Check("prompt_finalise", "wall_max_s", 8), Check("usage_reported", "usage_present", advisory=True),
    )),
    Scenario("S12", "Context length exceeded", "context_length", 20, (
        Check("no_blind_retry", "context_retry_discipline"), Check("bounded_attempts", "attempts_primary_max", 2),
        NO_HANG,
    )),
    Scenario("S13", "Content-filter rejection", "content_filter", 20, (
        Check("no_same_model_retry", "attempts_primary_eq", 1), NO_HANG,
        Check("fallback_attempted", "fallback_used", advisory=True, informational=True),
    ), ideal="error"),
    Scenario("S14", "Fallback target rejects prefill", "stream_cut", 40, (
        Check("no_prefill_masking", "no_prefill_masking"), NO_TRUNCATED,
    ), fallback_fault="ok_noprefill"),
    Scenario("S15", "Primary flaps: down, then healthy", "flap", 200, (
        Check("no_hang", "seq_no_hang"), Check("served_during_outage", "seq_served_during_outage"),
        Check("recovered", "seq_recovered_within_s", 30),
        Check("probe_discipline", "seq_probe_discipline", advisory=True, informational=True),
    ), sequence=Sequence(20, 4, 30), fast_sequence=Sequence(10, 1.2, 10)),
    Scenario("S16", "Fail-over accounting", "503_persistent", 40, (
        Check("reports_fallback_model", "reported_model_is_fallback"),
        Check("usage_present", "usage_present", advisory=True), BOUNDED_6,
    )),
)  # fmt: skip


# ---- the caller's view ----------------------------------------------------------------------------


@dataclass
class CallResult:
    ok: bool
    elapsed_s: float
    content: str = ""
    error: str | None = None
    status: int | None = None
    reported_model: str | None = None
    usage: dict[str, Any] | None = None
    hang: bool = False
    bad_events: int = 0

    @property
    def outcome(self) -> str:
        return "hang" if self.hang else "success" if self.ok else "error"


def _error_text(body: bytes | str) -> str:
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("message") or error)
    except (ValueError, AttributeError):
        return str(body)[:300]


async def call_gateway(base_url: str, model: str, stream: bool, deadline_s: float) -> CallResult:
    """One chat call as the bench's careful client makes it, ended by force after `deadline_s` + 1."""
    started = time.monotonic()
    try:
        return await asyncio.wait_for(_call(base_url, model, stream, deadline_s, started), deadline_s + 1)
    except TimeoutError:
        return CallResult(False, time.monotonic() - started, error=f"hang: nothing within {deadline_s:g} s", hang=True)


async def _call(base_url: str, model: str, stream: bool, deadline_s: float, started: float) -> CallResult:
    def elapsed() -> float:
        return round(time.monotonic() - started, 3)

    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if stream:
        payload["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    timeout = httpx.Timeout(10.0, read=deadline_s)
    parts: list[str] = []
    result = CallResult(False, 0.0)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
            client.stream("POST", f"{base_url}/v1/chat/completions", json=payload, headers=headers) as response,
        ):
            if response.status_code != 200:
                text = _error_text(await response.aread())
                return CallResult(
                    False, elapsed(), error=f"HTTP {response.status_code}: {text}", status=response.status_code
                )
            if not stream:
                body = json.loads(await response.aread())
                message = (body.get("choices") or [{}])[0].get("message") or {}
                content = message.get("content") or ""
                return CallResult(True, elapsed(), content, reported_model=body.get("model"), usage=body.get("usage"))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    result.bad_events += 1  # a careful client skips what it cannot parse
                    continue
                if isinstance(event, dict) and event.get("error"):
                    # In-band: the gateway had sent 200 already. An error, never a truncated success.
                    result.error = f"in-band error event: {_error_text(json.dumps(event))}"
                    result.content = "".join(parts)
                    result.elapsed_s = elapsed()
                    return result
                result.reported_model = event.get("model") or result.reported_model
                result.usage = event.get("usage") or result.usage
                for choice in event.get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
    except httpx.HTTPError as broke:
        return CallResult(False, elapsed(), "".join(parts), error=f"{type(broke).__name__}: {broke}")
    result.ok, result.content, result.elapsed_s = True, "".join(parts), elapsed()
    return result


# ---- scoring (METHODOLOGY.md "Scoring a cell"; the check kinds of the catalogue's header) ----------


def normalised(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip())


def is_complete(content: str | None) -> bool:
    return normalised(content) == normalised(CANONICAL_ANSWER)


def model_key(model: str | None) -> str:
    return (model or "").rsplit("/", 1)[-1].strip().lower()


@dataclass
class Metrics:
    """Both views of one scenario: the caller's result and the provider's log."""

    outcome: str
    complete: bool
    elapsed_s: float
    error: str | None = None
    reported_model: str | None = None
    usage: dict[str, Any] | None = None
    fallback_model: str = ""
    primary_times: list[float] = field(default_factory=list)
    primary_prompt_tokens: list[int] = field(default_factory=list)
    attempts_fallback: int = 0
    prefill_rejections: int = 0
    alive_after: bool = True
    probes: int = 0
    content_words: int = 0
    sequence: dict[str, Any] = field(default_factory=dict)

    @property
    def attempts_primary(self) -> int:
        return len(self.primary_times)

    @property
    def first_gap_s(self) -> float | None:
        times = self.primary_times
        return round(times[1] - times[0], 3) if len(times) >= 2 else None


def metrics_from(result: CallResult, log: list[Attempt], primary: str, fallback: str) -> Metrics:
    client = [entry for entry in log if not entry.probe]
    on_primary = [entry for entry in client if model_key(entry.model) == model_key(primary)]
    return Metrics(
        outcome=result.outcome,
        complete=is_complete(result.content),
        elapsed_s=result.elapsed_s,
        error=result.error,
        reported_model=result.reported_model,
        usage=result.usage,
        fallback_model=fallback,
        primary_times=[entry.t for entry in on_primary],
        primary_prompt_tokens=[entry.prompt_tokens for entry in on_primary],
        attempts_fallback=sum(1 for entry in client if model_key(entry.model) == model_key(fallback)),
        prefill_rejections=sum(1 for entry in log if entry.action.startswith("400 prefill")),
        probes=len(log) - len(client),
        content_words=len(normalised(result.content).split()),
    )


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: str  # pass, fail, info (an informational check that failed)
    detail: str
    advisory: bool


def evaluate(check: Check, m: Metrics) -> CheckResult:
    ok, detail = _judge(check, m)
    status = "pass" if ok else ("info" if check.informational else "fail")
    return CheckResult(check.id, status, detail, check.advisory)


def _judge(check: Check, m: Metrics) -> tuple[bool, str]:
    kind, value, attempts = check.kind, check.value, m.attempts_primary
    if kind == "no_hang":
        return m.outcome != "hang", f"ended in {m.elapsed_s:.1f}s ({m.outcome})"
    if kind == "complete":
        return m.outcome == "success" and m.complete, "complete answer" if m.complete else m.outcome
    if kind == "no_truncated_success":
        truncated = m.outcome == "success" and not m.complete
        return (
            not truncated,
            f"success with {m.content_words}/60 words" if truncated else f"no truncation ({m.outcome})",
        )
    if kind == "attempts_primary_min":
        return attempts >= value, f"{attempts} primary attempt(s)"
    if kind == "attempts_primary_max":
        return attempts <= value, f"{attempts} primary attempt(s)"
    if kind == "attempts_primary_eq":
        return attempts == value, f"{attempts} primary attempt(s)"
    if kind == "context_retry_discipline":
        sizes = m.primary_prompt_tokens
        shrinking = all(later < earlier for earlier, later in itertools.pairwise(sizes))
        return attempts <= 1 or shrinking, f"{attempts} primary attempt(s), prompt sizes {sizes}"
    if kind == "first_gap_min_s":
        gap = m.first_gap_s
        return gap is not None and gap >= value, f"gap {gap:.2f}s" if gap is not None else "no second attempt"
    if kind == "max_attempts_within":
        times = m.primary_times
        within = sum(1 for t in times if t - times[0] < check.window_s) if times else 0
        return within <= value, f"{within} attempt(s) in the first {check.window_s:g}s"
    if kind == "wall_max_s":
        return m.outcome != "hang" and m.elapsed_s <= value, f"{m.elapsed_s:.1f}s"
    if kind == "alive_after":
        return m.alive_after, "a healthy call succeeded afterwards" if m.alive_after else "a healthy call failed after"
    if kind == "fallback_used":
        return m.attempts_fallback >= 1, f"{m.attempts_fallback} fallback attempt(s)"
    if kind == "reported_model_is_fallback":
        if m.attempts_fallback == 0:
            return True, "n/a: the fallback was never used"
        reported = model_key(m.reported_model)
        return bool(reported) and model_key(m.fallback_model) in reported, f"response.model = {m.reported_model!r}"
    if kind == "usage_present":
        return bool(m.usage), f"usage = {m.usage}" if m.usage else "no usage block"
    if kind == "no_prefill_masking":
        masked = m.outcome == "error" and m.prefill_rejections > 0
        return not masked, f"{m.prefill_rejections} prefill rejection(s); outcome {m.outcome}"
    return _judge_sequence(check, m)


def _judge_sequence(check: Check, m: Metrics) -> tuple[bool, str]:
    seq = m.sequence
    if check.kind == "seq_no_hang":
        return seq["hangs"] == 0, f"{seq['hangs']} hung request(s) of {seq['count']}"
    if check.kind == "seq_served_during_outage":
        served, total = seq["served_during_down"], seq["requests_during_down"]
        return total > 0 and served == total, f"{served}/{total} answered while the primary was down"
    if check.kind == "seq_recovered_within_s":
        after = seq["recovered_after_s"]
        ok = after is not None and after <= check.value
        return ok, f"primary answered again {after:+.1f}s after recovery" if after is not None else "never again"
    if check.kind == "seq_probe_discipline":
        attempts, total = seq["primary_attempts_during_down"], seq["requests_during_down"]
        return attempts <= total, f"{attempts} primary attempt(s) for {total} request(s) during the outage"
    raise ValueError(f"unknown check kind {check.kind}")


def verdict(scenario: Scenario, checks: list[CheckResult], m: Metrics) -> tuple[str, str]:
    """pass: rescued, every check clean; partial: rescued, an advisory check failed (or, where the
    ideal is an error, answered by routing around the rejection); safe: not rescued, a bounded clean
    error, every required check clean; fail: a hang, a truncated success, a required check failed."""
    if m.outcome == "hang":
        return "fail", "hang"
    if m.outcome == "success" and not m.complete and scenario.ideal == "success":
        return "fail", "truncated answer presented as success"
    required = [c.id for c in checks if c.status == "fail" and not c.advisory]
    if required:
        return "fail", "failed: " + ", ".join(required)
    advisory = [c.id for c in checks if c.status == "fail" and c.advisory]
    if scenario.ideal == "error":
        if m.outcome == "success":
            return "partial", "answered by routing around the rejection"
        rescued = True
    else:
        rescued = m.outcome == "success" and m.complete
    if rescued:
        return ("partial", "rescued; advisory: " + ", ".join(advisory)) if advisory else ("pass", "rescued")
    return "safe", f"not rescued, clean error: {str(m.error)[:100]}"


@dataclass
class ScenarioResult:
    scenario: Scenario
    verdict: str
    reason: str
    checks: list[CheckResult]
    metrics: Metrics
    log: list[Attempt]

    def line(self) -> str:
        m = self.metrics
        gap = f" · gap {m.first_gap_s:.1f}s" if m.first_gap_s is not None else ""
        return (
            f"{self.scenario.id} {self.scenario.title}: {self.verdict} ({self.reason}) · "
            f"{m.attempts_primary}p/{m.attempts_fallback}f{gap} · {m.elapsed_s:.1f}s"
        )


def summary(results: list[ScenarioResult]) -> dict[str, int]:
    return {name: sum(1 for r in results if r.verdict == name) for name in VERDICTS}


# ---- running it against the gateway ---------------------------------------------------------------


@dataclass
class BenchGateway(Drill):
    """The dev stack's gateway with vLLM and the cloud at the fault provider and Ollama refused."""

    timing: Timing = PROFILES["full"]
    provider: FaultProvider | None = None

    def start_standins(self) -> dict[str, str]:
        chain = {tier.name: tier for tier in failover_chain(self.settings)}
        self.provider = FaultProvider(chain["vllm"].served_model, chain["openai"].served_model, self.timing).start()
        refused = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there: connection refused
        bases = {"vllm": f"{self.provider.url}/v1", "ollama": refused, "openai": f"{self.provider.url}/v1"}
        return {tier: bases[tier] for tier in chain}

    def stop(self) -> None:
        super().stop()
        if self.provider is not None:
            self.provider.stop()


def _sequence(scenario: Scenario, profile: str) -> Sequence | None:
    return scenario.fast_sequence if profile == "fast" and scenario.fast_sequence else scenario.sequence


async def _run_sequence(gateway: BenchGateway, scenario: Scenario, sequence: Sequence) -> tuple[CallResult, dict]:
    provider = gateway.provider
    started, items = time.monotonic(), []
    for index in range(sequence.count):
        await asyncio.sleep(max(0.0, started + index * sequence.interval_s - time.monotonic()))
        sent = time.monotonic() - started
        result = await call_gateway(
            gateway.url, gateway.settings.gateway.model_name, True, sequence.per_request_max_wall_s
        )
        items.append((sent, result))
    down = provider.timing.flap_down_s
    primary = [e for e in provider.log if not e.probe and model_key(e.model) == model_key(provider.primary_model)]
    recovered = [e.t for e in primary if e.action.startswith("200")]
    during = [result for sent, result in items if sent < down]
    outcome = "hang" if any(r.hang for _, r in items) else "success" if all(r.ok for _, r in items) else "error"
    last = items[-1][1]
    combined = CallResult(outcome == "success", round(time.monotonic() - started, 3), hang=outcome == "hang")
    combined.content = CANONICAL_ANSWER if all(is_complete(r.content) for _, r in items) else last.content
    combined.error = next((r.error for _, r in items if not r.ok), None)
    combined.reported_model, combined.usage = last.reported_model, last.usage
    facts = {
        "count": len(items),
        "hangs": sum(1 for _, r in items if r.hang),
        "requests_during_down": len(during),
        "served_during_down": sum(1 for r in during if r.ok),
        "primary_attempts_during_down": sum(1 for e in primary if e.t < down),
        "recovered_after_s": round(min(recovered) - down, 3) if recovered else None,
    }
    return combined, facts


async def run_scenario(gateway: BenchGateway, scenario: Scenario, profile: str) -> ScenarioResult:
    provider = gateway.provider
    provider.heal()
    await asyncio.to_thread(gateway.wait_for_tier, "vllm", 60.0)  # a fresh start, as a model of its own
    provider.configure(scenario.fault, scenario.fallback_fault)
    sequence = _sequence(scenario, profile)
    facts: dict[str, Any] = {}
    if sequence is not None:
        result, facts = await _run_sequence(gateway, scenario, sequence)
    else:
        result = await call_gateway(gateway.url, gateway.settings.gateway.model_name, True, scenario.max_wall_s)
    log = list(provider.log)
    provider.heal()
    alive = await call_gateway(gateway.url, gateway.settings.gateway.model_name, False, ALIVE_PROBE_SECONDS)
    m = metrics_from(result, log, provider.primary_model, provider.fallback_model)
    m.alive_after = alive.ok and is_complete(alive.content)
    m.sequence = facts
    checks = [evaluate(check, m) for check in scenario.checks]
    verdict_name, reason = verdict(scenario, checks, m)
    return ScenarioResult(scenario, verdict_name, reason, checks, m, log)


def run_scenarios(gateway: BenchGateway, profile: str, only: set[str] | None = None, report=print) -> list:
    """The scenarios in catalogue order on a started gateway, each line reported as it is scored."""
    results = []
    for scenario in (scenario for scenario in SCENARIOS if not only or scenario.id in only):
        began = time.monotonic()
        result = asyncio.run(run_scenario(gateway, scenario, profile))
        results.append(result)
        report(f"{result.line()} · {time.monotonic() - began:.0f}s with the wait before it")
    return results


def run_bench(settings: Settings | None = None, profile: str = "full", only: set[str] | None = None, report=print):
    """Start the gateway on `settings` (the dev stack's by default) and run the scenarios on it."""
    with BenchGateway(settings or stack_settings("dev"), timing=PROFILES[profile]) as gateway:
        return run_scenarios(gateway, profile, only, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. S01,S10")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    started = time.monotonic()
    print(f"Failover Bench, {CATALOGUE}, profile {args.profile}")
    results = run_bench(profile=args.profile, only=only)
    counts = summary(results)
    print("\n| system | pass | partial | safe | fail | run time |\n|---|---|---|---|---|---|")
    print(
        f"| this gateway (dev stack) | {counts['pass']} | {counts['partial']} | {counts['safe']} | "
        f"{counts['fail']} | {time.monotonic() - started:.0f}s |"
    )
    for result in results:
        print(f"\n{result.line()}")
        for check in result.checks:
            print(f"  - {check.id}: {check.status}{' (advisory)' if check.advisory else ''}: {check.detail}")
        actions = [f"{e.t:.2f}s {e.model}{' probe' if e.probe else ''} -> {e.action}" for e in result.log]
        print(f"  provider: {'; '.join(actions[:8])}{' …' if len(actions) > 8 else ''}")


if __name__ == "__main__":
    main()

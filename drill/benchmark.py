"""Benchmark: gateway overhead, failover and recovery, on this machine, in one run.

    .venv/bin/python -m drill.benchmark                 # ~5 minutes on 2 cores
    .venv/bin/python -m drill.benchmark --trials-only   # LiteLLM's settings and Redis on/off only
    .venv/bin/python -m drill.benchmark --write         # also write both tables into docs/benchmark.md

Prints two Markdown tables, the trials (overhead per way of running the gateway) and the rest
(failover, recovery, a saturated GPU, the progress path), each row beside its target; with --write
it also replaces both blocks in docs/benchmark.md (between markers, headed by the date, the machine
and the LiteLLM version), so figures there come from a run (`--trials-only --write`: the trials' block).
Everything runs on 127.0.0.1: the real LiteLLM proxy on the dev stack's rendered config, and the
stand-ins. Overhead is measured as the difference between calling the
vLLM stand-in through the gateway and calling it directly, in the same run (runs are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from components.reference import replace_between
from components.stack_files import ROOT, stack_settings
from drill.client import chat
from drill.redis_server import RedisServer
from drill.runner import DRILL_MASTER_KEY, Drill, free_port
from drill.saturation import ANSWER_SECONDS, CONCURRENT, SLOTS, freeze_under_load, tokens_per_second
from drill.timeline import Timeline

# What each measurement should reach (the project's NFRs), printed beside the figure so a reader
# of the page sees whether this run met it; "—" where no target applies.
NO_TARGET = "—"
OVERHEAD_TARGETS = {1: "p50 ≤ 10 ms added", 16: "p99 ≤ 100 ms added"}
REFUSED_TARGET = "first ≤ 0.2 s"
HUNG_TARGET = "first ≤ 5 s, next ≤ 0.2 s"
RECOVERY_TARGET = "≤ 15 s"
FREEZE_TARGET = "every request settled ≤ 8 s after the freeze"
TABLE_HEAD = ["| measurement | figure | target |", "|---|---|---|"]


def row(measurement: str, figure: str, target: str = NO_TARGET) -> str:
    return f"| {measurement} | {figure} | {target} |"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _load(url: str, payload: dict, headers: dict, concurrency: int, per_worker: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            for _ in range(per_worker):
                started = time.perf_counter()
                response = await client.post(url, json=payload, headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def load(url: str, model: str, concurrency: int, total: int) -> list[float]:
    payload = {"model": model, "messages": [{"role": "user", "content": "benchmark"}]}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    asyncio.run(_load(url, payload, headers, concurrency, 5))  # warm-up
    return asyncio.run(_load(url, payload, headers, concurrency, max(1, total // concurrency)))


def overhead_rows(drill: Drill, label: str, concurrency_levels=(1, 16), total: int = 320) -> list[str]:
    rows = []
    direct_url = f"{drill.standins['vllm'].url}/v1/chat/completions"
    gateway_url = f"{drill.url}/v1/chat/completions"
    for concurrency in concurrency_levels:
        direct = load(direct_url, drill.settings.vllm.model, concurrency, total)
        through = load(gateway_url, drill.settings.gateway.model_name, concurrency, total)
        seconds = sum(through) / concurrency
        figure = (
            f"p50 {ms(percentile(through, 0.5) - percentile(direct, 0.5))} "
            f"/ p99 {ms(percentile(through, 0.99) - percentile(direct, 0.99))} added "
            f"(gateway p50 {ms(percentile(through, 0.5))}, p99 {ms(percentile(through, 0.99))}; "
            f"direct p50 {ms(percentile(direct, 0.5))}; {len(through) / seconds:.0f} req/s)"
        )
        rows.append(row(f"overhead, {label}, c={concurrency}", figure, OVERHEAD_TARGETS.get(concurrency, NO_TARGET)))
    return rows


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def timed_requests(drill: Drill, count: int, timeline: Timeline) -> list[float]:
    seconds = []
    for _ in range(count):
        sent_at = timeline.now()
        answer = chat(drill.url, drill.settings.gateway.model_name, timeout=60)
        timeline.record(sent_at, answer.seconds, answer.tier, answer.status)
        seconds.append(answer.seconds)
    return seconds


def failover_rows(drill: Drill, timeline: Timeline) -> list[str]:
    vllm = drill.standins["vllm"]
    rows = []
    cases = (
        ("down", "refused vLLM (Gaming Mode)", REFUSED_TARGET),
        ("hang", "hung vLLM, request in flight", HUNG_TARGET),
    )
    for mode, label, target in cases:
        drill.all_up()
        drill.wait_for_tier("vllm", 30)
        vllm.set_mode(mode)
        timeline.phase(label.split(",")[0])
        first, *rest = timed_requests(drill, 11, timeline)
        figure = f"first {first:.3f} s; next 10: median {statistics.median(rest):.3f} s, max {max(rest):.3f} s"
        rows.append(row(f"failover, {label}", figure, target))
    vllm.set_mode("up")
    timeline.phase("vLLM back")
    started = time.monotonic()
    drill.wait_for_tier("vllm", 60)
    timed_requests(drill, 5, timeline)
    recovered = f"{time.monotonic() - started:.1f} s"
    rows.append(row("recovery after a hang (vLLM back → served by vLLM)", recovered, RECOVERY_TARGET))
    drill.all_up()
    return rows


def long_answer_rows(progress: Drill, plain: Drill, tokens: int = 1000, count: int = 20) -> list[str]:
    def median_for(drill: Drill) -> float:
        drill.standins["vllm"].set_mode("up", tokens=tokens)
        latencies = load(f"{drill.url}/v1/chat/completions", drill.settings.gateway.model_name, 1, count)
        drill.standins["vllm"].set_mode("up")
        return statistics.median(latencies)

    progress_median, plain_median = median_for(progress), median_for(plain)
    return [
        row(
            f"{tokens}-token non-streaming answer, progress path vs plain path",
            f"median {ms(progress_median)} vs {ms(plain_median)} ({ms(progress_median - plain_median)} added)",
        )
    ]


def busy_gpu_rows(drill: Drill) -> list[str]:
    """A saturated vLLM (few slots, a queue): tokens delivered through the gateway against vLLM
    direct, and how fast every in-flight request settles when the engine then freezes."""
    model = drill.settings.gateway.model_name
    vllm = drill.standins["vllm"]
    drill.all_up()
    drill.wait_for_tier("vllm", 30)
    vllm.set_mode("slow", delay=ANSWER_SECONDS, slots=SLOTS)
    direct, _ = tokens_per_second(f"{vllm.url}", drill.settings.vllm.model)
    through, answers = tokens_per_second(drill.url, model)
    on_vllm = sum(answer.tier == "vllm" for answer in answers)
    settled, frozen = freeze_under_load(drill)
    moved = sum(answer.tier != "vllm" for answer in frozen)
    drill.all_up()
    return [
        row(
            f"saturated vLLM ({SLOTS} slots, {ANSWER_SECONDS:g} s answers, {CONCURRENT} streams at once)",
            f"{through:.1f} tokens/s through the gateway vs {direct:.1f} direct (ratio {through / direct:.2f}); "
            f"{on_vllm}/{CONCURRENT} served by vLLM",
        ),
        row(
            "engine freeze under that load",
            f"every request settled {settled:.1f} s after the freeze "
            f"({moved} re-served by Ollama, 0 failed: {all(a.status == 200 for a in frozen)})",
            FREEZE_TARGET,
        ),
    ]


@dataclass(frozen=True)
class Trial:
    """One way of running the gateway, measured against the same stand-ins' speed in the same run."""

    label: str
    redis: bool = False
    env: dict[str, str] = field(default_factory=dict)
    litellm: dict[str, dict[str, Any]] = field(default_factory=dict)  # config.yaml sections
    metrics: bool = True
    workers: int = 1


# LiteLLM's documented performance switches (docs.litellm.ai "Production Best Practices", proxy_cli),
# each against the dev stack's config as deployed; the first row is the config as deployed.
TRIALS = (
    Trial("as deployed (dev stack, Redis off)"),
    Trial("as deployed + Redis (router state, guard)", redis=True),
    Trial("LITELLM_LOG=INFO instead of ERROR", env={"LITELLM_LOG": "INFO"}),
    Trial(
        "turn_off_message_logging, disable_spend_logs, disable_error_logs",
        litellm={
            "litellm_settings": {"turn_off_message_logging": True},
            "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
        },
    ),
    Trial("Prometheus metrics off", metrics=False),
    Trial("2 workers (--num_workers 2)", workers=2),
    Trial("as deployed, again (this run's noise)"),
)
REDIS_TRIALS = TRIALS[:2]  # Redis off, Redis on


def trial_rows(total: int, concurrency_levels=(1, 16), trials=TRIALS) -> list[str]:
    """Every trial's overhead at each concurrency, one after the other in this run."""
    base = stack_settings("dev")
    rows = []
    for trial in trials:
        settings = dataclasses.replace(
            base,
            gateway=dataclasses.replace(base.gateway, metrics=trial.metrics),
            redis=dataclasses.replace(base.redis, mode="deploy" if trial.redis else "off"),
        )
        with contextlib.ExitStack() as stack:
            redis_url = stack.enter_context(RedisServer(free_port())).url if trial.redis else None
            drill = Drill(
                settings, workers=trial.workers, redis_url=redis_url, extra_env=trial.env, trial_settings=trial.litellm
            )
            stack.enter_context(drill)
            rows += overhead_rows(drill, trial.label, concurrency_levels, total=total)
    return rows


BENCHMARK_PAGE = ROOT / "docs" / "benchmark.md"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run_header(when: datetime.datetime | None = None) -> str:
    """What a reader needs to weigh the figures: when, on what, with which LiteLLM."""
    when = when or datetime.datetime.now(datetime.UTC)
    return (
        f"Run of {when:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}, LiteLLM {importlib.metadata.version('litellm')}; "
        "everything on 127.0.0.1.\n\n"
    )


TRIALS_MARKER, RUN_MARKER = "benchmark-trials", "benchmark"


def write_table(rows: list[str], marker: str, page: Path = BENCHMARK_PAGE) -> None:
    """Replace the block between `<!-- generated:<marker> -->` markers with this run's table."""
    page.write_text(replace_between(page.read_text(), marker, run_header() + "\n".join(rows) + "\n"))


def write_run(trials: list[str], rows: list[str], page: Path = BENCHMARK_PAGE) -> None:
    """A full run writes both blocks: the trials into theirs, everything else into the run's."""
    write_table(TABLE_HEAD + trials, TRIALS_MARKER, page)
    write_table(TABLE_HEAD + rows, RUN_MARKER, page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per overhead measurement")
    parser.add_argument("--picture", type=Path, default=Path("benchmark-failover.png"), help="failover timeline PNG")
    parser.add_argument("--trials-only", action="store_true", help="only LiteLLM's settings and Redis, side by side")
    parser.add_argument("--write", action="store_true", help=f"write the tables into {BENCHMARK_PAGE.name}")
    args = parser.parse_args()
    settings = stack_settings("dev")
    trials = trial_rows(args.requests)
    print("\n".join(TABLE_HEAD + trials))
    if args.trials_only:
        if args.write:
            write_table(TABLE_HEAD + trials, TRIALS_MARKER)
        return
    rows: list[str] = []
    with Drill(settings) as progress:
        timeline = Timeline()
        rows += failover_rows(progress, timeline)
        timeline.draw(args.picture, "Benchmark failover: refused, then hung vLLM, then back")
        rows += busy_gpu_rows(progress)
        with Drill(settings, vllm_path="plain") as plain:
            rows += overhead_rows(plain, "1 worker, plain openai/ path", total=args.requests)
            rows += long_answer_rows(progress, plain)
    print("\n" + "\n".join(TABLE_HEAD + rows))
    if args.write:
        write_run(trials, rows)


if __name__ == "__main__":
    main()

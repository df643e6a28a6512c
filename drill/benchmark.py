"""Benchmark: gateway overhead, failover and recovery, on this machine, in one run.

    .venv/bin/python -m drill.benchmark            # ~3 minutes on 2 cores

Prints a Markdown table. Everything runs on 127.0.0.1: the real LiteLLM proxy on the dev stack's
rendered config, and the stand-ins. Overhead is measured as the difference between calling the
vLLM stand-in through the gateway and calling it directly, in the same run (runs are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from components.stack_files import stack_settings
from drill.client import chat
from drill.runner import DRILL_MASTER_KEY, Drill
from drill.saturation import ANSWER_SECONDS, CONCURRENT, SLOTS, freeze_under_load, tokens_per_second
from drill.timeline import Timeline


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
        rows.append(
            f"| overhead, {label}, c={concurrency} | p50 {ms(percentile(through, 0.5) - percentile(direct, 0.5))} "
            f"/ p99 {ms(percentile(through, 0.99) - percentile(direct, 0.99))} added "
            f"(gateway p50 {ms(percentile(through, 0.5))}, p99 {ms(percentile(through, 0.99))}; "
            f"direct p50 {ms(percentile(direct, 0.5))}; {len(through) / seconds:.0f} req/s) |"
        )
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
    for mode, label in (("down", "refused vLLM (Gaming Mode)"), ("hang", "hung vLLM, request in flight")):
        drill.all_up()
        drill.wait_for_tier("vllm", 30)
        vllm.set_mode(mode)
        timeline.phase(label.split(",")[0])
        first, *rest = timed_requests(drill, 11, timeline)
        rows.append(
            f"| failover, {label} | first {first:.3f} s; next 10: median {statistics.median(rest):.3f} s, "
            f"max {max(rest):.3f} s |"
        )
    vllm.set_mode("up")
    timeline.phase("vLLM back")
    started = time.monotonic()
    drill.wait_for_tier("vllm", 60)
    timed_requests(drill, 5, timeline)
    rows.append(f"| recovery after a hang (vLLM back → served by vLLM) | {time.monotonic() - started:.1f} s |")
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
        f"| {tokens}-token non-streaming answer, progress path vs plain path | median {ms(progress_median)} vs "
        f"{ms(plain_median)} ({ms(progress_median - plain_median)} added) |"
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
        f"| saturated vLLM ({SLOTS} slots, {ANSWER_SECONDS:g} s answers, {CONCURRENT} streams at once) | "
        f"{through:.1f} tokens/s through the gateway vs {direct:.1f} direct (ratio {through / direct:.2f}); "
        f"{on_vllm}/{CONCURRENT} served by vLLM |",
        f"| engine freeze under that load | every request settled {settled:.1f} s after the freeze "
        f"({moved} re-served by Ollama, 0 failed: {all(a.status == 200 for a in frozen)}) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per overhead measurement")
    parser.add_argument("--picture", type=Path, default=Path("benchmark-failover.png"), help="failover timeline PNG")
    args = parser.parse_args()
    settings = stack_settings("dev")
    rows = ["| measurement | figure |", "|---|---|"]
    with Drill(settings) as progress:
        rows += overhead_rows(progress, "1 worker", total=args.requests)
        timeline = Timeline()
        rows += failover_rows(progress, timeline)
        timeline.draw(args.picture, "Benchmark failover: refused, then hung vLLM, then back")
        rows += busy_gpu_rows(progress)
        with Drill(settings, vllm_path="plain") as plain:
            rows += overhead_rows(plain, "1 worker, plain openai/ path", total=args.requests)
            rows += long_answer_rows(progress, plain)
    with Drill(settings, workers=2) as two_workers:
        rows += overhead_rows(two_workers, "2 workers", concurrency_levels=(16,), total=args.requests)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

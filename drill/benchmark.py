"""Benchmark: gateway overhead, failover and recovery, on this machine, in one run.

    .venv/bin/python -m drill.benchmark                       # ~12 minutes on 2 cores
    .venv/bin/python -m drill.benchmark --side-by-side-only   # the seed config against the project only
    .venv/bin/python -m drill.benchmark --trials-only         # LiteLLM's settings and Redis on/off only
    .venv/bin/python -m drill.benchmark --write               # also write the tables into docs/benchmark.md

Prints three Markdown tables: the project against the hand-written seed config, side by side in
one run with the ratio (`side_by_side`); the trials (overhead per way of running the gateway); and
the rest (failover, recovery, a saturated GPU, the progress path), each row beside its target. With
--write it also replaces their blocks in docs/benchmark.md (between markers, headed by the date, the
machine and the LiteLLM version), so figures there come from a run.
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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.names import CONFIG_FILE_NAME
from core.reference import replace_between
from core.settings import Settings
from core.stack_files import CHAINS_EXAMPLE, ROOT, stack_settings
from drill.client import chat
from drill.redis_server import RedisServer
from drill.runner import DRILL_MASTER_KEY, Drill, GatewayProcess, drill_files, free_port
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


def load(url: str, model: str, concurrency: int, total: int, warm: bool = True) -> list[float]:
    payload = {"model": model, "messages": [{"role": "user", "content": "benchmark"}]}
    headers = {"Authorization": f"Bearer {DRILL_MASTER_KEY}"}
    if warm:
        asyncio.run(_load(url, payload, headers, concurrency, 5))
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
    def median_for(drill: Drill, url: str, model: str) -> float:
        drill.standins["vllm"].set_mode("up", tokens=tokens)
        latencies = load(f"{url}/v1/chat/completions", model, 1, count)
        drill.standins["vllm"].set_mode("up")
        return statistics.median(latencies)

    model = progress.settings.gateway.model_name
    progress_median, plain_median = median_for(progress, progress.url, model), median_for(plain, plain.url, model)
    vllm = progress.standins["vllm"]
    direct_median = median_for(progress, vllm.url, vllm.model)
    return [
        row(
            f"{tokens}-token non-streaming answer: progress path, plain path, vLLM direct",
            f"median {ms(progress_median)}, {ms(plain_median)}, {ms(direct_median)} "
            f"({ms(progress_median - direct_median)} added by the gateway)",
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


# --- the project against the hand-written seed config, side by side -----------------------------------


def seed_config(api_bases: dict[str, str], settings: Settings) -> dict[str, Any]:
    """The config a user writes by hand (the seed's): three groups, ordered fallbacks, a master key,
    a 3 s global timeout and one retry, no callbacks, no metrics. The yardstick of NFR66's overhead."""
    vllm, ollama, cloud = (api_bases[tier] for tier in ("vllm", "ollama", "openai"))
    return {
        "model_list": [
            {
                "model_name": "chat",
                "litellm_params": {"model": f"openai/{settings.vllm.model}", "api_base": vllm, "api_key": "none"},
            },
            {
                "model_name": "chat-ollama",
                "litellm_params": {"model": f"ollama_chat/{settings.ollama.model}", "api_base": ollama},
            },
            {
                "model_name": "chat-openai",
                "litellm_params": {
                    "model": f"openai/{settings.openai.model}",
                    "api_base": cloud,
                    "api_key": "os.environ/OPENAI_API_KEY",
                },
            },
        ],
        "router_settings": {"fallbacks": [{"chat": ["chat-ollama", "chat-openai"]}]},
        "litellm_settings": {"request_timeout": 3, "num_retries": 1},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


def prod_features(redis: bool, chains: bool = False) -> Settings:
    """The prod stack's gateway, every feature on (metrics, spend guard, checks, progress provider),
    with Redis or without; `chains`: with examples/Pulumi.chains.yaml's other chains beside it."""
    prod = stack_settings("prod")
    if chains:
        prod = dataclasses.replace(prod, chains=stack_settings(CHAINS_EXAMPLE).chains)  # the chat chain unchanged
    return dataclasses.replace(prod, redis=dataclasses.replace(prod.redis, mode="deploy" if redis else "off"))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (/proc/<pid>/stat): what a request costs, whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Batches:
    """One configuration's pooled measurements over every batch of a side-by-side run."""

    c1: list[float] = field(default_factory=list)  # latencies, one client
    c16: list[float] = field(default_factory=list)  # latencies, 16 clients
    c16_seconds: float = 0.0  # wall time of the 16-client batches
    cpu_seconds: float = 0.0  # the proxy's CPU over the 16-client batches (0 for direct calls)


def run_batch(url: str, model: str, into: Batches, per_batch: int, pid: int | None) -> None:
    """One 1-client and one 16-client batch; with `pid`, that process's CPU over the latter."""
    into.c1 += load(url, model, 1, per_batch // 4, warm=False)
    cpu_before, started = process_cpu_seconds(pid) if pid else 0.0, time.perf_counter()
    into.c16 += load(url, model, 16, per_batch, warm=False)
    into.c16_seconds += time.perf_counter() - started
    into.cpu_seconds += process_cpu_seconds(pid) - cpu_before if pid else 0.0


def gateway_on_config(drill: Drill, config: dict[str, Any] | None) -> GatewayProcess:
    """A proxy on the drill's stand-ins: the drill's own rendered directory, or `config` alone."""
    if config is not None:
        drill.workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-seed-"))
        (drill.workdir / CONFIG_FILE_NAME).write_text(yaml.safe_dump(config, sort_keys=False))
    return drill.new_gateway()


SIDE_BY_SIDE = (
    "seed config (hand-written)",
    "this project, prod features, Redis off",
    "this project, prod features, Redis on",
)
# The chat chain's cost with two more chains in the same config (issue 23): the same requests.
WITH_CHAINS = "this project, prod features + 2 more chains, Redis off"
CHAINS_LABELS = (SIDE_BY_SIDE[0], SIDE_BY_SIDE[1], WITH_CHAINS)
DIRECT = "vLLM stand-in, direct"


def side_by_side(total: int = 480, batches: int = 8, labels: tuple[str, ...] = SIDE_BY_SIDE) -> dict[str, Batches]:
    """Every configuration running at once on the same stand-ins, measured in small batches taken in
    turn (the order rotating), so that a noisy machine's drift lands on all of them alike; the vLLM
    stand-in called directly in the same turns is the baseline. `total`: 16-client requests each."""
    figures = {label: Batches() for label in (*labels, DIRECT)}
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(RedisServer(free_port())).url if SIDE_BY_SIDE[2] in labels else None
        drills = {
            label: Drill(
                prod_features(redis=label == SIDE_BY_SIDE[2], chains=label == WITH_CHAINS), redis_url=redis_url
            )
            for label in labels
        }
        owner = Drill(prod_features(redis=False, chains=WITH_CHAINS in labels))  # a stand-in for every tier
        bases = owner.start_standins()
        stack.callback(owner.stop)
        gateways = {}
        for label, drill in drills.items():
            drill.standins = owner.standins
            config = seed_config(bases, drill.settings) if label == SIDE_BY_SIDE[0] else None
            if config is None:
                drill.workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-project-"))
                for name, text in drill_files(drill.settings, bases).items():
                    (drill.workdir / name).write_text(text)
            gateways[label] = gateway_on_config(drill, config)
            stack.callback(gateways[label].stop)
            gateways[label].start()
        vllm = owner.standins["vllm"]
        targets = {
            label: (f"{gateway.url}/v1/chat/completions", "chat", gateway.process.pid)
            for label, gateway in gateways.items()
        }
        targets[DIRECT] = (f"{vllm.url}/v1/chat/completions", vllm.model, None)
        for url, model, _ in targets.values():
            load(url, model, 16, 32)  # warm: first-use imports are not the steady state
        order = list(targets)
        for turn in range(batches):
            for label in order[turn % len(order) :] + order[: turn % len(order)]:
                url, model, pid = targets[label]
                run_batch(url, model, figures[label], max(16, total // batches), pid)
    return figures


SIDE_BY_SIDE_HEAD = [
    "| configuration | c=1 p50 added | c=16 p50 added | c=16 p99 | req/s at c=16 | CPU per request |",
    "|---|---|---|---|---|---|",
]


def side_by_side_figures(figures: dict[str, Batches]) -> dict[str, dict[str, float]]:
    """Per configuration: latency added to the direct call's (p50 at 1 and 16 clients), the p99 at 16
    clients, requests per second at 16 clients and the proxy's CPU milliseconds per request."""
    direct = figures[DIRECT]
    return {
        label: {
            "c1_p50": percentile(batches.c1, 0.5) - percentile(direct.c1, 0.5),
            "c16_p50": percentile(batches.c16, 0.5) - percentile(direct.c16, 0.5),
            "c16_p99": percentile(batches.c16, 0.99),
            "requests_per_second": len(batches.c16) / batches.c16_seconds,
            "cpu_ms_per_request": batches.cpu_seconds / len(batches.c16) * 1000,
        }
        for label, batches in figures.items()
        if label != DIRECT
    }


def side_by_side_rows(figures: dict[str, Batches]) -> list[str]:
    """Each project cell with its ratio to the seed's (below 1: cheaper, or for req/s: slower)."""
    table = side_by_side_figures(figures)
    seed = table[SIDE_BY_SIDE[0]]
    rows = []
    for label, mine in table.items():
        cells = []
        for name, value in mine.items():
            text = (
                f"{value:.0f}"
                if name == "requests_per_second"
                else ms(value / 1000 if name.startswith("cpu") else value)
            )
            cells.append(text if label == SIDE_BY_SIDE[0] else f"{text} ({value / seed[name]:.2f} x seed)")
        rows.append(f"| {label} | {' | '.join(cells)} |")
    direct = figures[DIRECT]
    rows.append(
        f"| {DIRECT} (the baseline) | p50 {ms(percentile(direct.c1, 0.5))} | p50 {ms(percentile(direct.c16, 0.5))} "
        f"| {ms(percentile(direct.c16, 0.99))} | {len(direct.c16) / direct.c16_seconds:.0f} | — |"
    )
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


TRIALS_MARKER, RUN_MARKER, SEED_MARKER, CHAINS_MARKER = (
    "benchmark-trials",
    "benchmark",
    "benchmark-seed",
    "benchmark-chains",
)


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
    parser.add_argument("--side-by-side-only", action="store_true", help="only the seed config against the project")
    parser.add_argument("--chains-only", action="store_true", help="only the chat chain alone and beside 2 more chains")
    args = parser.parse_args()
    if args.chains_only:
        chains_rows = SIDE_BY_SIDE_HEAD + side_by_side_rows(side_by_side(args.requests, labels=CHAINS_LABELS))
        print("\n".join(chains_rows))
        if args.write:
            write_table(chains_rows, CHAINS_MARKER)
        return
    if not args.trials_only:
        seed_rows = SIDE_BY_SIDE_HEAD + side_by_side_rows(side_by_side(args.requests))
        print("\n".join(seed_rows))
        if args.write:
            write_table(seed_rows, SEED_MARKER)
        if args.side_by_side_only:
            return
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

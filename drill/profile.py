"""Where the gateway's CPU goes: the proxy's flame graph and each feature's CPU per request.

    .venv/bin/pip install py-spy==0.4.3        # not in the lock: a profiler, not a test dependency
    .venv/bin/python -m drill.profile [--seconds 20] [--write]

The prod stack's gateway with every feature on (Redis off) on loopback stand-ins, 16 clients sending
non-streaming chat requests; py-spy samples the proxy process (by PID, which this program started)
twice: once for the flame graph (docs/flamegraph.svg), once for raw stacks, from which each sample is
given to the deepest gateway feature on its stack (the front door's own frames, not the LiteLLM app it
calls). Multiplied by the proxy's CPU per request over the same run, that is each feature's cost.
`--write` puts the table into docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from core.stack_files import ROOT
from drill.benchmark import BENCHMARK_PAGE, load, process_cpu_seconds, prod_features, write_table
from drill.runner import Drill

FEATURES_MARKER = "benchmark-features"
LITELLM = "LiteLLM itself (proxy, router, auth, logging), uvicorn, the event loop"
# (a frame's file, the feature it belongs to): the deepest such frame on a stack takes the sample.
FEATURES = (
    ("request_check.py", "front door and request check (`gateway/request_check.py`)"),
    ("context_check.py", "context check (`gateway/context_check.py`)"),
    ("honest_errors.py", "honest errors (`gateway/honest_errors.py`; its work is on errors)"),
    ("cloud_guard.py", "cloud spend guard (`gateway/cloud_guard.py`; its work is on the cloud tier)"),
    ("served_model.py", "the answering model's name (`gateway/served_model.py`)"),
    ("vllm_progress.py", "progress provider, its HTTP client included (`gateway/vllm_progress.py`)"),
    ("integrations/prometheus", "Prometheus metrics (LiteLLM's callback, `gateway/lean_metrics.py`)"),
    ("lean_metrics.py", "Prometheus metrics (LiteLLM's callback, `gateway/lean_metrics.py`)"),
)


def feature_of(frames: list[str]) -> str:
    """The feature a sample's CPU belongs to: the deepest feature frame, unless it is the front door
    calling the LiteLLM app (that time is the app's)."""
    for depth in range(len(frames) - 1, -1, -1):
        feature = next((name for key, name in FEATURES if key in frames[depth]), None)
        if feature is None:
            continue
        calls_the_app = "FrontDoor" in frames[depth] and depth + 1 < len(frames)
        if calls_the_app and "request_check.py" not in frames[depth + 1]:
            return LITELLM
        return feature
    return LITELLM


def shares(raw_stacks: str) -> dict[str, float]:
    """Each feature's share of the samples in py-spy's raw output (`frame;frame;… count` lines)."""
    samples: Counter[str] = Counter()
    for line in raw_stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples[feature_of(stack.split(";"))] += int(count)
    total = sum(samples.values()) or 1
    return {name: count / total for name, count in samples.items()}


def feature_rows(fractions: dict[str, float], cpu_ms_per_request: float) -> list[str]:
    rows = ["| what runs | CPU per request |", "|---|---|"]
    every = dict.fromkeys([name for _, name in FEATURES] + [LITELLM], 0.0) | fractions
    for name, fraction in every.items():
        rows.append(f"| {name} | {fraction * cpu_ms_per_request:.2f} ms |")
    rows.append(f"| **the proxy in all** | **{cpu_ms_per_request:.1f} ms** |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "flamegraph.svg")
    parser.add_argument("--write", action="store_true", help=f"write the table into {BENCHMARK_PAGE.name}")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy==0.4.3")
    settings = prod_features(redis=False)
    with Drill(settings) as drill:
        url, model = f"{drill.url}/v1/chat/completions", settings.gateway.model_name
        load(url, model, 16, 160)  # warm: first-use imports are not the steady state
        stop, sent = threading.Event(), Counter()

        def keep_sending() -> None:
            while not stop.is_set():
                sent["requests"] += len(load(url, model, 16, 32, warm=False))

        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        record = [py_spy, "record", "--pid", str(drill.proxy.pid), "--duration", str(args.seconds)]
        record += ["--rate", "200", "--nonblocking"]
        subprocess.run([*record, "--format", "flamegraph", "--output", str(args.picture)], check=True)
        raw = Path(tempfile.mkdtemp(prefix="llm-gateway-profile-")) / "stacks.txt"
        cpu_before, sent_before = process_cpu_seconds(drill.proxy.pid), sent["requests"]
        subprocess.run([*record, "--format", "raw", "--output", str(raw)], check=True)
        cpu = process_cpu_seconds(drill.proxy.pid) - cpu_before
        requests = sent["requests"] - sent_before
        stop.set()
        sender.join(60)
    rows = feature_rows(shares(raw.read_text()), cpu / max(1, requests) * 1000)
    print("\n".join(rows))
    if args.write:
        write_table(rows, FEATURES_MARKER)
    print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()

"""Where the gateway's CPU goes: a flame graph of the real proxy under load (docs/flamegraph.svg).

    .venv/bin/pip install py-spy==0.4.3        # not in the lock: a profiler, not a test dependency
    .venv/bin/python -m drill.profile [--seconds 20] [--out docs/flamegraph.svg]

The prod stack's gateway with every feature on (Redis off) on loopback stand-ins, 4 clients sending
non-streaming chat requests; py-spy samples the proxy process (by PID, which this program started)
and draws the flame graph. Read it with docs/benchmark.md's per-feature figures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from components.stack_files import ROOT
from drill.benchmark import load, prod_features
from drill.runner import Drill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "flamegraph.svg")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy==0.4.3")
    settings = prod_features(redis=False)
    with Drill(settings) as drill:
        url, model = f"{drill.url}/v1/chat/completions", settings.gateway.model_name
        load(url, model, 4, 100)  # warm: first-use imports are not the steady state
        stop = threading.Event()

        def keep_sending() -> None:
            while not stop.is_set():
                load(url, model, 4, 40)

        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        record = [py_spy, "record", "--pid", str(drill.proxy.pid), "--duration", str(args.seconds)]
        subprocess.run(
            [*record, "--rate", "200", "--nonblocking", "--format", "flamegraph", "--output", str(args.out)], check=True
        )
        stop.set()
        sender.join(60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The local demo: the real gateway on the dev stack's rendered config, with stand-in tiers.

    bash scripts/demo            # installs what it needs, then runs this
    .venv/bin/python -m drill.demo [--serve] [--refresh-picture]

Walks through all up → Gaming Mode (vLLM at 0 replicas) → Ollama down too → vLLM hung (the first
request waits out the progress limit, then Ollama answers) → everything back, and prints for each
step which tier answered, the latency and how many prompts reached the cloud.
With --serve the gateway stays up afterwards for your own requests, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.stack_files import ROOT, stack_settings
from drill.client import chat
from drill.runner import Drill
from drill.timeline import Timeline

# A run draws into an ignored directory, so trying the demo leaves the checkout clean; only
# --refresh-picture replaces the picture the README shows.
PICTURE = ROOT / ".demo" / "failover-timeline.png"
DOCS_PICTURE = ROOT / "docs" / "failover-timeline.png"

STEPS = (
    ("all tiers up", {}),
    ("Gaming Mode: vLLM at 0 replicas (connection refused)", {"vllm": "down"}),
    ("Ollama down too: the cloud tier answers", {"vllm": "down", "ollama": "down"}),
    ("vLLM hung (GPU reset), Ollama back", {"vllm": "hang"}),
    ("everything back", {}),
)


def run_step(
    drill: Drill, title: str, modes: dict[str, str], timeline: Timeline | None = None, requests: int = 6
) -> None:
    timeline = timeline or Timeline()
    drill.enter_phase(modes)
    cloud_before = drill.cloud.client_requests if drill.cloud else 0
    print(f"\n== {title}")
    timeline.phase(title.split(":")[0].split(",")[0])
    for index in range(requests):
        prompt = f"demo request {index + 1}"
        sent_at = timeline.now()
        answer = chat(drill.url, drill.settings.gateway.model_name, prompt=prompt, timeout=60, api_key=drill.master_key)
        timeline.record(sent_at, answer.seconds, answer.tier, answer.status)
        print(f"   request {index + 1}: HTTP {answer.status} from {answer.tier or '-':7s} in {answer.seconds:6.3f} s")
        time.sleep(0.5)
    cloud_after = drill.cloud.client_requests if drill.cloud else 0
    print(f"   prompts sent to the cloud in this step: {cloud_after - cloud_before}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the gateway locally against stand-in tiers.")
    parser.add_argument("--serve", action="store_true", help="keep the gateway running after the walkthrough")
    parser.add_argument("--picture", type=Path, default=PICTURE, help="where to draw the failover timeline (PNG)")
    parser.add_argument(
        "--refresh-picture",
        action="store_true",
        help=f"draw into {DOCS_PICTURE.relative_to(ROOT)}, the picture the README shows",
    )
    args = parser.parse_args()
    picture_path = DOCS_PICTURE if args.refresh_picture else args.picture
    settings = stack_settings("dev")
    print("Starting the LiteLLM proxy on the dev stack's rendered config (about 10-15 s)...")
    with Drill(settings) as drill:
        print(f"Gateway: {drill.url}  (model {settings.gateway.model_name!r})")
        timeline = Timeline()
        for title, modes in STEPS:
            run_step(drill, title, modes, timeline)
            if "hang" in modes.values():
                # A hang cools the tier down (a refusal does not): the next step waits it out.
                timeline.phase("vLLM back, cooling down")
                drill.all_up()
                print(
                    f"\n   (vLLM answers again; its cooldown of {settings.gateway.cooldown_seconds} s runs out first)"
                )
                time.sleep(settings.gateway.cooldown_seconds + 1)
        picture = timeline.draw(
            picture_path, "Failover through the real LiteLLM proxy (dev stack config, stand-in tiers)"
        )
        print(f"\nThe failover timeline (each request: send time, latency, the tier that answered): {picture}")
        if args.serve:
            drill.all_up()
            print(
                f"\nServing until Ctrl-C. Try:\n  curl {drill.url}/v1/chat/completions "
                f"-H 'Authorization: Bearer {drill.master_key}' -H 'Content-Type: application/json' "
                f'-d \'{{"model": "{settings.gateway.model_name}", "messages": '
                f'[{{"role": "user", "content": "hi"}}]}}\''
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    print("\nStopped the gateway and the stand-ins.")


if __name__ == "__main__":
    main()

"""Load through failover: 8 clients keep sending while the tiers are stopped and brought back.

    .venv/bin/python -m drill.load [--stream] [--phase-seconds 6] [--chains]

Phases: all up → vLLM stopped mid-run → Ollama stopped too → both back. A stage is stopped for
every chain: each `vllm` tier crashes with "vLLM", each model of the shared Ollama with "Ollama".
With an embeddings chain (`--chains`: the dev stack with examples/Pulumi.chains.yaml's chains, in
ROLLING_PHASES), half the clients embed. Every stand-in answers in ~0.3 s (tokens spread over that
time), so requests are in flight when a tier stops: a stopped tier closes its port and cuts every
open connection, as a crashed pod does.

Each request is counted in the phase it started in. `served by` names the tiers of the requests that
ran wholly inside their phase. A request under way while the tiers were switched (cut by a crash and
re-served, or sent just as a tier came back) met two phases' tiers: it is listed under `across a
switch` instead. `cloud received` counts the prompts the cloud stand-in received during each phase
(a walk already under way when both tiers come back may still end at the cloud: 0.5 s of grace).
Loopback only; bounded in time (phases) and per request.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from core.chain import all_tiers, chains
from core.stack_files import CHAINS_EXAMPLE, stack_settings
from drill.client import chat, embed
from drill.runner import Drill

# "crash": the port closes and every open connection is cut, requests in flight included.
PHASES = (
    ("all up", {}),
    ("vLLM stopped", {"vllm": "crash"}),
    ("vLLM and Ollama stopped", {"vllm": "crash", "ollama": "crash"}),
    ("both back", {}),
)
# Every chain keeps a local tier in every phase (an embeddings chain has no cloud to fall to): the
# GPU tiers crash, come back and are given three phases to leave their cooldown (gateway.cooldownSeconds
# after the last failed probe), then the shared Ollama crashes. A third element: the phase's length
# in phases.
ROLLING_PHASES = (
    ("all up", {}),
    ("vLLM stopped", {"vllm": "crash"}),
    ("vLLM back", {}, 3),
    ("Ollama stopped", {"ollama": "crash"}),
    ("both back", {}),
)
RETURN_GRACE_SECONDS = 0.5
ANSWER_SECONDS = 0.3
CLIENTS = 8
REQUEST_TIMEOUT = 30.0


@dataclass
class PhaseReport:
    name: str
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_before_first_chunk: int = 0  # streams only
    cut_mid_stream: int = 0  # streams only: error after some chunks
    tiers: Counter = field(default_factory=Counter)  # requests that ran wholly inside the phase
    across_switch: Counter = field(default_factory=Counter)  # requests under way while the tiers switched
    errors: Counter = field(default_factory=Counter)
    cloud_received: int = 0  # prompts the cloud stand-in received while this phase was in force

    @property
    def inside(self) -> int:
        """Requests that ran wholly inside the phase: what `tiers` shares out."""
        return sum(self.tiers.values())


def _one_request(
    client: httpx.Client, base_url: str, model: str, stream: bool, api_key: str, embeddings: bool = False
) -> tuple[bool, str | None, str, int]:
    """(ok, tier, error, chunks received before any error)."""
    try:
        if embeddings:
            answer = embed(base_url, model, ["load", "through failover"], api_key=api_key, client=client)
            good = answer.status == 200 and len(answer.body.get("data") or []) == 2
            return good, answer.tier, "" if good else str(answer.status), 0
        answer = chat(base_url, model, prompt="load", stream=stream, api_key=api_key, client=client)
    except (httpx.HTTPError, ValueError) as error:  # ValueError: a body that is not JSON
        return False, None, type(error).__name__, 0
    if answer.status != 200:
        return False, answer.tier, str(answer.status), 0
    if "error" in answer.body:
        return False, answer.tier, "error event", len(answer.chunks)
    if not stream:
        return True, answer.tier, "", 0
    finished = any(choice.get("finish_reason") for event in answer.chunks for choice in event.get("choices") or [])
    return finished, answer.tier, "" if finished else "no finish", len(answer.chunks)


def run_load(drill: Drill, stream: bool, phase_seconds: float, phases=PHASES) -> list[PhaseReport]:
    model = drill.settings.gateway.model_name
    embeddings = [chain.name for chain in chains(drill.settings) if chain.kind == "embeddings"]
    kinds = {tier.name: tier.kind for tier in all_tiers(drill.settings)}
    reports = [PhaseReport(name) for name, *_ in phases]
    current = {"phase": 0}
    stop = threading.Event()
    lock = threading.Lock()
    switches: list[tuple[float, float]] = []  # (began, ended) of each phase's switch of the tiers

    def client_loop(index: int) -> None:
        # With a fleet, the clients are spread over its gateways, as a Service spreads connections.
        url = drill.gateways[index % len(drill.gateways)].url
        embeds = bool(embeddings) and index % 2 == 1  # with an embeddings chain, every other client embeds
        asked = embeddings[0] if embeds else model
        with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as client:
            while not stop.is_set():
                began, phase = time.monotonic(), current["phase"]
                ok, tier, error, chunks = _one_request(client, url, asked, stream, drill.master_key, embeds)
                with lock:
                    report = reports[phase]
                    report.sent += 1
                    inside = _inside_one_phase(began, time.monotonic(), switches)
                    (report.tiers if inside else report.across_switch)[tier or "-"] += 1
                    if ok:
                        report.succeeded += 1
                        continue
                    report.failed += 1
                    report.errors[error] += 1
                    if chunks:
                        report.cut_mid_stream += 1
                    else:
                        report.failed_before_first_chunk += 1

    def set_modes(modes: dict[str, str]) -> None:
        for tier, standin in drill.standins.items():
            mode = modes.get(tier) or modes.get(kinds.get(tier, ""))  # by kind: every chain's tier of it
            if mode:
                standin.set_mode(mode)
            else:
                standin.set_mode("slow", delay=ANSWER_SECONDS)

    set_modes(phases[0][1])  # before the clients start: the first phase has no switch
    drill.reset_counts()
    started_at: list[float] = []
    clients = [threading.Thread(target=client_loop, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        for index, (_, modes, *length) in enumerate(phases):
            if index:
                began = time.monotonic()
                with lock:
                    switches.append((began, float("inf")))
                set_modes(modes)  # first: every request counted in a phase starts under its modes
                current["phase"] = index
                with lock:
                    switches[-1] = (began, time.monotonic())
            started_at.append(time.monotonic())
            time.sleep(phase_seconds * (length[0] if length else 1))
    finally:
        stop.set()
        for thread in clients:
            thread.join(REQUEST_TIMEOUT + 5)
        drill.all_up()
    for received in drill.cloud.received_at if drill.cloud else ():
        phase = max(i for i, start in enumerate(started_at) if start <= received)
        # A walk that found both local tiers down just before they came back still ends at the cloud.
        if phase and _both_local_down(phases[phase - 1][1]) and received - started_at[phase] < RETURN_GRACE_SECONDS:
            phase -= 1
        reports[phase].cloud_received += 1
    return reports


def _both_local_down(modes: dict[str, str]) -> bool:
    """Whether a phase stops both local stages: the only phase in which the cloud may answer."""
    return {"vllm", "ollama"} <= modes.keys()


def _inside_one_phase(began: float, ended: float, switches: list[tuple[float, float]]) -> bool:
    """Whether a request ran wholly between two switches of the tiers. One that began while the
    modes were being set, or was under way when the next switch began, met two phases' tiers: the
    phase it is counted in cannot say which tier it should have reached."""
    return not any(began < switch_ended and ended > switch_began for switch_began, switch_ended in switches)


def table(reports: list[PhaseReport], stream: bool) -> str:
    rows = [
        "| phase | sent | succeeded | failed | before 1st chunk | cut mid-stream | served by | across a switch"
        " | cloud received |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        tiers, across = (
            ", ".join(f"{tier} {n}" for tier, n in sorted(c.items())) for c in (report.tiers, report.across_switch)
        )
        middle = f"{report.failed_before_first_chunk} | {report.cut_mid_stream}" if stream else "- | -"
        counts = f"{report.sent} | {report.succeeded} | {report.failed}"
        rows.append(f"| {report.name} | {counts} | {middle} | {tiers} | {across or '-'} | {report.cloud_received} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    parser.add_argument("--chains", action="store_true", help="add examples/Pulumi.chains.yaml's chains")
    args = parser.parse_args()
    settings = stack_settings("dev")
    if args.chains:
        settings = dataclasses.replace(settings, chains=stack_settings(CHAINS_EXAMPLE).chains)
    phases = ROLLING_PHASES if args.chains else PHASES
    with Drill(settings) as drill:
        print(table(run_load(drill, args.stream, args.phase_seconds, phases), args.stream))


if __name__ == "__main__":
    main()

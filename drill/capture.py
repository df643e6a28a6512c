"""Capture the real proxy's metrics through real failovers, as promtool input series.

The drill runs phases (all up, Gaming Mode, nothing answers, the cloud answers until the spend
guard refuses, everything back) and scrapes `/metrics/` after each. Each scrape becomes four
one-minute samples of a promtool series, after four minutes of zeros (nothing had happened yet):
the values are the real counters, the metric names and labels are the real ones.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from drill.client import chat
from drill.runner import Drill

# Four one-minute samples a phase: a 5-minute window ending on a phase's last sample also holds the
# previous phase's last sample, so it sees the step into the phase (PromQL windows are left-open).
MINUTES_PER_PHASE = 4
MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
# Phase title → stand-in modes (tiers not named are up) and how many requests are sent in it.
PHASES = (
    ("all up", {}, 3),
    ("Gaming Mode: vLLM refused", {"vllm": "down"}, 3),
    ("nothing answers", {"vllm": "down", "ollama": "down", "openai": "down"}, 2),
    ("the cloud answers until the spend guard refuses", {"vllm": "down", "ollama": "down"}, 4),
    ("everything back", {}, 3),
)


def phase_end_minute(index: int) -> int:
    """The last sample of phase `index` (phase 0 is the five minutes of zeros before the first)."""
    return (index + 2) * MINUTES_PER_PHASE - 1


@dataclass
class Capture:
    scrapes: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = field(default_factory=list)
    statuses: list[list[int]] = field(default_factory=list)

    def input_series(self, names: set[str]) -> list[dict[str, str]]:
        """promtool's `input_series` for every series of the given metric names."""
        keys = sorted({key for scrape in self.scrapes for key in scrape if key[0] in names})
        series = []
        for name, labels in keys:
            # A counter that is not exported yet has counted nothing; a gauge has no value then.
            missing = "0" if name.endswith(MONOTONIC_SUFFIXES) else "_"
            values = [missing] * MINUTES_PER_PHASE
            for scrape in self.scrapes:
                value = scrape.get((name, labels))
                values += [_number(value) if value is not None else missing] * MINUTES_PER_PHASE
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            series.append({"series": f"{name}{{{rendered}}}", "values": " ".join(values)})
        return series


def _number(value: float) -> str:
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def scrape(drill: Drill, url: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one gateway's `/metrics/` (the first gateway's, unless `url` names another)."""
    headers = {"Authorization": f"Bearer {drill.master_key}"}
    text = httpx.get(f"{url or drill.url}/metrics/", headers=headers, timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def run_phases(drill: Drill) -> Capture:
    capture = Capture()
    model = drill.settings.gateway.model_name
    for index, (_, modes, requests) in enumerate(PHASES):
        if index and 503 in capture.statuses[-1]:
            # A request that found no tier cools the cloud down too (its "no deployments" is recorded
            # against the last deployment tried): the next phase starts after that cooldown.
            time.sleep(drill.settings.gateway.cooldown_seconds + 1)
        drill.enter_phase(modes)
        if not modes:
            drill.wait_for_tier("vllm")
        capture.statuses.append([chat(drill.url, model, timeout=30).status for _ in range(requests)])
        capture.scrapes.append(scrape(drill))
    drill.all_up()
    return capture


def metric_names(expressions: list[str]) -> set[str]:
    """The metric names PromQL expressions use (the gateway's and LiteLLM's)."""
    return {name for expr in expressions for name in re.findall(r"\b(?:litellm|llm_gateway)_\w+", expr)}

"""A picture of failover: each request a point at its send time and latency, coloured by the tier
that answered, the phases shaded. The demo and the benchmark draw it (matplotlib, a drill-only
dependency: the deployed program never imports it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

COLOURS = {"vllm": "#2e7d32", "ollama": "#ef6c00", "openai": "#c62828"}


@dataclass
class Point:
    sent_at: float  # seconds since the timeline began
    seconds: float
    tier: str | None  # None: the request failed
    status: int


@dataclass
class Timeline:
    """Collects points and phases while a run goes on."""

    started: float = field(default_factory=time.monotonic)
    points: list[Point] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # title, start, end
    _open: tuple[str, float] | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def phase(self, title: str) -> None:
        self.end_phase()
        self._open = (title, self.now())

    def end_phase(self) -> None:
        if self._open is not None:
            self.phases.append((*self._open, self.now()))
            self._open = None

    def record(self, sent_at: float, seconds: float, tier: str | None, status: int) -> None:
        self.points.append(Point(sent_at, seconds, tier if status == 200 else None, status))

    def draw(self, path: Path, title: str) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        self.end_phase()
        figure, axes = pyplot.subplots(figsize=(11, 4.8), dpi=110)
        for index, (name, start, end) in enumerate(self.phases):
            axes.axvspan(start, end, color="#eceff1" if index % 2 else "#cfd8dc", alpha=0.6, lw=0)
            axes.text((start + end) / 2, 1.02, name, transform=axes.get_xaxis_transform(), ha="center",
                      va="bottom", fontsize=8, wrap=True)  # fmt: skip
        for tier, colour in COLOURS.items():
            mine = [p for p in self.points if p.tier == tier]
            if mine:
                axes.scatter([p.sent_at for p in mine], [p.seconds for p in mine], s=28, color=colour, label=tier)
        failed = [p for p in self.points if p.tier is None]
        if failed:
            axes.scatter([p.sent_at for p in failed], [p.seconds for p in failed], s=40, marker="x", color="black",
                         label="error (HTTP status)")  # fmt: skip
        axes.set_yscale("log")
        axes.set_xlabel("request sent at (seconds since start)")
        axes.set_ylabel("latency (seconds, log scale)")
        axes.set_title(title, pad=28, fontsize=11)
        axes.legend(loc="upper right", fontsize=8)
        axes.grid(True, which="major", axis="y", alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        pyplot.close(figure)
        return path

"""Start the real LiteLLM proxy on the config the Pulumi program deploys, against loopback stand-ins.

The config is `components.fallback.render_config_yaml(settings)` — the ConfigMap's bytes — with
only each tier's `api_base` rewritten to a stand-in on 127.0.0.1. Anything else would mean testing
a different gateway from the one deployed.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from components.fallback import failover_chain, gateway_environment, gateway_files
from components.names import CONFIG_FILE_NAME, MASTER_KEY_ENV, OPENAI_KEY_ENV, PROGRESS_PROVIDER
from components.settings import Settings
from drill.client import DRILL_MASTER_KEY, chat
from drill.standins import LOOPBACK, OllamaStandIn, OpenAIStandIn, StandIn

# A stand-in for each wire protocol a tier may speak (fallback.Tier.api).
STANDIN_FOR_API = {"openai": OpenAIStandIn, "ollama": OllamaStandIn}
DRILL_OPENAI_KEY = "sk-drill-openai-key"  # reaches only the loopback stand-in
START_TIMEOUT_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _require_loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the drill only talks to loopback, refusing {url}")
    return url


def drill_files(settings: Settings, api_bases: dict[str, str], vllm_path: str = "progress") -> dict[str, str]:
    """The deployed config directory, with each tier's api_base (by tier id) pointed at loopback.

    `vllm_path="plain"` swaps vLLM's progress handler for LiteLLM's stock `openai/` client: only
    for the benchmark's comparison, never what is deployed.
    """
    files = gateway_files(settings)
    files[CONFIG_FILE_NAME] = drill_config(files[CONFIG_FILE_NAME], api_bases, vllm_path)
    return files


def drill_config(rendered: str, api_bases: dict[str, str], vllm_path: str = "progress") -> str:
    config = yaml.safe_load(rendered)
    for entry in config["model_list"]:
        tier = entry["model_info"]["id"]
        params = entry["litellm_params"]
        params["api_base"] = _require_loopback(api_bases[tier])  # every tier: nothing leaves the machine
        if vllm_path == "plain" and params["model"].startswith(f"{PROGRESS_PROVIDER}/"):
            params["model"] = "openai/" + params["model"].split("/", 1)[1]
            for key in ("first_token_timeout", "stall_timeout", "max_queue_seconds"):
                del params[key]
            entry["model_info"].pop("health_check_params", None)
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Drill:
    """Stand-ins for every tier of `settings`, and the proxy in front of them."""

    settings: Settings
    standins: dict[str, StandIn] = field(default_factory=dict)
    proxy: subprocess.Popen | None = None
    port: int = 0
    workdir: Path | None = None
    log_path: Path | None = None
    workers: int = 1
    vllm_path: str = "progress"
    master_key: str = DRILL_MASTER_KEY
    openai_key: str = DRILL_OPENAI_KEY  # reaches only the loopback cloud stand-in

    def start_standins(self) -> dict[str, str]:
        """A stand-in for every tier of the chain; the api_base of each, by tier id."""
        bases = {}
        for tier in failover_chain(self.settings):
            standin = STANDIN_FOR_API[tier.api](tier.name, tier.served_model, free_port()).start()
            self.standins[tier.name] = standin
            bases[tier.name] = f"{standin.url}{tier.api_path}"
        return bases

    def start(self) -> Drill:
        bases = self.start_standins()
        self.workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-drill-"))
        for name, text in drill_files(self.settings, bases, self.vllm_path).items():
            (self.workdir / name).write_text(text)
        config_path = self.workdir / CONFIG_FILE_NAME
        self.port = free_port()
        self.log_path = self.workdir / "proxy.log"
        env = {
            **os.environ,
            **gateway_environment(self.settings.gateway, failover_chain(self.settings)),
            MASTER_KEY_ENV: self.master_key,
            OPENAI_KEY_ENV: self.openai_key,
            "LITELLM_LOG": os.environ.get("DRILL_LITELLM_LOG", "ERROR"),  # INFO or DEBUG to investigate
            "NO_PROXY": "*",
        }
        command = [
            str(Path(sys.executable).with_name("litellm")),
            "--config",
            str(config_path),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        if self.workers > 1:
            command += ["--num_workers", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.proxy = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"LiteLLM exited with {self.proxy.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/readiness", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"LiteLLM not ready after {START_TIMEOUT_SECONDS} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        """Stop what this drill started: the proxy (its own process group, by PID) and the stand-ins."""
        if self.proxy is not None and self.proxy.poll() is None:
            os.killpg(self.proxy.pid, signal.SIGTERM)
            try:
                self.proxy.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proxy.pid, signal.SIGKILL)
                self.proxy.wait(5)
        for standin in self.standins.values():
            standin.stop()

    @property
    def cloud(self) -> StandIn | None:
        """The stand-in of the tier outside the cluster (None without a cloud tier)."""
        outside = [tier.name for tier in failover_chain(self.settings) if not tier.in_cluster]
        return self.standins[outside[0]] if outside else None

    def counts(self) -> dict[str, int]:
        return {tier: standin.client_requests for tier, standin in self.standins.items()}

    def reset_counts(self) -> None:
        for standin in self.standins.values():
            standin.reset_counts()

    def wait_for_tier(self, tier: str, limit: float = 30.0) -> float:
        """Seconds until the gateway routes a request to `tier` (a previous fault may still be cooling down)."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if chat(self.url, self.settings.gateway.model_name).tier == tier:
                return time.monotonic() - started
            time.sleep(0.5)
        raise AssertionError(f"the gateway did not route to {tier} within {limit} s")

    def all_up(self) -> None:
        for standin in self.standins.values():
            standin.set_mode("up")

    def enter_phase(self, modes: dict[str, str]) -> None:
        """Every tier up but those named, which take the given fault mode."""
        self.all_up()
        for tier, mode in modes.items():
            self.standins[tier].set_mode(mode)

    def __enter__(self) -> Drill:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

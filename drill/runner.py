"""Start the real LiteLLM proxy on the config the Pulumi program deploys, against loopback stand-ins.

The config is `core.litellm_config.render_config_yaml(settings)` — the ConfigMap's bytes — with
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

from core.chain import all_tiers, chains
from core.gateway_pod import gateway_environment, gateway_files
from core.names import (
    CONFIG_FILE_NAME,
    MASTER_KEY_ENV,
    OPENAI_KEY_ENV,
    PROGRESS_PROVIDER,
    REDIS_URL_ENV,
    secret_env_name,
)
from core.settings import Settings, chain_secret_keys
from drill.client import DRILL_MASTER_KEY, chat
from drill.standins import LOOPBACK, OllamaStandIn, OpenAIStandIn, StandIn, cloud_snapshot

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


def drill_files(
    settings: Settings,
    api_bases: dict[str, str],
    vllm_path: str = "progress",
    trial_settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """The deployed config directory, with each tier's api_base (by tier id) pointed at loopback.

    `vllm_path="plain"` swaps vLLM's progress handler for LiteLLM's stock `openai/` client, and
    `trial_settings` adds LiteLLM settings by section (`{"litellm_settings": {...}}`): only for the
    benchmark's comparisons, never what is deployed.
    """
    files = gateway_files(settings)
    config = yaml.safe_load(drill_config(files[CONFIG_FILE_NAME], api_bases, vllm_path))
    for section, values in (trial_settings or {}).items():
        config[section] = {**config.get(section, {}), **values}
    files[CONFIG_FILE_NAME] = yaml.safe_dump(config, sort_keys=False)
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
class GatewayProcess:
    """One real LiteLLM proxy on loopback, as one gateway replica: started, stopped, restarted by PID."""

    command: list[str]
    env: dict[str, str]
    workdir: Path
    name: str = "proxy"
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> GatewayProcess:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        self.port = free_port()
        command = [*self.command, "--host", LOOPBACK, "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"LiteLLM exited with {self.process.returncode}:\n{self.log_tail()}")
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
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to its own process group (LiteLLM drains), SIGKILL if it does not exit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@dataclass
class Drill:
    """Stand-ins for every tier of `settings`, and the proxy (or several, a fleet) in front of them."""

    settings: Settings
    standins: dict[str, StandIn] = field(default_factory=dict)
    gateways: list[GatewayProcess] = field(default_factory=list)
    workdir: Path | None = None
    workers: int = 1
    vllm_path: str = "progress"
    master_key: str = DRILL_MASTER_KEY
    openai_key: str = DRILL_OPENAI_KEY  # reaches only the loopback cloud stand-in
    redis_url: str | None = None  # the fleet's shared state (the pod gets it from a Secret)
    replicas: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)  # the benchmark's trials of LiteLLM's switches
    trial_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # likewise, in config.yaml

    def start_standins(self) -> dict[str, str]:
        """A stand-in for every tier of every chain; the api_base of each, by tier id."""
        bases = {}
        for tier in all_tiers(self.settings):
            # The cloud answers with the dated model behind the name it was asked for, as OpenAI does.
            cloud = {} if tier.in_cluster else {"snapshot": cloud_snapshot(tier.served_model)}
            # An embeddings tier serves its declared model: the same vectors on every tier of its chain.
            embeds = {"embedding_model": tier.embedding[0], "dimensions": tier.embedding[1]} if tier.embedding else {}
            standin = STANDIN_FOR_API[tier.api](tier.name, tier.served_model, free_port(), **cloud, **embeds)
            standin.context_tokens = tier.context_tokens  # as the pod gives it (vLLM's stand-in ignores it)
            standin.start()
            self.standins[tier.name] = standin
            bases[tier.name] = f"{standin.url}{tier.api_path}"
        return bases

    def start(self) -> Drill:
        bases = self.start_standins()
        self.workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-drill-"))
        for name, text in drill_files(self.settings, bases, self.vllm_path, self.trial_settings).items():
            (self.workdir / name).write_text(text)
        fleet = [self.new_gateway() for _ in range(self.replicas)]
        try:
            for gateway in fleet:  # all start at once, as a Deployment's pods do
                gateway.launch()
            for gateway in fleet:
                gateway.wait_ready()
        except RuntimeError:
            self.stop()
            raise
        return self

    def new_gateway(self) -> GatewayProcess:
        """One more proxy (not started) on the same config directory, stand-ins and Redis."""
        env = {
            **os.environ,
            **gateway_environment(self.settings.gateway, chains(self.settings)),
            MASTER_KEY_ENV: self.master_key,
            OPENAI_KEY_ENV: self.openai_key,
            **{secret_env_name(key): self.openai_key for key in chain_secret_keys(self.settings)},
            "LITELLM_LOG": os.environ.get("DRILL_LITELLM_LOG", "ERROR"),  # INFO or DEBUG to investigate
            "NO_PROXY": "*",
            **({REDIS_URL_ENV: self.redis_url} if self.redis_url else {}),
            **self.extra_env,
        }
        command = [str(Path(sys.executable).with_name("litellm")), "--config", str(self.workdir / CONFIG_FILE_NAME)]
        if self.workers > 1:
            command += ["--num_workers", str(self.workers)]
        gateway = GatewayProcess(command, env, self.workdir, name=f"proxy-{len(self.gateways)}")
        self.gateways.append(gateway)
        return gateway

    @property
    def proxy(self) -> subprocess.Popen | None:
        return self.gateways[0].process if self.gateways else None

    @property
    def port(self) -> int:
        return self.gateways[0].port

    @property
    def url(self) -> str:
        return self.gateways[0].url

    @property
    def log_path(self) -> Path | None:
        return self.gateways[0].log_path if self.gateways else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(gateway.log_tail(lines) for gateway in self.gateways)

    def stop(self) -> None:
        """Stop what this drill started: the proxies (each its own process group, by PID) and the stand-ins."""
        for gateway in self.gateways:
            gateway.stop()
        for standin in self.standins.values():
            standin.stop()

    @property
    def cloud(self) -> StandIn | None:
        """The stand-in of the tier outside the cluster (None without a cloud tier)."""
        outside = [tier.name for tier in all_tiers(self.settings) if not tier.in_cluster]
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

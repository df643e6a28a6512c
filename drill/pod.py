"""Run the gateway the way its rendered Deployment says, without a cluster: bubblewrap as the kubelet.

The test hands over the objects the Pulumi program registered (Deployment, ConfigMaps, Secrets, as
plain manifests); this module never imports Pulumi. From the pod spec it takes:
- the container's args, after the image's entrypoint (`prod_entrypoint.sh` execs `litellm "$@"`);
- the image's own ENV (docker/Dockerfile.non_root of BerriAI/litellm), then the container's env on
  top, `secretKeyRef` resolved from the rendered Secrets;
- `runAsUser` / `runAsGroup` (a user namespace: a UID no passwd file here knows), a read-only root
  when `readOnlyRootFilesystem` says so, every emptyDir (and claim) as a tmpfs, every configMap and
  secret volume laid out as the kubelet lays it out (`..data` → a timestamped directory, each key
  a symlink). These pieces also run the Redis pod (tests/test_redis_pod.py);
- the probes (startup, readiness, liveness) on the spec's paths and ports, as the kubelet runs them;
- termination as the kubelet does it: the preStop action, SIGTERM, then SIGKILL after
  `terminationGracePeriodSeconds`.
The only change to the rendered bytes is the one the drill always makes: each tier's `api_base` in
config.yaml points at a loopback stand-in (drill.runner.drill_config).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drill.runner import drill_config
from drill.standins import LOOPBACK

# What the image itself sets (BerriAI/litellm docker/Dockerfile.non_root, runtime stage: `ENV ...`
# and `USER nobody`); the container's env is applied on top, as the container runtime does.
LITELLM_IMAGE_ENV = {
    "HOME": "/app",
    "LITELLM_NON_ROOT": "true",
    "XDG_CACHE_HOME": "/app/.cache",
    "PRISMA_BINARY_CACHE_DIR": "/app/.cache/prisma-python/binaries",
    "PRISMA_OFFLINE_MODE": "true",
    "PRISMA_SKIP_POSTINSTALL_GENERATE": "1",
}
# `exec litellm "$@"` (docker/prod_entrypoint.sh): here, the pinned litellm of this venv.
LITELLM_ENTRYPOINT = [str(Path(sys.executable).with_name("litellm"))]


def bubblewrap() -> str | None:
    return shutil.which("bwrap")


def config_map_volume(directory: Path, data: dict[str, str]) -> Path:
    """The kubelet's layout: files in `..<timestamp>/`, `..data` → it, each key → `..data/<key>`."""
    stamp = directory / time.strftime("..%Y_%m_%d_%H_%M_%S.000000001")
    stamp.mkdir(parents=True)
    for name, text in data.items():
        (stamp / name).write_text(text)
        (directory / name).symlink_to(Path("..data") / name)
    (directory / "..data").symlink_to(stamp.name)
    return directory


def container_environment(
    container: dict[str, Any], secrets: dict[str, dict[str, str]], image_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The image's ENV, then the container's env on top (`secretKeyRef` resolved), as a runtime does."""
    env = dict(image_env or {})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def volume_args(
    spec: dict[str, Any],
    container: dict[str, Any],
    config_map_data: Callable[[str], dict[str, str]],
    secrets: dict[str, dict[str, str]],
    workdir: Path,
) -> list[str]:
    """bubblewrap mounts for the container's volumes: emptyDirs and claims as empty tmpfs (a new
    claim is empty and writable by the pod's fsGroup), configMaps and Secrets in the kubelet's layout."""
    args: list[str] = []
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume, path = volumes[mount["name"]], mount["mountPath"]
        # A container runtime creates mount points in the container's own root; inside a
        # read-only bind of this machine's root they must exist already.
        Path(path).mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:
            args += ["--tmpfs", path]
            continue
        if "configMap" in volume:
            data = config_map_data(volume["configMap"]["name"])
        elif "secret" in volume:
            data = secrets[volume["secret"]["secretName"]]
        else:
            raise ValueError(f"volume {mount['name']}: only emptyDir, claims, configMap and secret are emulated")
        source = config_map_volume(workdir / mount["name"], data)
        args += ["--ro-bind" if mount.get("readOnly") else "--bind", str(source), path]
    return args


def container_sandbox(
    spec: dict[str, Any], container: dict[str, Any], environment: dict[str, str], volumes: list[str]
) -> list[str]:
    """bubblewrap as the container runtime: the spec's UID and GID in a user namespace, a read-only
    root, its own PID and IPC namespaces, only the container's environment, its volumes. The caller
    adds what differs (PID 1, a network namespace, the working directory) and the command."""
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    user, group = security["runAsUser"], security.get("runAsGroup", security["runAsUser"])
    if security.get("runAsNonRoot") and user == 0:
        raise ValueError("runAsNonRoot with runAsUser 0: the kubelet would refuse this pod")
    if not security.get("readOnlyRootFilesystem"):
        raise ValueError("only a read-only root is emulated (a writable one would write to this machine)")
    sandbox = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev"]
    sandbox += ["--unshare-user", "--uid", str(user), "--gid", str(group), "--unshare-ipc", "--unshare-pid"]
    sandbox += ["--die-with-parent", "--clearenv"]
    for name, value in environment.items():
        sandbox += ["--setenv", name, value]
    return [*sandbox, *volumes, "--proc", "/proc"]


@dataclass
class EmulatedPod:
    """One gateway pod from its Deployment manifest (the first container)."""

    deployment: dict[str, Any]
    config_maps: dict[str, dict[str, str]]  # name → data
    secrets: dict[str, dict[str, str]]  # name → stringData
    api_bases: dict[str, str]  # tier id → loopback stand-in
    process: subprocess.Popen | None = None
    child_pid: int | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llm-gateway-pod-")))

    @property
    def spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        return self.spec["containers"][0]

    @property
    def port(self) -> int:
        return self.container["ports"][0]["containerPort"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def environment(self) -> dict[str, str]:
        return container_environment(self.container, self.secrets, LITELLM_IMAGE_ENV)

    def _config_map_data(self, name: str) -> dict[str, str]:
        data = dict(self.config_maps[name])
        if "config.yaml" in data:
            data["config.yaml"] = drill_config(data["config.yaml"], self.api_bases)
        return data

    def command(self, info_fd: int) -> list[str]:
        volumes = volume_args(self.spec, self.container, self._config_map_data, self.secrets, self.workdir)
        sandbox = container_sandbox(self.spec, self.container, self.environment(), volumes)
        # The entrypoint as PID 1 of the container's own PID namespace: when it exits, every other
        # process of the container goes with it, as in a pod.
        sandbox += ["--as-pid-1", "--info-fd", str(info_fd), "--chdir", "/"]
        return [*sandbox, *LITELLM_ENTRYPOINT, *self.container.get("args", [])]

    def start(self) -> EmulatedPod:
        # A pod has its own network namespace; this one shares the machine's loopback, so its
        # port must be free, or probes and clients would reach whatever else listens there.
        with socket.socket() as taken:
            if taken.connect_ex((LOOPBACK, self.port)) == 0:
                raise RuntimeError(f"port {self.port} is in use: one emulated pod at a time")
        read_end, write_end = os.pipe()
        command = self.command(write_end)
        log = open(self.workdir / "pod.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_end,), start_new_session=True
        )
        os.close(write_end)
        with os.fdopen(read_end) as info:
            self.child_pid = json.loads(info.read())["child-pid"]  # bwrap closes the fd after writing
        return self

    # ---- the kubelet's probes ----
    def probe(self, kind: str) -> bool:
        probe = self.container[kind]
        target = probe["httpGet"]
        url = f"http://{LOOPBACK}:{target['port']}{target['path']}"
        try:
            with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as response:
                return 200 <= response.status < 400
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_started(self) -> float:
        """Run the startup probe as the kubelet does; seconds until it passed."""
        probe = self.container["startupProbe"]
        started = time.monotonic()
        for _ in range(probe["failureThreshold"]):
            if self.process.poll() is not None:
                raise RuntimeError(f"the container exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.probe("startupProbe"):
                return time.monotonic() - started
            time.sleep(probe["periodSeconds"])
        raise RuntimeError(f"startup probe failed {probe['failureThreshold']} times:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "pod.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- the kubelet's termination ----
    def terminate(self) -> float:
        """preStop, SIGTERM, SIGKILL after the grace period. Seconds from SIGTERM to exit."""
        pre_stop = self.container.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre_stop:
            time.sleep(pre_stop["sleep"]["seconds"])
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        signalled = time.monotonic()
        os.kill(self.child_pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        return time.monotonic() - signalled

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

"""Run the gateway the way its rendered Deployment says, without a cluster: bubblewrap as the kubelet.

The test hands over the objects the Pulumi program registered (Deployment, ConfigMaps, Secrets, as
plain manifests); this module never imports Pulumi. From the pod spec it takes:
- the container's args, after the image's entrypoint (`prod_entrypoint.sh` execs `litellm "$@"`);
- the image's own ENV (docker/Dockerfile.non_root of BerriAI/litellm), then the service links the
  kubelet adds from the rendered Services, then the container's env on top, `secretKeyRef` resolved
  from the rendered Secrets;
- `runAsUser` / `runAsGroup` (a user namespace: a UID no passwd file here knows), a read-only root
  when `readOnlyRootFilesystem` says so, every emptyDir (and claim) as a tmpfs, every configMap and
  secret volume laid out as the kubelet lays it out (`..data` → a timestamped directory, each key
  a symlink). These pieces also run the Redis pod (tests/test_redis_pod.py);
- the probes (startup, readiness, liveness) on the spec's paths and ports, as the kubelet runs them;
- termination as the kubelet does it: the preStop hook (an exec runs inside the container), SIGTERM,
  then SIGKILL when what is left of `terminationGracePeriodSeconds` has passed.
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

from core.stack_files import ROOT
from drill.runner import drill_config
from drill.standins import LOOPBACK

# What the image itself sets (BerriAI/litellm docker/Dockerfile.non_root, runtime stage: `ENV ...`
# and `USER nobody`); the container's env is applied on top, as the container runtime does.
LITELLM_IMAGE_ENV = {
    # `ENV PATH="/app/.venv/bin:${PATH}"`: this venv stands in for /app/.venv.
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/app",
    "LITELLM_NON_ROOT": "true",
    "XDG_CACHE_HOME": "/app/.cache",
    "PRISMA_BINARY_CACHE_DIR": "/app/.cache/prisma-python/binaries",
    "PRISMA_OFFLINE_MODE": "true",
    "PRISMA_SKIP_POSTINSTALL_GENERATE": "1",
}
# kuberuntime_container.go killContainer: however long preStop took, SIGTERM gets at least this.
MINIMUM_GRACE_SECONDS = 2
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


# The API server's own Service in `default`: the kubelet gives every pod its variables, service links
# on or off (kubernetes pkg/kubelet/kubelet_pods.go: masterServices, getServiceEnvVarMap).
MASTER_SERVICE = {
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
}
# Rendered Services have no cluster IP yet (the API server assigns one): these stand in for it.
CLUSTER_IP_PREFIX = "10.96.1."


def link_name(name: str) -> str:
    """envvars.go makeEnvVariableName: upper case, `-` and `.` to `_`, a leading digit prefixed."""
    name = name.replace(".", "_").replace("-", "_").upper()
    return f"_{name}" if name[:1].isdigit() else name


def service_link_variables(service: dict[str, Any]) -> dict[str, str]:
    """envvars.go FromServices for one Service with a cluster IP (an IPv4 one: IPv6 would be bracketed)."""
    prefix, ip, ports = link_name(service["metadata"]["name"]), service["spec"]["clusterIP"], service["spec"]["ports"]
    variables = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
    for port in ports:
        if port.get("name"):
            variables[f"{prefix}_SERVICE_PORT_{link_name(port['name'])}"] = str(port["port"])
    for index, port in enumerate(ports):  # the Docker-link style ones
        protocol = port.get("protocol", "TCP")
        url = f"{protocol.lower()}://{ip}:{port['port']}"
        if index == 0:
            variables[f"{prefix}_PORT"] = url
        port_prefix = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
        variables[port_prefix] = url
        variables[f"{port_prefix}_PROTO"] = protocol.lower()
        variables[f"{port_prefix}_PORT"] = str(port["port"])
        variables[f"{port_prefix}_ADDR"] = ip
    return variables


def service_environment(spec: dict[str, Any], namespace: str, services: list[dict[str, Any]]) -> dict[str, str]:
    """kubelet_pods.go getServiceEnvVarMap: the `kubernetes` Service of `default` always; every Service
    of the pod's namespace only with service links on (`enableServiceLinks`, true unless set false)."""
    links = spec.get("enableServiceLinks", True)
    chosen: dict[str, dict[str, Any]] = {}
    by_name = sorted(services, key=lambda service: service["metadata"]["name"])
    for index, service in enumerate([MASTER_SERVICE, *by_name]):
        name, space = service["metadata"]["name"], service["metadata"].get("namespace")
        if service["spec"].get("clusterIP") == "None":  # headless: no variables
            continue
        service = {**service, "spec": {"clusterIP": f"{CLUSTER_IP_PREFIX}{index}", **service["spec"]}}
        if space == "default" and name == "kubernetes":
            chosen.setdefault(name, service)
        elif space == namespace and links:
            chosen[name] = service
    return {name: value for service in chosen.values() for name, value in service_link_variables(service).items()}


def container_environment(
    container: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    image_env: dict[str, str] | None = None,
    service_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The image's ENV; over it what the kubelet passes: the service links, and the container's env
    (`secretKeyRef` resolved), which wins over a service link of the same name (makeEnvironmentVariables)."""
    if any("$(" in item.get("value", "") for item in container.get("env", [])):
        raise ValueError("`$(VAR)` references in env values are not emulated")
    env = {**(image_env or {}), **(service_env or {})}
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
    directories: dict[str, Path] | None = None,
) -> list[str]:
    """bubblewrap mounts for the container's volumes: emptyDirs and claims as empty tmpfs (a new
    claim is empty and writable by the pod's fsGroup), configMaps and Secrets in the kubelet's layout.
    A volume named in `directories` is that directory instead: shared by the pod's containers, and a
    claim kept across pods (the Ollama pod's models)."""
    args: list[str] = []
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume, path = volumes[mount["name"]], mount["mountPath"]
        # A container runtime creates mount points in the container's own root; inside a
        # read-only bind of this machine's root they must exist already.
        Path(path).mkdir(parents=True, exist_ok=True)
        if mount["name"] in (directories or {}):
            args += ["--bind", str(directories[mount["name"]]), path]
            continue
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
    mount_paths = [Path(mount["mountPath"]) for mount in container.get("volumeMounts", [])]
    return [*sandbox, *volumes, *image_stand_in_binds(mount_paths), "--proc", "/proc"]


def image_stand_in_binds(mount_paths: list[Path]) -> list[str]:
    """This checkout and its Python stand in for the image's own files. A volume mounted where they lie
    (a checkout under /tmp, the pod's /tmp emptyDir) would hide them: bind them back on top, read-only."""
    wanted = sorted({Path(sys.prefix), Path(sys.base_prefix), ROOT})
    hidden = [path for path in wanted if any(path.is_relative_to(mount) for mount in mount_paths)]
    outermost = [path for path in hidden if not any(path != other and path.is_relative_to(other) for other in hidden)]
    return [arg for path in outermost for arg in ("--ro-bind", str(path), str(path))]


@dataclass
class RenderedPod:
    """A pod as its rendered Deployment describes it (the first container is the one that serves)."""

    deployment: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        return self.spec["containers"][0]


@dataclass
class EmulatedPod(RenderedPod):
    """One gateway pod from its Deployment manifest (the first container)."""

    config_maps: dict[str, dict[str, str]]  # name → data
    secrets: dict[str, dict[str, str]]  # name → stringData
    api_bases: dict[str, str]  # tier id → loopback stand-in
    services: list[dict[str, Any]]  # the rendered Services: the kubelet's service links come from them
    process: subprocess.Popen | None = None
    child_pid: int | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llm-gateway-pod-")))

    @property
    def port(self) -> int:
        return self.container["ports"][0]["containerPort"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def environment(self) -> dict[str, str]:
        links = service_environment(self.spec, self.deployment["metadata"]["namespace"], self.services)
        return container_environment(self.container, self.secrets, LITELLM_IMAGE_ENV, links)

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

    def exec_in_container(self, command: list[str], timeout: float) -> subprocess.CompletedProcess:
        """What a CRI exec does: the command inside the running container (its user, mount, PID and IPC
        namespaces) with the container's environment."""
        enter = [shutil.which("nsenter"), "--target", str(self.child_pid), "--user", "--mount", "--pid", "--ipc"]
        # Our UID outside is the container's UID inside: keep it (nsenter would otherwise ask for 0).
        enter += ["--preserve-credentials", "--"]
        return subprocess.run(
            [*enter, *command], env=self.environment(), capture_output=True, text=True, timeout=timeout, check=False
        )

    # ---- the kubelet's termination ----
    def run_pre_stop(self, grace: int) -> float:
        """The preStop hook, bounded by the grace period (kuberuntime_container.go executePreStopHook).
        Seconds it took. The kubelet only records a hook that failed (FailedPreStopHook) and goes on;
        this raises, so that a hook that cannot run in the image fails a test instead."""
        hook = self.container.get("lifecycle", {}).get("preStop")
        started = time.monotonic()
        if hook is None:
            return 0.0
        if "sleep" in hook:
            time.sleep(hook["sleep"]["seconds"])
        elif "exec" in hook:
            result = self.exec_in_container(hook["exec"]["command"], timeout=grace)
            if result.returncode != 0:
                raise RuntimeError(f"preStop exec failed ({result.returncode}): {result.stderr[-500:]}")
        else:
            raise ValueError(f"preStop {sorted(hook)}: only sleep and exec are emulated")
        return time.monotonic() - started

    def terminate(self) -> float:
        """preStop, SIGTERM, SIGKILL once the grace period is spent. Seconds from SIGTERM to exit."""
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        hook_seconds = self.run_pre_stop(grace)
        # killContainer: the hook's whole seconds come off the grace period, never below 2 s.
        left = max(grace - int(hook_seconds), MINIMUM_GRACE_SECONDS)
        signalled = time.monotonic()
        os.kill(self.child_pid, signal.SIGTERM)
        try:
            self.process.wait(left)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        return time.monotonic() - signalled

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

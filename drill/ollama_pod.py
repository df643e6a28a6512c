"""Run the Ollama pod the way its rendered Deployment says, without a cluster, on the `ollama` stand-in.

Like drill/pod.py (whose sandbox pieces it uses), this module never imports Pulumi: the test hands
over the Deployment's manifest. What it does as the kubelet would:
- one network namespace for the pod (a "pause" process, `unshare --net`), which every container and
  every probe joins: the containers' `0.0.0.0:11434` and `127.0.0.1:11434` are the pod's own, out of
  reach of this machine and of other tests;
- each container in its own bubblewrap sandbox (the spec's UID, a read-only root, its env over the
  image's ENV and the service links), with the pod's volumes as directories: the models claim is a
  directory kept across pods (a PersistentVolume), the emptyDirs are new with each pod;
- init containers run to completion in order; then the container with the image's entrypoint
  (`/bin/ollama`) and its args; exec probes run the rendered command in a sandbox of that container.
The image is ollama/ollama (Dockerfile at v0.12.6: Ubuntu 24.04 with /bin/sh, bash, coreutils,
grep; no curl or wget), its /bin/ollama the stand-in drill/ollama_cli.py. Two things are added to
the environment, and nothing in the rendered commands changes: where the stand-in finds registry.ollama.ai (a
registry stand-in inside the pod's network namespace, which the test starts and stops), and how
long a model load takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drill.ollama_cli import POOLING_KEY
from drill.pod import RenderedPod, container_environment, container_sandbox, service_environment, volume_args

STANDIN = Path(__file__).resolve().parent / "ollama_cli.py"
STANDIN_BIN = Path(__file__).resolve().parent / "ollama_bin"
REGISTRY_PORT = 5000  # inside the pod's network namespace only
# ollama/ollama v0.12.6 Dockerfile, the final stage's ENV; the stand-in first on PATH.
OLLAMA_IMAGE_ENV = {
    "PATH": f"{STANDIN_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "OLLAMA_HOST": "0.0.0.0:11434",
}
ENTRYPOINT = ["ollama"]  # /bin/ollama


def usable() -> bool:
    return all(shutil.which(tool) for tool in ("bwrap", "unshare", "nsenter", "ip")) and os.geteuid() == 0


@dataclass
class OllamaPod(RenderedPod):
    """One Ollama pod: `deployment` is the rendered manifest, `claim` the models volume's directory."""

    claim: Path
    load_seconds: float = 0.3
    services: list[dict[str, Any]] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llm-gateway-ollama-pod-")))
    pause: subprocess.Popen | None = None
    registry: subprocess.Popen | None = None
    main: subprocess.Popen | None = None

    # ---- the pod's network namespace, and what runs in it ----
    def start(self) -> OllamaPod:
        self.pause = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec sleep 3600"], start_new_session=True
        )
        for _ in range(50):  # bounded: the loopback comes up in milliseconds
            up = subprocess.run(self._enter(["ip", "-o", "link", "show", "lo", "up"]), capture_output=True, text=True)
            if "LOOPBACK" in up.stdout:
                return self
            time.sleep(0.05)
        raise RuntimeError("the pod's network namespace did not come up")

    def _enter(self, command: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pause.pid}/ns/net", "--", *command]

    def start_registry(self, store: Path) -> None:
        """registry.ollama.ai as the pod sees it: the stand-in registry, serving `store`."""
        self.registry = subprocess.Popen(
            self._enter(["python3", str(STANDIN), "registry", str(store), str(REGISTRY_PORT)]), start_new_session=True
        )
        for _ in range(100):
            probe = self._enter(
                ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {REGISTRY_PORT}))"]
            )
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("the registry stand-in did not start")

    def stop_registry(self) -> None:
        """The registry refuses from now on: nothing listens at its address."""
        _end(self.registry)
        self.registry = None

    # ---- containers ----
    def _sandbox(self, container: dict[str, Any]) -> list[str]:
        namespace = self.deployment["metadata"].get("namespace", "default")
        environment = container_environment(
            container, {}, self._image_env(), service_environment(self.spec, namespace, self.services)
        )
        volumes = volume_args(self.spec, container, lambda name: {}, {}, self.workdir, self._directories())
        return self._enter([*container_sandbox(self.spec, container, environment, volumes), "--chdir", "/"])

    def _image_env(self) -> dict[str, str]:
        return {
            **OLLAMA_IMAGE_ENV,
            "OLLAMA_STANDIN_REGISTRY": f"http://127.0.0.1:{REGISTRY_PORT}",
            "OLLAMA_STANDIN_LOAD_SECONDS": str(self.load_seconds),
        }

    def _directories(self) -> dict[str, Path]:
        directories = {}
        for volume in self.spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                directories[volume["name"]] = self.claim
            else:  # an emptyDir: the pod's own, shared by its containers
                directories[volume["name"]] = self.workdir / "volumes" / volume["name"]
                directories[volume["name"]].mkdir(parents=True, exist_ok=True)
        return directories

    def run_init(self, index: int = 0, timeout: float = 120) -> subprocess.CompletedProcess:
        """One init container, to its end: its exit code and its log."""
        container = self.spec["initContainers"][index]
        command = [*self._sandbox(container), *container["command"], *container.get("args", [])]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def start_main(self) -> None:
        command = [*self._sandbox(self.container), *ENTRYPOINT, *self.container.get("args", [])]
        log = open(self.workdir / "ollama.log", "wb")  # noqa: SIM115 - closed with the process
        self.main = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        path = self.workdir / "ollama.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- the kubelet's exec probes, and `kubectl exec` ----
    def exec(self, command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._sandbox(self.container), *command], capture_output=True, text=True, timeout=timeout
        )

    def probe(self, kind: str) -> bool:
        probe = self.container[kind]
        try:
            return self.exec(probe["exec"]["command"], timeout=probe["timeoutSeconds"]).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def wait_started(self) -> float:
        """The startup probe as the kubelet runs it, once the server listens; seconds until it passed."""
        probe, started = self.container["startupProbe"], time.monotonic()
        for _ in range(100):  # the stand-in server starts in well under a second
            if self.exec(["ollama", "list"]).returncode == 0:
                break
            time.sleep(0.1)
        for _ in range(probe["failureThreshold"]):
            if self.probe("startupProbe"):
                return time.monotonic() - started
            time.sleep(probe["periodSeconds"])
        raise RuntimeError(f"startup probe failed {probe['failureThreshold']} times:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        for process in (self.main, self.registry, self.pause):
            _end(process)
        self.main = self.registry = self.pause = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def _end(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def publish(store: Path, model: str, weights: bytes, parameters: dict[str, Any], *, embedding: bool = False) -> str:
    """Put `model` (`name:tag` of the library namespace) in the registry stand-in's `store`, as
    registry.ollama.ai serves it: blobs and a manifest. Returns the digest the pulled model will
    have (the sha256 of the manifest as the puller writes it, Go's json.Marshal: compact).
    `embedding`: its weights carry a pooling type, as an embedding model's GGUF does (bge-m3)."""
    import hashlib
    import json

    if embedding:
        weights += b"\0" + POOLING_KEY

    def blob(media_type: str, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (store / "blobs").mkdir(parents=True, exist_ok=True)
        (store / "blobs" / digest.replace(":", "-")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    name, tag = model.split(":")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": blob("application/vnd.docker.container.image.v1+json", b'{"model_format":"gguf"}'),
        "layers": [
            blob("application/vnd.ollama.image.model", weights),
            blob("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
            blob("application/vnd.ollama.image.params", json.dumps(parameters).encode()),
        ],
    }
    text = json.dumps(manifest, separators=(",", ":"))
    (store / "library" / name).mkdir(parents=True, exist_ok=True)
    (store / "library" / name / f"{tag}.json").write_text(text)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

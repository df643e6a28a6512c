"""Ollama on CPU: the secondary tier. A PVC for the models, a Deployment and a Service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components import kube
from components.backend import expose_to_gateway, model_volume, recreated_deployment
from components.names import OLLAMA_PORT, OLLAMA_SERVICE
from components.settings import OllamaSettings

MODELS_PATH = "/models"
HOME_PATH = "/home/ollama"

# Start a private server, pull the model onto the PVC, stop the server. A model already on the
# volume is only checked, so restarts are quick.
PULL_SCRIPT = """\
ollama serve &
server=$!
tries=0
until ollama list >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -gt "$SERVER_START_SECONDS" ] && { echo "ollama did not start" >&2; exit 1; }
  sleep 1
done
timeout "$PULL_TIMEOUT_SECONDS" ollama pull "$OLLAMA_MODEL"
status=$?
kill "$server"
exit "$status"
"""
# Load the model into memory (Ollama's FAQ: `ollama run <model> ""` preloads it). Idempotent and
# quick once it is loaded; OLLAMA_KEEP_ALIVE=-1 then keeps it there.
WARM_UP = ["/bin/sh", "-c", 'ollama run "$OLLAMA_MODEL" "" >/dev/null']
# Ready only while the model is resident (`ollama ps` reads /api/ps).
MODEL_RESIDENT = ["/bin/sh", "-c", 'ollama ps | grep -qF -- "$OLLAMA_MODEL"']
IMAGE_PULL_SECONDS = 300  # the Ollama image is a few GB
SERVER_START_SECONDS = 60  # the pull script waits this long for its private server
# The image sets NVIDIA_VISIBLE_DEVICES=all: on a node whose default runtime is nvidia the "CPU"
# tier would load its model into VRAM and keep it (OLLAMA_KEEP_ALIVE=-1), and vLLM could not start.
# "void" makes the NVIDIA runtime behave like runc (no device, no driver); CUDA_VISIBLE_DEVICES=-1
# is Ollama's own documented way to force the CPU.
NO_GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "-1"}


@dataclass(frozen=True)
class OllamaArgs:
    ollama: OllamaSettings
    placement: kube.Placement


class OllamaBackend(pulumi.ComponentResource):
    """Serves `ollama.model` at `http://ollama.<namespace>...:11434`, pulled before it is ready."""

    def __init__(self, name: str, args: OllamaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:OllamaBackend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        placement, ollama = args.placement, args.ollama
        namespace, instance = placement.namespace, placement.instance
        labels = kube.labels(OLLAMA_SERVICE, instance, "inference")

        models = model_volume(
            f"{name}-models",
            f"{OLLAMA_SERVICE}-models",
            ollama.storage_size,
            ollama.storage_class_name,
            namespace,
            labels,
            child,
        )
        pod_spec = self._pod_spec(ollama, models.metadata.name)
        init_seconds = SERVER_START_SECONDS + ollama.pull_timeout_seconds
        # The models volume is ReadWriteOnce: the old pod must let go before the new mounts it.
        deployment = recreated_deployment(
            name,
            OLLAMA_SERVICE,
            placement,
            labels,
            pod_spec,
            kube.image_skips(ollama),
            IMAGE_PULL_SECONDS,
            child,
            init_seconds=init_seconds,
        )
        service = expose_to_gateway(name, OLLAMA_SERVICE, OLLAMA_PORT, placement, labels, child)
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"deploymentName": self.deployment_name, "serviceName": self.service_name})

    @staticmethod
    def _pod_spec(ollama: OllamaSettings, models_claim: pulumi.Input[str]) -> dict[str, Any]:
        common_env = {
            "HOME": HOME_PATH,
            "OLLAMA_MODELS": MODELS_PATH,
            "OLLAMA_MODEL": ollama.model,
            **({} if ollama.gpu else NO_GPU_ENV),
        }
        mounts = [
            {"name": "models", "mountPath": MODELS_PATH},
            {"name": "home", "mountPath": HOME_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        return {
            "automountServiceAccountToken": False,
            "securityContext": kube.pod_security_context(),
            "initContainers": [
                {
                    "name": "pull-model",
                    "image": ollama.pinned_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", PULL_SCRIPT],
                    "env": kube.env(
                        {
                            **common_env,
                            "OLLAMA_HOST": f"127.0.0.1:{OLLAMA_PORT}",
                            "PULL_TIMEOUT_SECONDS": str(ollama.pull_timeout_seconds),
                            "SERVER_START_SECONDS": str(SERVER_START_SECONDS),
                        }
                    ),
                    "resources": kube.resources(ollama.resources),
                    "securityContext": kube.container_security_context(read_only_root=True),
                    "volumeMounts": mounts,
                }
            ],
            "containers": [
                {
                    "name": "ollama",
                    "image": ollama.pinned_image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["serve"],
                    "env": kube.env(
                        {
                            **common_env,
                            "OLLAMA_HOST": f"0.0.0.0:{OLLAMA_PORT}",
                            # A fallback tier idles most of the time; unloading the model after the
                            # default 5 min would make every first failover pay for a model load.
                            "OLLAMA_KEEP_ALIVE": "-1",
                        }
                    ),
                    "ports": [{"name": "http", "containerPort": OLLAMA_PORT, "protocol": "TCP"}],
                    "resources": kube.resources(ollama.resources),
                    "securityContext": kube.container_security_context(read_only_root=True),
                    # The init container has pulled the model; the startup probe loads it into memory,
                    # so the first request after a failover or a restart does not pay the cold load.
                    # A startup probe, not a postStart hook: a failed hook kills the container
                    # (the Ollama chart's PostHookStartError), a probe is retried.
                    "startupProbe": kube.exec_probe(WARM_UP, period=10, timeout=120, failures=5),
                    "readinessProbe": kube.exec_probe(MODEL_RESIDENT, period=5, timeout=3, failures=2),
                    "livenessProbe": kube.http_probe("/api/version", OLLAMA_PORT, period=15, timeout=5, failures=6),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": [
                {"name": "models", "persistentVolumeClaim": {"claimName": models_claim}},
                {"name": "home", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }

"""Ollama on CPU: the secondary tier. A PVC for the models, a Deployment and a Service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.backend import expose_to_gateway, model_volume, recreated_deployment
from core import kube
from core.names import OLLAMA_PORT, OLLAMA_SERVICE
from core.ollama_model import OllamaName, served_model, threads_for_cpu_limit
from core.settings import OllamaSettings

MODELS_PATH = "/models"
HOME_PATH = "/home/ollama"

# The init container. Start a private server; pull the model only if the volume lacks it (or holds
# another than the pinned one); check the pin; derive the served model; stop the server.
# - No pull when the model is there: `ollama pull` asks the registry for the manifest even then
#   (ollama v0.12.6 server/images.go, PullModel: the local manifest is read only to prune old
#   layers, never to skip "pulling manifest"), so a restart would need the internet. A manifest
#   is written only after its blobs are verified (same function), so a manifest on the volume
#   means a whole model.
# - The digest is the sha256 of the manifest file (server/manifest.go ParseNamedManifest): what
#   `ollama list` shows the first 12 hex digits of. 0.12.6 cannot pull by digest
#   (types/model/name.go), so a pin is checked after the pull and on every start.
# - Threads: the runner takes one thread per host core unless told (llm/server.go: `NumThread`, else
#   GetOptimalThreadCount), and ignores the CFS quota (ollama issue #17916: 0.27 tok/s with 8 auto
#   threads in a 4-CPU container, 12.07 tok/s with num_thread 4). 0.12.6 has no environment
#   variable for it (envconfig/config.go). A per-request option would not do: `ollama run` (the
#   warm-up) cannot send one, and a runner loaded with other runner options is reloaded
#   (server/sched.go needsReload compares `Options.Runner`). A model's own parameters are every
#   request's defaults (server/routes.go modelOptions), so the warm-up, the probe and LiteLLM all
#   load the runner alike from a model derived with `PARAMETER num_thread`. `ollama create` FROM a
#   model that is present pulls nothing (server/model.go parseFromModel); it is recreated on every
#   start, so a new CPU limit takes effect with the pod that has it.
# - Context: `PARAMETER num_ctx` (gateway.contextTokens, core/context_window.py), for the same
#   reasons: a runner option, one runner for warm-up, probe and requests. Not OLLAMA_CONTEXT_LENGTH:
#   that only sets the default under a model's own parameters (modelOptions: DefaultOptions, then
#   the model's), so a base model shipping its own num_ctx would silently win over it.
PULL_SCRIPT = """\
fail() { echo "pull-model: $*" >&2; kill "$server" 2>/dev/null; exit 1; }
ollama serve &
server=$!
tries=0
until ollama list >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -gt "$SERVER_START_SECONDS" ] && fail "ollama did not start"
  sleep 1
done
manifest="$OLLAMA_MODELS/$MODEL_MANIFEST"
on_volume() { [ -f "$manifest" ] && echo "sha256:$(sha256sum < "$manifest" | cut -d ' ' -f 1)"; }
digest=$(on_volume)
if [ -n "$digest" ] && { [ -z "$MODEL_DIGEST" ] || [ "$digest" = "$MODEL_DIGEST" ]; }; then
  echo "$OLLAMA_MODEL is on the volume: no pull"
else
  timeout "$PULL_TIMEOUT_SECONDS" ollama pull "$OLLAMA_MODEL" || fail "could not pull $OLLAMA_MODEL"
  digest=$(on_volume)
fi
echo "$OLLAMA_MODEL $digest"
if [ -n "$MODEL_DIGEST" ] && [ "$digest" != "$MODEL_DIGEST" ]; then
  fail "$OLLAMA_MODEL is $digest, not $MODEL_DIGEST as llm-gateway:ollama.modelDigest pins; the tag has \
moved: check the new model, then set ollama.modelDigest to $digest (or pin another tag)"
fi
printf 'FROM %s\\nPARAMETER num_thread %s\\nPARAMETER num_ctx %s\\n' "$OLLAMA_MODEL" "$MODEL_THREADS" \
  "$MODEL_CONTEXT" > /tmp/Modelfile
ollama create "$SERVED_MODEL" -f /tmp/Modelfile >/dev/null || fail "could not create $SERVED_MODEL"
echo "$SERVED_MODEL runs $MODEL_THREADS threads with a context of $MODEL_CONTEXT tokens"
kill "$server"
"""
# Load the model into memory: `ollama run` with no prompt and stdin not a terminal sends an empty
# prompt, which only loads (cmd/cmd.go RunHandler; server/routes.go GenerateHandler "load"). Not
# `ollama run <model> ""` (Ollama's FAQ, at a terminal): in a probe stdin is not a terminal, it is
# read and joined to the "" argument, and the prompt " " makes the model answer on every try.
# OLLAMA_KEEP_ALIVE=-1 then keeps it loaded.
LOAD = 'ollama run "$SERVED_MODEL" </dev/null >/dev/null'
# The server must answer `ollama ps` within this, or the pod is NotReady at once: a frozen server
# leaves the Service's endpoints as fast as before, not after a load budget.
LIST_SECONDS = 3
RESIDENT = (
    f"resident() {{ loaded=$(timeout {LIST_SECONDS} ollama ps) || exit 1; "
    'printf "%s\\n" "$loaded" | cut -d " " -f 1 | grep -qxF -- "$SERVED_MODEL"; }'  # the NAME column, exactly
)
WARM_UP = ["/bin/sh", "-c", LOAD]
# Ready while the model is resident, and if it is not, ready again once it is loaded back. Nothing
# else would reload it: the startup probe never runs again, and a model leaves memory when a request
# carries `keep_alive: 0` (server/sched.go: a zero session duration expires the runner once idle),
# or on `ollama stop`. The kubelet runs one probe at a time, so a reload is never doubled.
MODEL_RESIDENT = ["/bin/sh", "-c", f"{RESIDENT}\nresident || {{ {LOAD} && resident; }}"]
# One model load on CPU (tens of seconds for a 3B model): the budget of a warm-up or a reload.
LOAD_SECONDS = 120

# A pod with more models than `ollama.model` (chains' tiers on the shared Ollama): every one warm
# after the startup probe and kept resident by the readiness probe, each loaded the way its kind
# allows. Only such a pod gets these commands and variables: a one-model pod is rendered as before.
# - A chat model loads as LOAD does.
# - An embedding model cannot: `ollama run` has no embedding path in 0.12.6 (cmd/cmd.go RunHandler
#   always ends in /api/generate; one came in 0.12.10), and GenerateHandler (server/routes.go) asks
#   scheduleRunner for the completion capability, which a model whose GGUF has `pooling_type`
#   lacks (server/images.go Model.Capabilities, CheckCapabilities): a 400 "does not support
#   generate" before anything loads. /api/embed with no input loads it (EmbedHandler:
#   scheduleRunner with no capability asked, then `embeddings: []`): the endpoint LiteLLM's
#   `ollama/` embeddings call, with the model's own parameters, so one runner for warm-up, probe and
#   requests. No CLI command calls it and the image has no curl or wget (Dockerfile at v0.12.6:
#   ubuntu:24.04 plus ca-certificates and libvulkan1), so bash (essential in Ubuntu) sends the request
#   itself over /dev/tcp. Model names are plain ASCII without quotes (core/ollama_model.py).
# - `ollama ps` lists embedding models too (server/routes.go PsHandler: every runner the scheduler
#   has loaded, no filter), so one residency check serves both kinds.
# - OLLAMA_KEEP_ALIVE=-1 holds every model: a load without its own keep_alive takes it
#   (server/sched.go load; envconfig.KeepAlive: negative is forever).
# - How many stay loaded: OLLAMA_MAX_LOADED_MODELS, when unset, becomes 3 per device on the first
#   load (server/sched.go processPending, defaultModelsPerGPU; 1 per device if a GPU's free memory
#   is unreliable), and a CPU is one device (discover/gpu.go devInfoToInfoList). A fourth model would
#   unload another (findRunnerToUnload: the shortest keep-alive, then the lowest model path), which
#   readiness would load back, unloading the next: set to the pod's model count instead.
# - Memory: the scheduler fits each model in the node's free memory (/proc/meminfo,
#   discover/cpu_linux.go GetCPUMem), never the container's limit; the memory check of
#   ollama.resources.requests.memory (core/settings.py _check_shared_ollama) sizes the pod for all.
# These commands run under bash (for /dev/tcp); the model lists are split on spaces, never globbed.
SEVERAL_MODELS_FUNCTIONS = r"""set -f
listed() { loaded=$(timeout LIST_SECONDS ollama ps) || exit 1; }
resident() { printf "%s\n" "$loaded" | cut -d " " -f 1 | grep -qxF -- "$1"; }
all_resident() {
  listed
  for model in $CHAT_MODELS $EMBEDDING_MODELS; do
    resident "$model" || { echo "$model is not resident" >&2; return 1; }
  done
}
embed() {
  local body="{\"model\":\"$1\"}" status=
  { printf 'POST /api/embed HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
    printf 'Content-Length: %s\r\n\r\n%s' "${#body}" "$body"
    read -r status <&3; } 3<>/dev/tcp/127.0.0.1/OLLAMA_PORT >&3
  case $status in "HTTP/1."?" 200 "*) ;; *) echo "$1: ${status:-no answer}" >&2; return 1 ;; esac
}
load() {
  case " $EMBEDDING_MODELS " in
    *" $1 "*) embed "$1" ;;
    *) ollama run "$1" </dev/null >/dev/null ;;
  esac
}
""".replace("LIST_SECONDS", str(LIST_SECONDS)).replace("OLLAMA_PORT", str(OLLAMA_PORT))
# Warm every model, then require them all resident: a model that did not stay (too many for the
# scheduler) fails the startup probe with its name, rather than passing into a readiness that never holds.
WARM_UP_ALL = [
    "/bin/bash",
    "-c",
    SEVERAL_MODELS_FUNCTIONS
    + 'for model in $CHAT_MODELS $EMBEDDING_MODELS; do load "$model" || exit 1; done\nall_resident\n',
]
# MODEL_RESIDENT for every model: any that left memory is loaded back (its own way), then all are
# checked again, so a load that unloaded another is not taken for ready.
ALL_RESIDENT = [
    "/bin/bash",
    "-c",
    SEVERAL_MODELS_FUNCTIONS
    + """\
listed
reloaded=
for model in $CHAT_MODELS $EMBEDDING_MODELS; do
  resident "$model" || { load "$model" || exit 1; reloaded=1; }
done
[ -z "$reloaded" ] || all_resident
""",
]
IMAGE_PULL_SECONDS = 300  # the Ollama image is a few GB
SERVER_START_SECONDS = 60  # the pull script waits this long for its private server
# The image sets NVIDIA_VISIBLE_DEVICES=all: on a node whose default runtime is nvidia the "CPU"
# tier would load its model into VRAM and keep it (OLLAMA_KEEP_ALIVE=-1), and vLLM could not start.
# "void" makes the NVIDIA runtime behave like runc (no device, no driver); CUDA_VISIBLE_DEVICES=-1
# is Ollama's own documented way to force the CPU.
NO_GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "-1"}


@dataclass(frozen=True)
class OllamaModel:
    """A model a chain's tier serves on the shared Ollama, beside `ollama.model`."""

    model: str
    digest: str | None
    context_tokens: int  # its chain's context: its served model's num_ctx
    kind: str = "chat"  # its chain's kind, "chat" or "embeddings": how the probes load it (`load`)


@dataclass(frozen=True)
class OllamaArgs:
    ollama: OllamaSettings
    context_tokens: int  # the chain's context (gateway.contextTokens): the served model's num_ctx
    placement: kube.Placement
    # The chains' other models: each pulled and derived by an init container of its own, after
    # `ollama.model`'s (the same script), so the pod of a one-chain stack is unchanged.
    more_models: tuple[OllamaModel, ...] = ()


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
        pod_spec = self._pod_spec(ollama, args.context_tokens, models.metadata.name)
        pod_spec["initContainers"] += [
            self._pull_more(pod_spec["initContainers"][0], index, more, ollama)
            for index, more in enumerate(args.more_models, 2)
        ]
        if args.more_models:
            self._serve_several(pod_spec["containers"][0], ollama, args.more_models)
        init_seconds = (SERVER_START_SECONDS + ollama.pull_timeout_seconds) * (1 + len(args.more_models))
        rollout = kube.rollout_seconds(pod_spec, IMAGE_PULL_SECONDS, init_seconds)
        # The models volume is ReadWriteOnce: the old pod must let go before the new mounts it.
        deployment = recreated_deployment(
            name, OLLAMA_SERVICE, placement, labels, pod_spec, kube.image_skips(ollama), rollout, child
        )
        service = expose_to_gateway(name, OLLAMA_SERVICE, OLLAMA_PORT, placement, labels, child, await_seconds=rollout)
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"deploymentName": self.deployment_name, "serviceName": self.service_name})

    @staticmethod
    def _pull_more(first: dict[str, Any], index: int, more: OllamaModel, ollama: OllamaSettings) -> dict[str, Any]:
        """The init container of one more model: the first's, with that model's name, pin and context."""
        env = {entry["name"]: entry["value"] for entry in first["env"]}
        env.update(
            OLLAMA_MODEL=more.model,
            SERVED_MODEL=served_model(more.model),
            MODEL_MANIFEST=OllamaName.parse(more.model).manifest_path,
            MODEL_DIGEST=more.digest or "",
            MODEL_CONTEXT=str(more.context_tokens),
        )
        return {**first, "name": f"pull-model-{index}", "env": kube.env(env)}

    @staticmethod
    def _serve_several(container: dict[str, Any], ollama: OllamaSettings, more: tuple[OllamaModel, ...]) -> None:
        """The server's probes and variables for `ollama.model` and `more`: each model warmed and
        kept resident its kind's way, all of them loaded at once, a load's budget per model."""
        chat = [served_model(ollama.model)] + [served_model(m.model) for m in more if m.kind != "embeddings"]
        embeddings = [served_model(m.model) for m in more if m.kind == "embeddings"]
        container["env"] += kube.env(
            {
                "CHAT_MODELS": " ".join(chat),
                "EMBEDDING_MODELS": " ".join(embeddings),
                "OLLAMA_MAX_LOADED_MODELS": str(1 + len(more)),
            }
        )
        load_all = LOAD_SECONDS * (1 + len(more))
        container["startupProbe"] = kube.exec_probe(WARM_UP_ALL, period=10, timeout=load_all, failures=5)
        container["readinessProbe"] = kube.exec_probe(ALL_RESIDENT, period=5, timeout=load_all, failures=2)

    @staticmethod
    def _pod_spec(ollama: OllamaSettings, context_tokens: int, models_claim: pulumi.Input[str]) -> dict[str, Any]:
        common_env = {
            "HOME": HOME_PATH,
            "OLLAMA_MODELS": MODELS_PATH,
            "OLLAMA_MODEL": ollama.model,
            "SERVED_MODEL": served_model(ollama.model),
            **({} if ollama.gpu else NO_GPU_ENV),
        }
        mounts = [
            {"name": "models", "mountPath": MODELS_PATH},
            {"name": "home", "mountPath": HOME_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        return {
            **kube.no_token_no_service_links(),
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
                            "MODEL_MANIFEST": OllamaName.parse(ollama.model).manifest_path,
                            "MODEL_DIGEST": ollama.model_digest or "",
                            "MODEL_THREADS": str(threads_for_cpu_limit(ollama.resources.limits.cpu)),
                            "MODEL_CONTEXT": str(context_tokens),
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
                    "startupProbe": kube.exec_probe(WARM_UP, period=10, timeout=LOAD_SECONDS, failures=5),
                    "readinessProbe": kube.exec_probe(MODEL_RESIDENT, period=5, timeout=LOAD_SECONDS, failures=2),
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

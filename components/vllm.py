"""vLLM on a GPU: the primary tier. A PVC for the model cache, a Deployment and a Service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.backend import expose_to_gateway, model_volume, recreated_deployment
from core import kube
from core.context_window import MAX_MODEL_LEN_FLAG
from core.names import VLLM_PORT, VLLM_SERVICE
from core.settings import VllmSettings

CACHE_PATH = "/cache"
# The vLLM image is about 10 GB: pulling it is part of what `pulumi up` waits for.
IMAGE_PULL_SECONDS = 900
# The image has no passwd entry for our UID. `getpass.getuser()` (torch's default inductor cache
# directory, and others) reads LOGNAME/USER before the password database, so naming the user here
# avoids `KeyError: getpwuid(): uid not found`; every cache is pointed at the cache volume too.
RUNTIME_ENV = {
    "USER": "vllm",
    "LOGNAME": "vllm",
    "HOME": CACHE_PATH,
    "HF_HOME": f"{CACHE_PATH}/huggingface",
    "XDG_CACHE_HOME": f"{CACHE_PATH}/xdg",
    "VLLM_CACHE_ROOT": f"{CACHE_PATH}/vllm",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_PATH}/torchinductor",
    "TRITON_CACHE_DIR": f"{CACHE_PATH}/triton",
    # vLLM keeps egress for model downloads; its usage statistics must not use it.
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
# After the Deployment exists its count is whoever scaled it last: `kubectl scale` (Gaming Mode from
# the gaming machine) or the stack's replica patch below. Under server-side apply a field in
# ignoreChanges that another manager owns is left out of what `pulumi up` applies
# (pulumi-kubernetes await/await.go handleSSAIgnoreFields), and `kubectl scale` owns the count
# through the scale subresource, which Pulumi never takes over (its fixCSAFieldManagers skips
# subresource entries): a later `pulumi up` keeps the count, with or without `--refresh`.
# Whether the Deployment is awaited is decided once too: created at 0, its claim may never bind.
SCALED_OUTSIDE_PULUMI = ["spec.replicas", f'metadata.annotations["{kube.SKIP_AWAIT_ANNOTATION}"]']
# A replica patch overrides a count that kubectl set: the operator changed the stack on purpose.
PATCH_FORCE_ANNOTATION = "pulumi.com/patchForce"


@dataclass(frozen=True)
class VllmArgs:
    vllm: VllmSettings
    replicas: int  # Gaming Mode already applied: 0 while the GPU is handed back
    context_tokens: int  # the chain's context (gateway.contextTokens): vLLM's --max-model-len
    placement: kube.Placement
    # False when rendering YAML: there is no live count to patch, and the patch's file would
    # overwrite the Deployment's (same kind, namespace and name).
    patch_replicas: bool = True
    # Its Deployment, Service and volume names: `vllm`, or a chain's tier's (names.tier_object_name).
    service: str = VLLM_SERVICE


class VllmBackend(pulumi.ComponentResource):
    """Serves `vllm.model` on an OpenAI-compatible API at `http://vllm.<namespace>...:8000/v1`."""

    def __init__(self, name: str, args: VllmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:VllmBackend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        placement, vllm = args.placement, args.vllm
        namespace, instance = placement.namespace, placement.instance
        service_name = args.service
        labels = kube.labels(service_name, instance, "inference")

        cache = model_volume(
            f"{name}-cache", f"{service_name}-cache", vllm.cache_size, vllm.storage_class_name, namespace, labels, child
        )
        skips = kube.image_skips(vllm)
        # torch.compile, triton and flashinfer write JIT caches where the image decides; HOME is on
        # the cache volume, but a read-only root has not been proven safe for every vLLM release.
        skips["CKV_K8S_22"] = "vLLM JIT caches write outside HOME in some releases; root stays writable"
        pod_spec = self._pod_spec(vllm, args.context_tokens, cache.metadata.name)
        # Gaming Mode: 0 replicas. The Service keeps its name and has no endpoints, so the gateway
        # gets "connection refused" at once and moves on to Ollama. One GPU cannot hold the old and
        # the new pod at once: stop, then start.
        rollout = kube.rollout_seconds(pod_spec, IMAGE_PULL_SECONDS)
        scaled_outside = child.merge(pulumi.ResourceOptions(ignore_changes=SCALED_OUTSIDE_PULUMI))
        deployment = recreated_deployment(
            name, service_name, placement, labels, pod_spec, skips, rollout, scaled_outside, replicas=args.replicas
        )
        if args.patch_replicas:
            self._apply_stack_count(name, deployment, args.replicas, rollout)
        service = expose_to_gateway(name, service_name, VLLM_PORT, placement, labels, child, await_seconds=rollout)
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"deploymentName": self.deployment_name, "serviceName": self.service_name})

    def _apply_stack_count(
        self, name: str, deployment: k8s.apps.v1.Deployment, replicas: int, await_seconds: int
    ) -> None:
        """The stack's count (`gamingMode`, `vllm.replicas`), applied when it changes, not on every
        `pulumi up`. One patch per count (`vllm-replicas-<n>`): a new count is a new patch, whose
        forced apply takes the count from whoever held it; the old patch is deleted and gives up
        only what it still holds (pulumi-kubernetes provider/pkg/ssa Relinquish), i.e. nothing. The
        patch ignores its own count afterwards, so a `pulumi refresh` reading kubectl's count back
        never becomes a re-apply. It waits like the Deployment: for the pods of a count above 0."""
        annotations = {PATCH_FORCE_ANNOTATION: "true"}
        if replicas == 0:
            annotations[kube.SKIP_AWAIT_ANNOTATION] = "true"  # no pod to wait for (backend.recreated_deployment)
        k8s.apps.v1.DeploymentPatch(
            f"{name}-replicas-{replicas}",
            metadata={
                "name": deployment.metadata.name,
                "namespace": deployment.metadata.namespace,
                "annotations": annotations,
            },
            spec={"replicas": replicas},
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["spec.replicas"],
                # Not an annotation: the patch's annotations land on the live Deployment.
                custom_timeouts=pulumi.CustomTimeouts(create=f"{await_seconds}s", update=f"{await_seconds}s"),
            ),
        )

    @staticmethod
    def _pod_spec(vllm: VllmSettings, context_tokens: int, cache_claim: pulumi.Input[str]) -> dict[str, Any]:
        gpu_limit = {"nvidia.com/gpu": str(vllm.gpu_count)} if vllm.gpu_count else {}
        spec: dict[str, Any] = {
            **kube.no_token_no_service_links(),
            "securityContext": kube.pod_security_context(),
            "containers": [
                {
                    "name": "vllm",
                    "image": vllm.pinned_image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": [
                        "--model",
                        vllm.model,
                        "--served-model-name",
                        vllm.model,
                        "--port",
                        str(VLLM_PORT),
                        # The chain's one context: a longer prompt is refused (400), never cut.
                        MAX_MODEL_LEN_FLAG,
                        str(context_tokens),
                        *vllm.extra_args,
                    ],
                    "env": kube.env(RUNTIME_ENV),
                    "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
                    "resources": kube.resources(vllm.resources, gpu_limit),
                    # torch and triton write compile caches in places the image decides.
                    "securityContext": kube.container_security_context(read_only_root=False),
                    # /health answers only once the engine is up and the model loaded (the API
                    # server starts after the engine), and 500s when the engine loop has died.
                    "startupProbe": kube.http_probe("/health", VLLM_PORT, period=10, timeout=5, failures=90),
                    # Fast readiness: a hung vLLM leaves the Service endpoints after 2 failed probes
                    # (2 probes of 2 s, plus up to one period until the first failure), after
                    # which new connections are refused and the gateway fails over at once.
                    "readinessProbe": kube.http_probe("/health", VLLM_PORT, period=2, timeout=2, failures=2),
                    # Slow liveness: a busy GPU answering late is not restarted.
                    "livenessProbe": kube.http_probe("/health", VLLM_PORT, period=15, timeout=10, failures=8),
                    "volumeMounts": [
                        {"name": "cache", "mountPath": CACHE_PATH},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "cache", "persistentVolumeClaim": {"claimName": cache_claim}},
                # Tensor-parallel workers talk through shared memory; the default 64 MiB is too small.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": vllm.shm_size}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }
        if vllm.node_selector:
            spec["nodeSelector"] = dict(vllm.node_selector)
        if vllm.tolerations:
            spec["tolerations"] = [{k: v for k, v in vars(t).items() if v is not None} for t in vllm.tolerations]
        if vllm.runtime_class_name:
            spec["runtimeClassName"] = vllm.runtime_class_name
        return spec

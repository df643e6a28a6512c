"""Small pure builders for the Kubernetes objects the components share.

No Pulumi import: plain manifest fragments (camelCase, as the API server spells them), so tests and
the schema validator read exactly what the components send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.declarations import key_path
from core.names import PROJECT, config_key
from core.settings import PinnedImage, Resources, Settings

# Every pod here runs as this non-root user, above 10000 so it matches no user on the node; each
# image allows it once HOME and its data directories point at writable volumes (set per component).
RUN_AS_USER = 10001
# The oldest Kubernetes the rendered objects are for: the tests validate every manifest strictly
# against this version's schemas too, so a field too new for it fails there, not at `pulumi up`.
MINIMUM_KUBERNETES_VERSION = "1.25"


@dataclass(frozen=True)
class Placement:
    """What every component shares: where its objects go and whose they are."""

    namespace: Any  # pulumi.Input[str]: the Namespace's name output
    instance: str  # the stack (`app.kubernetes.io/instance`)
    network_policies: bool


def labels(name: str, instance: str, component: str) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels."""
    return {
        **selector_labels(name, instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector_labels(name: str, instance: str) -> dict[str, str]:
    """The immutable subset used by Deployment selectors and Services."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": instance}


def metadata(name: str, namespace: Any, object_labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": object_labels, **extra}


def resources(spec: Resources, extra_limits: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "requests": {"cpu": spec.requests.cpu, "memory": spec.requests.memory},
        "limits": {"cpu": spec.limits.cpu, "memory": spec.limits.memory, **(extra_limits or {})},
    }


def pod_security_context(user: int = RUN_AS_USER) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        # Chown a volume only when its root is not ours yet: not a 40 Gi model cache on every start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def no_token_no_service_links() -> dict[str, Any]:
    """What every pod here turns off of what the kubelet gives a pod by default.

    No API token: nothing here calls the Kubernetes API. No service links: for every Service in the
    namespace the kubelet would set `<NAME>_SERVICE_HOST`, `<NAME>_PORT=tcp://<ip>:<port>` and more
    (kubernetes pkg/kubelet/envvars/envvars.go FromServices). The Service `vllm` alone gives every pod
    `VLLM_PORT=tcp://…`, which vLLM reads as its own port and fails on at start (vllm/envs.py
    get_vllm_port); `redis` gives `REDIS_PORT=tcp://…`, which LiteLLM reads for its caches. Only the
    `kubernetes` Service's variables remain: the kubelet sets those even with links off
    (pkg/kubelet/kubelet_pods.go getServiceEnvVarMap). Every pod finds the others by DNS name."""
    return {"automountServiceAccountToken": False, "enableServiceLinks": False}


def container_security_context(read_only_root: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, port: int, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def exec_probe(command: list[str], period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


# How long `pulumi up` waits for a Deployment is written on it (pulumi-kubernetes reads this
# annotation), computed from the pod's own budgets so that the two can never disagree.
AWAIT_ANNOTATION = "pulumi.com/timeoutSeconds"
AWAIT_MARGIN_SECONDS = 120
# `"true"`: `pulumi up` goes on as soon as the API server has accepted the object
# (pulumi-kubernetes provider/pkg/metadata/overrides.go ReadyCondition); "false" or absent: it waits.
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"


def probe_budget_seconds(probe: dict[str, Any]) -> int:
    """The longest a probe may keep failing before the kubelet gives up."""
    return (
        probe.get("initialDelaySeconds", 0)
        + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        + probe.get("timeoutSeconds", 1)
    )


def rollout_seconds(pod_spec: dict[str, Any], image_pull_seconds: int, init_seconds: int = 0) -> int:
    """From a new pod to ready, at the worst the pod spec allows: the old pod's graceful end
    (Recreate), the image pull, the init containers, the startup probe, a first readiness probe."""
    slowest_start = max(
        probe_budget_seconds(container.get("startupProbe", {"periodSeconds": 0, "failureThreshold": 0}))
        + container["readinessProbe"].get("periodSeconds", 10)
        + container["readinessProbe"].get("timeoutSeconds", 1)
        for container in pod_spec["containers"]
    )
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    return grace + image_pull_seconds + init_seconds + slowest_start + AWAIT_MARGIN_SECONDS


def env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def secret_env(name: str, secret_name: Any, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def cluster_ip_service_spec(selector: dict[str, str], port: int, port_name: str) -> dict[str, Any]:
    return {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
    }


def volume_claim_spec(size: str, storage_class_name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class_name:
        spec["storageClassName"] = storage_class_name
    return spec


def checkov_skips(reasons: dict[str, str]) -> dict[str, str]:
    """Annotations that tell checkov which of its checks do not apply here, and why."""
    return {f"checkov.io/skip{index}": f"{check}={reason}" for index, (check, reason) in enumerate(reasons.items(), 1)}


def image_skips(image: PinnedImage) -> dict[str, str]:
    """The image checks every Deployment here answers the same way."""
    reasons = {
        # Pinned tags are the default and a digest is one setting away; Always would make every pod
        # restart depend on the registry being reachable (air-gapped clusters, registry outages).
        "CKV_K8S_15": "exact tags pinned, optional digest; IfNotPresent keeps restarts independent of the registry",
    }
    if not image.image_digest:
        reasons["CKV_K8S_43"] = f"digest optional: set {config_key(key_path(Settings, type(image), 'image_digest'))}"
    return reasons


def ingress_only_from(
    name: str, namespace: Any, object_labels: dict[str, str], target: dict[str, str], source: dict[str, str], port: int
) -> dict[str, Any]:
    """A NetworkPolicy: pods `target` accept `port` from pods `source` only (kubelet probes come
    from the node and are not subject to pod-to-pod policy on common CNIs)."""
    return {
        "metadata": metadata(name, namespace, object_labels),
        "spec": {
            "podSelector": {"matchLabels": target},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": source}}], "ports": [{"protocol": "TCP", "port": port}]}
            ],
        },
    }

"""What the in-cluster backends share: a volume, a Service, and a NetworkPolicy letting only the
gateway in.

A helper for VllmBackend, OllamaBackend and RedisStore (it creates their children), not a
component itself.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from core import kube
from core.names import GATEWAY_SERVICE


def expose_to_gateway(
    name: str,
    service_name: str,
    port: int,
    placement: kube.Placement,
    labels: dict[str, str],
    child: pulumi.ResourceOptions,
    port_name: str = "http",
    *,
    await_seconds: int,
) -> k8s.core.v1.Service:
    """`await_seconds`: the rollout budget of the pods behind it. Pulumi waits for a Service until
    its endpoints hold no unready pod (pulumi-kubernetes await/service.go), 10 minutes unless told:
    a loading model would fail the Service first. With no pod at all (Gaming Mode) the wait ends
    once the empty endpoints have settled (10 s): nothing is waited for that never comes."""
    selector = kube.selector_labels(service_name, placement.instance)
    service = k8s.core.v1.Service(
        f"{name}-service",
        metadata=kube.metadata(
            service_name, placement.namespace, labels, annotations={kube.AWAIT_ANNOTATION: str(await_seconds)}
        ),
        spec=kube.cluster_ip_service_spec(selector, port, port_name),
        opts=child,
    )
    if placement.network_policies:
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            **kube.ingress_only_from(
                f"{service_name}-from-gateway",
                placement.namespace,
                labels,
                target=selector,
                source=kube.selector_labels(GATEWAY_SERVICE, placement.instance),
                port=port,
            ),
            opts=child,
        )
    return service


def recreated_deployment(
    name: str,
    service_name: str,
    placement: kube.Placement,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    checkov_skips: dict[str, str],
    await_seconds: int,
    child: pulumi.ResourceOptions,
    replicas: int = 1,
) -> k8s.apps.v1.Deployment:
    """A backend's Deployment, one pod at a time (`Recreate`): the old pod lets go of what only one
    may hold (a ReadWriteOnce volume, the GPU, Redis' append-only file) before the new one starts.
    `pulumi up` waits `await_seconds`, the pod's own budgets (kube.rollout_seconds)."""
    annotations = {**kube.checkov_skips(checkov_skips), kube.AWAIT_ANNOTATION: str(await_seconds)}
    if replicas == 0:
        # No pod to wait for, and nothing to bind its claims: under a WaitForFirstConsumer
        # StorageClass (kind, k3s, EKS gp3, GKE, AKS) they stay Pending, and pulumi-kubernetes'
        # Deployment await also waits for every claim of the pod template to be Bound
        # (await/deployment.go isEveryPVCReady), even at 0 replicas, until it times out.
        annotations[kube.SKIP_AWAIT_ANNOTATION] = "true"
    return k8s.apps.v1.Deployment(
        f"{name}-deployment",
        metadata=kube.metadata(service_name, placement.namespace, labels, annotations=annotations),
        spec={
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": kube.selector_labels(service_name, placement.instance)},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
        opts=child,
    )


def model_volume(
    name: str,
    claim_name: str,
    size: str,
    storage_class_name: str | None,
    namespace: pulumi.Input[str],
    labels: dict[str, str],
    child: pulumi.ResourceOptions,
) -> k8s.core.v1.PersistentVolumeClaim:
    """A backend's data (a tier's models, Redis' append-only file). A claim outlives its pods:
    scaling to 0 (Gaming Mode) keeps the downloaded model, so coming back costs a load, not a
    download; a Redis restart replays what it counted."""
    return k8s.core.v1.PersistentVolumeClaim(
        name,
        metadata=kube.metadata(claim_name, namespace, labels),
        spec=kube.volume_claim_spec(size, storage_class_name),
        opts=child,
    )

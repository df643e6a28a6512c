"""What the in-cluster backends share: a volume, a Service, and a NetworkPolicy letting only the
gateway in.

A helper for VllmBackend, OllamaBackend and RedisStore (it creates their children), not a
component itself.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.names import GATEWAY_SERVICE


def expose_to_gateway(
    name: str,
    service_name: str,
    port: int,
    placement: kube.Placement,
    labels: dict[str, str],
    child: pulumi.ResourceOptions,
    port_name: str = "http",
) -> k8s.core.v1.Service:
    selector = kube.selector_labels(service_name, placement.instance)
    service = k8s.core.v1.Service(
        f"{name}-service",
        metadata=kube.metadata(service_name, placement.namespace, labels),
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
    image_pull_seconds: int,
    child: pulumi.ResourceOptions,
    replicas: int = 1,
    init_seconds: int = 0,
) -> k8s.apps.v1.Deployment:
    """A backend's Deployment, one pod at a time (`Recreate`): the old pod lets go of what only one
    may hold (a ReadWriteOnce volume, the GPU, Redis' append-only file) before the new one starts.
    `pulumi up` waits as long as the pod's own budgets allow (kube.rollout_seconds)."""
    annotations = {
        **kube.checkov_skips(checkov_skips),
        kube.AWAIT_ANNOTATION: str(kube.rollout_seconds(pod_spec, image_pull_seconds, init_seconds)),
    }
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

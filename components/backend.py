"""What the in-cluster backends share: a volume, a Service, and a NetworkPolicy letting only the
gateway in.

A helper for VllmBackend, OllamaBackend and RedisStore (it creates their children), not a
component itself.
"""

from __future__ import annotations

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

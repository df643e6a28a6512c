"""Reaching the gateway from outside the cluster: a standard Ingress or a Traefik IngressRoute.

Off by default; the in-cluster Service URL (stack output `gatewayUrl`) stays what clients inside
the cluster use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.names import GATEWAY_PORT, GATEWAY_SERVICE
from components.settings import IngressSettings


@dataclass(frozen=True)
class IngressArgs:
    ingress: IngressSettings
    placement: kube.Placement


class GatewayIngress(pulumi.ComponentResource):
    """Routes `ingress.host` to the gateway's Service (port 4000)."""

    def __init__(self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:GatewayIngress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ingress, placement = args.ingress, args.placement
        labels = kube.labels(GATEWAY_SERVICE, placement.instance, "gateway")
        metadata = kube.metadata(GATEWAY_SERVICE, placement.namespace, labels)
        if ingress.annotations:
            metadata["annotations"] = dict(ingress.annotations)
        if ingress.kind == "Ingress":
            k8s.networking.v1.Ingress(f"{name}-ingress", metadata=metadata, spec=ingress_spec(ingress), opts=child)
        else:
            k8s.apiextensions.CustomResource(
                f"{name}-ingressroute",
                api_version="traefik.io/v1alpha1",
                kind="IngressRoute",
                metadata=metadata,
                spec=ingress_route_spec(ingress),
                opts=child,
            )
        self.url = f"{'https' if ingress.tls_secret_name else 'http'}://{ingress.host}"
        self.register_outputs({"url": self.url})


def ingress_spec(ingress: IngressSettings) -> dict[str, Any]:
    backend = {"service": {"name": GATEWAY_SERVICE, "port": {"number": GATEWAY_PORT}}}
    spec: dict[str, Any] = {
        "rules": [{"host": ingress.host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return spec


def ingress_route_spec(ingress: IngressSettings) -> dict[str, Any]:
    default_entry_point = "websecure" if ingress.tls_secret_name else "web"
    spec: dict[str, Any] = {
        "entryPoints": list(ingress.entry_points) or [default_entry_point],
        "routes": [
            {
                "match": f"Host(`{ingress.host}`)",
                "kind": "Rule",
                "services": [{"name": GATEWAY_SERVICE, "port": GATEWAY_PORT}],
            }
        ],
    }
    if ingress.tls_secret_name:
        spec["tls"] = {"secretName": ingress.tls_secret_name}
    return spec

"""Reaching the gateway from outside the cluster: a standard Ingress or a Traefik IngressRoute.

Off by default; the in-cluster Service URL (stack output `gatewayUrl`) stays what clients inside
the cluster use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from core import kube
from core.names import GATEWAY_PORT, GATEWAY_SERVICE
from core.settings import IngressSettings

# The edge waits this much longer than the gateway may take, so the client gets the gateway's own
# answer or error, never the edge's 504 while the gateway is still working (perhaps on a paid call).
EDGE_MARGIN_SECONDS = 30
# ingress-nginx's per-Ingress timeouts (seconds, unitless; its ConfigMap defaults are 60): read is
# the longest silence between two reads from the gateway, which for a non-streaming answer is the
# whole answer (docs/user-guide/nginx-configuration/annotations.md, "Custom timeouts").
NGINX_TIMEOUTS = ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout")
# ingress-nginx's `client_max_body_size` for this Ingress: a larger body is answered 413 at the edge,
# the gateway's limit (`gateway.maxRequestBytes`) in plain bytes, which the annotation's size format
# takes (internal/ingress/annotations/parser/validators.go SizeRegex `\d+[bkmg]?`). Its default is 1m.
NGINX_BODY_SIZE = "nginx.ingress.kubernetes.io/proxy-body-size"
# No Traefik counterpart: its only body limit, the Buffering middleware (`maxRequestBodyBytes`),
# holds the whole *response* back too (vulcand/oxy v2.2.0 buffer/buffer.go), so a streaming client
# would get its answer only when it is complete; `disableResponseBuffer` cannot be set from a CRD
# (traefik v3.7 pkg/config/dynamic/middlewares.go: "only configurable via code"). Behind Traefik the
# gateway's own limit answers 413, before it reads the body.


@dataclass(frozen=True)
class IngressArgs:
    ingress: IngressSettings
    placement: kube.Placement
    longest_answer_seconds: int  # core/chain.py longest_answer_seconds(chain)
    max_request_bytes: int  # gateway.maxRequestBytes


class GatewayIngress(pulumi.ComponentResource):
    """Routes `ingress.host` to the gateway's Service (port 4000)."""

    def __init__(self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:GatewayIngress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ingress, placement = args.ingress, args.placement
        labels = kube.labels(GATEWAY_SERVICE, placement.instance, "gateway")
        metadata = kube.metadata(GATEWAY_SERVICE, placement.namespace, labels)
        edge_seconds = args.longest_answer_seconds + EDGE_MARGIN_SECONDS
        if ingress.kind == "Ingress":
            # The operator's annotations come last: any of ours can be overridden.
            ours = ingress_annotations(edge_seconds, args.max_request_bytes)
            metadata["annotations"] = {**ours, **ingress.annotations}
            k8s.networking.v1.Ingress(f"{name}-ingress", metadata=metadata, spec=ingress_spec(ingress), opts=child)
        else:
            if ingress.annotations:
                metadata["annotations"] = dict(ingress.annotations)
            k8s.apiextensions.CustomResource(
                f"{name}-serverstransport",
                api_version="traefik.io/v1alpha1",
                kind="ServersTransport",
                metadata=kube.metadata(GATEWAY_SERVICE, placement.namespace, labels),
                spec=servers_transport_spec(edge_seconds),
                opts=child,
            )
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


def ingress_annotations(edge_seconds: int, max_request_bytes: int) -> dict[str, str]:
    """What every Ingress of ours carries before the operator's annotations."""
    return {
        **{timeout: str(edge_seconds) for timeout in NGINX_TIMEOUTS},
        NGINX_BODY_SIZE: str(max_request_bytes),
        # Pulumi's Ingress await wants `.status.loadBalancer.ingress` (pulumi-kubernetes
        # await/ingress.go), which controllers without a published Service (NodePort, hostNetwork,
        # k3s' Traefik by default) never write: `pulumi up` would fail after 10 minutes although
        # the route works. The gateway's readiness is awaited on its Deployment. To wait for the
        # address anyway: `ingress.annotations["pulumi.com/skipAwait"]: "false"`.
        kube.SKIP_AWAIT_ANNOTATION: "true",
    }


def servers_transport_spec(edge_seconds: int) -> dict[str, Any]:
    """Traefik v3's timeouts towards the gateway, for this route alone. Traefik's own default waits
    for response headers forever, but a cluster-wide `serversTransport` may set less; headers of a
    non-streaming answer come only with the whole answer (traefik.io_serverstransports.yaml)."""
    return {"forwardingTimeouts": {"responseHeaderTimeout": f"{edge_seconds}s"}}


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
                # The ServersTransport of the same name, in this namespace: this route's timeouts.
                "services": [{"name": GATEWAY_SERVICE, "port": GATEWAY_PORT, "serversTransport": GATEWAY_SERVICE}],
            }
        ],
    }
    if ingress.tls_secret_name:
        spec["tls"] = {"secretName": ingress.tls_secret_name}
    return spec

"""Operators are told and shown: a PrometheusRule with the chain's alerts and a Grafana dashboard.

Both optional (`alerts.enabled`, `alerts.dashboard`); their contents come from the pure
core/observability.py, which the drill's promtool tests run on the real proxy's metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from core import kube
from core.names import GATEWAY_SERVICE
from core.settings import AlertsSettings

DASHBOARD_FILE = "llm-gateway.json"
# kube-prometheus-stack's Grafana sidecar loads every ConfigMap with this label as dashboards.
GRAFANA_SIDECAR_LABEL = {"grafana_dashboard": "1"}


@dataclass(frozen=True)
class MonitoringArgs:
    alerts: AlertsSettings
    rule_spec: dict[str, Any]
    dashboard: dict[str, Any]
    placement: kube.Placement


class GatewayMonitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:GatewayMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = kube.labels(GATEWAY_SERVICE, args.placement.instance, "monitoring")
        namespace = args.placement.namespace
        if args.alerts.enabled:
            k8s.apiextensions.CustomResource(
                f"{name}-alerts",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata=kube.metadata(f"{GATEWAY_SERVICE}-alerts", namespace, {**labels, **args.alerts.rule_labels}),
                spec=args.rule_spec,
                opts=child,
            )
        if args.alerts.dashboard:
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata=kube.metadata(f"{GATEWAY_SERVICE}-dashboard", namespace, {**labels, **GRAFANA_SIDECAR_LABEL}),
                data={DASHBOARD_FILE: json.dumps(args.dashboard, indent=2, sort_keys=True)},
                opts=child,
            )
        self.register_outputs({})

"""The LiteLLM proxy: the one endpoint clients call, holding the fallback chain.

ConfigMap (the rendered chain, no secret in it), Secrets (master key, OpenAI key), Deployment,
Service. Policy lives in components/fallback.py; this file only deploys its output.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import kube
from components.fallback import (
    CONFIG_FILE_NAME,
    DATABASE_URL_ENV,
    GATEWAY_PORT,
    GATEWAY_SERVICE,
    MASTER_KEY_ENV,
    OLLAMA_PORT,
    OLLAMA_SERVICE,
    OPENAI_KEY_ENV,
    VLLM_PORT,
    VLLM_SERVICE,
    config_checksum,
    gateway_files,
)
from components.settings import Settings

CONFIG_DIR = "/etc/litellm"


class LiteLLMGateway(pulumi.ComponentResource):
    """The gateway. `openai_api_key` and `database_url` must be secret Outputs
    (`Config.require_secret`), or None when the cloud tier / the database is not used."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        namespace: pulumi.Input[str],
        instance: str,
        openai_api_key: pulumi.Output[str] | None,
        database_url: pulumi.Output[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("llm-gateway:index:LiteLLMGateway", name, None, opts)
        self._name, self._namespace = name, namespace
        self._child = pulumi.ResourceOptions(parent=self)
        self._labels = kube.labels(GATEWAY_SERVICE, instance, "gateway")
        selector = kube.selector_labels(GATEWAY_SERVICE, instance)
        files = gateway_files(settings)

        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=self._metadata(f"{GATEWAY_SERVICE}-config"),
            data=files,
            opts=self._child,
        )
        # LiteLLM refuses to start without a master key, and wants it to start with "sk-".
        password = random.RandomPassword(f"{name}-master-key", length=48, special=False, opts=self._child)
        self.master_key = pulumi.Output.secret(pulumi.Output.concat("sk-", password.result))
        secret_env = [self._secret_env("master-key", MASTER_KEY_ENV, self.master_key)]
        if openai_api_key is not None:
            secret_env.append(self._secret_env("openai-key", OPENAI_KEY_ENV, openai_api_key))
        if database_url is not None:
            secret_env.append(self._secret_env("database-url", DATABASE_URL_ENV, database_url))

        skips = kube.image_skips(settings.gateway.image.digest, "llm-gateway:gateway.imageDigest")
        # LiteLLM reads provider and master keys as `os.environ/NAME`; a file would need a wrapper.
        skips["CKV_K8S_35"] = "LiteLLM reads keys as os.environ/NAME; values come from Secrets via secretKeyRef"
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=self._metadata(GATEWAY_SERVICE, annotations=kube.checkov_skips(skips)),
            spec={
                "replicas": settings.gateway.replicas,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "selector": {"matchLabels": selector},
                "template": {
                    # A new chain rolls the pods; LiteLLM reads its config only at start.
                    "metadata": {"labels": self._labels, "annotations": {"checksum/config": config_checksum(files)}},
                    "spec": self._pod_spec(settings, config_map.metadata.name, secret_env, selector),
                },
            },
            opts=self._child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=self._metadata(GATEWAY_SERVICE),
            spec=kube.cluster_ip_service_spec(selector, GATEWAY_PORT, "http"),
            opts=self._child,
        )
        if settings.gateway.replicas >= 2:
            # Drains and upgrades keep one gateway answering. Not with one replica: the PDB would
            # block every node drain.
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=self._metadata(GATEWAY_SERVICE),
                spec={"minAvailable": 1, "selector": {"matchLabels": selector}},
                opts=self._child,
            )
        if settings.network_policies:
            k8s.networking.v1.NetworkPolicy(
                f"{name}-network",
                metadata=self._metadata(GATEWAY_SERVICE),
                spec=self._network_policy_spec(settings, instance),
                opts=self._child,
            )
        if settings.gateway.service_monitor:
            self._service_monitor(selector)
        self.config_map_name = config_map.metadata.name
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"serviceName": self.service_name, "configMapName": self.config_map_name})

    def _metadata(self, object_name: str, **extra: Any) -> dict[str, Any]:
        return kube.metadata(object_name, self._namespace, self._labels, **extra)

    def _secret_env(self, suffix: str, env_name: str, value: pulumi.Output[str]) -> dict[str, Any]:
        """One Secret holding one value, and the env entry that reads it. The value stays secret."""
        secret = k8s.core.v1.Secret(
            f"{self._name}-{suffix}",
            metadata=self._metadata(f"{GATEWAY_SERVICE}-{suffix}"),
            type="Opaque",
            string_data={env_name: pulumi.Output.secret(value)},
            opts=self._child,
        )
        return kube.secret_env(env_name, secret.metadata.name, env_name)

    def _service_monitor(self, selector: dict[str, str]) -> None:
        """prometheus-operator scrapes /metrics/ with the master key (LiteLLM asks for it there)."""
        k8s.apiextensions.CustomResource(
            f"{self._name}-metrics",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self._metadata(GATEWAY_SERVICE),
            spec={
                "selector": {"matchLabels": selector},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics/",
                        "interval": "30s",
                        "authorization": {
                            "type": "Bearer",
                            "credentials": {"name": f"{GATEWAY_SERVICE}-master-key", "key": MASTER_KEY_ENV},
                        },
                    }
                ],
            },
            opts=self._child,
        )

    @staticmethod
    def _network_policy_spec(settings: Settings, instance: str) -> dict[str, Any]:
        """Clients may reach port 4000; the gateway may reach the two local tiers, DNS, and (with a
        cloud tier) HTTPS outside the private ranges."""
        egress: list[dict[str, Any]] = [
            {
                "to": [{"podSelector": {"matchLabels": kube.selector_labels(VLLM_SERVICE, instance)}}],
                "ports": [{"protocol": "TCP", "port": VLLM_PORT}],
            },
            {
                "to": [{"podSelector": {"matchLabels": kube.selector_labels(OLLAMA_SERVICE, instance)}}],
                "ports": [{"protocol": "TCP", "port": OLLAMA_PORT}],
            },
            # DNS wherever the cluster runs it (kube-dns, CoreDNS, node-local caches): port 53 only.
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
        if settings.openai.enabled:
            private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]
            egress.append(
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": private}}],
                    "ports": [{"protocol": "TCP", "port": 443}],
                }
            )
        if settings.database:
            # The database host is inside the secret URL; only its port is opened, to any address.
            egress.append({"ports": [{"protocol": "TCP", "port": settings.gateway.database_port}]})
        return {
            "podSelector": {"matchLabels": kube.selector_labels(GATEWAY_SERVICE, instance)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}],
            "egress": egress,
        }

    @staticmethod
    def _pod_spec(
        settings: Settings, config_map: pulumi.Input[str], secret_env: list[dict[str, Any]], selector: dict[str, str]
    ) -> dict[str, Any]:
        gateway = settings.gateway
        return {
            "automountServiceAccountToken": False,
            "securityContext": kube.pod_security_context(),
            # Spread replicas over nodes when possible, so one node going away leaves a gateway.
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": selector},
                }
            ],
            "containers": [
                {
                    "name": "litellm",
                    "image": gateway.image.pinned,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE_NAME}", "--port", str(GATEWAY_PORT)],
                    "env": [
                        *kube.env(
                            {
                                "HOME": "/tmp",
                                "LITELLM_LOG": "ERROR",
                                # Use the bundled model cost map instead of fetching it at start.
                                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                            }
                        ),
                        *secret_env,
                    ],
                    "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
                    "resources": kube.resources(gateway.resources),
                    # With a database, LiteLLM's Prisma client writes its engine files at start.
                    "securityContext": kube.container_security_context(read_only_root=not settings.database),
                    "startupProbe": kube.http_probe(
                        "/health/liveliness", GATEWAY_PORT, period=5, timeout=3, failures=30
                    ),
                    # Never /health: it calls every model, the cloud included.
                    "readinessProbe": kube.http_probe(
                        "/health/readiness", GATEWAY_PORT, period=5, timeout=3, failures=3
                    ),
                    "livenessProbe": kube.http_probe(
                        "/health/liveliness", GATEWAY_PORT, period=15, timeout=5, failures=4
                    ),
                    "volumeMounts": [
                        # Mounted as a directory: LiteLLM looks for handler modules beside config.yaml.
                        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": config_map}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }

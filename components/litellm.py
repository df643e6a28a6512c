"""The LiteLLM proxy: the one endpoint clients call, holding the fallback chain.

ConfigMap (the rendered chain, no secret in it), Secrets (master key, OpenAI key), Deployment,
Service. Policy lives in core/ (chain.py, litellm_config.py); this file only deploys its output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from core import kube
from core.chain import Chain, longest_of
from core.gateway_pod import config_checksum, gateway_environment
from core.names import (
    CONFIG_FILE_NAME,
    DATABASE_URL_ENV,
    DATABASE_URL_SECRET,
    GATEWAY_PORT,
    GATEWAY_SERVICE,
    MASTER_KEY_ENV,
    MASTER_KEY_SECRET,
    OPENAI_KEY_ENV,
    OPENAI_KEY_SECRET,
    REDIS_PORT,
    REDIS_SERVICE,
    REDIS_URL_ENV,
    REDIS_URL_SECRET,
    secret_env_name,
    tier_key_secret,
)
from core.settings import GatewaySettings, RedisSettings

CONFIG_DIR = "/etc/litellm"
IMAGE_PULL_SECONDS = 300
# Before SIGTERM the pod leaves the Service's endpoints; every kube-proxy and ingress must see that
# before the proxy stops accepting, so the kubelet first pauses this long (preStop).
PRE_STOP_SECONDS = 10
# The pause as an exec hook, not `preStop.sleep` (feature PodLifecycleSleepAction: alpha and off in
# 1.29, on from 1.30, kubernetes pkg/features/kube_features.go), so it works on every supported
# Kubernetes. `python` is certain to be in the image: LiteLLM is Python, and the runtime stage of
# docker/Dockerfile.non_root itself runs `python -c …` on the image's PATH (/app/.venv/bin first).
PRE_STOP = {"exec": {"command": ["python", "-c", f"import time; time.sleep({PRE_STOP_SECONDS})"]}}
# On SIGTERM LiteLLM's uvicorn stops accepting and waits for the requests in flight, but only for
# GRACEFUL_SHUTDOWN_TIMEOUT (default 30 s, litellm/proxy/shutdown/graceful_shutdown_manager.py),
# then cancels them. The pod sets it to the longest answer the chain allows, and the kubelet's
# grace period covers the pause, that drain and the proxy's own teardown.
TEARDOWN_SECONDS = 10
# The image's own unprivileged user (`USER nobody` in docker/Dockerfile.non_root). In database
# mode LiteLLM writes the Prisma client and its migrations inside the image's tree, which that
# Dockerfile chowns to this user; our usual UID 10001 cannot write there.
IMAGE_USER = 65534
# The startup probe: LiteLLM listens after ~15 s here; 150 s leave room for a slow node.
STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURES = 30
# In database mode LiteLLM runs `prisma migrate deploy` before it listens, bounded by
# DEFAULT_PRISMA_MIGRATE_DEPLOY_TIMEOUT (600 s), after taking a Postgres advisory lock that it waits
# for up to migration_lock_timeout() (600 s) while another replica migrates
# (litellm_proxy_extras/prisma_toolchain.py and migration_lock.py, installed with litellm 1.108.7).
# So with two replicas, one pod may wait out the other's whole migration and then run its own: the
# startup probe allows both, or the kubelet would kill the pod mid-migration, again and again.
# Not covered: LiteLLM retrying a migration that timed out (MAX_MIGRATE_DEPLOY_ATTEMPTS, 4); the
# pod then restarts and tries again instead.
MIGRATION_LOCK_SECONDS = 600
MIGRATION_SECONDS = 600


@dataclass(frozen=True)
class LiteLLMArgs:
    gateway: GatewaySettings
    files: dict[str, str]  # the config directory: config.yaml and the gateway/ modules
    chains: tuple[Chain, ...]  # every chain: who the gateway may connect to
    placement: kube.Placement
    # Secret Outputs (`Config.require_secret`), or None when the cloud tier / the database is off.
    openai_api_key: pulumi.Output[str] | None = None
    # The keys the chains' other cloud tiers and endpoints name (`apiKey`), by stack-config key.
    tier_keys: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    database_url: pulumi.Output[str] | None = None
    # The fleet's shared state: RedisStore.url (deploy), the secret `redisUrl` (external), or none (off).
    redis: RedisSettings = field(default_factory=RedisSettings)
    redis_url: pulumi.Output[str] | None = None
    # The operator's own gateway key (a secret Output, `llm-gateway:masterKey`); None: generated.
    master_key: pulumi.Output[str] | None = None


class LiteLLMGateway(pulumi.ComponentResource):
    """The gateway: the ConfigMap holding the chain, its Secrets, Deployment, Service and guards."""

    def __init__(self, name: str, args: LiteLLMArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:LiteLLMGateway", name, None, opts)
        placement, gateway, files = args.placement, args.gateway, args.files
        self._name, self._namespace = name, placement.namespace
        self._child = pulumi.ResourceOptions(parent=self)
        self._labels = kube.labels(GATEWAY_SERVICE, placement.instance, "gateway")
        selector = kube.selector_labels(GATEWAY_SERVICE, placement.instance)

        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=self._metadata(f"{GATEWAY_SERVICE}-config"),
            data=files,
            opts=self._child,
        )
        own_key = args.master_key  # e.g. the old gateway's, so its clients keep working
        self.master_key = pulumi.Output.secret(own_key if own_key is not None else self._generated_master_key(name))
        master_key_secret = self._secret(MASTER_KEY_SECRET, MASTER_KEY_ENV, self.master_key)
        secret_env = [kube.secret_env(MASTER_KEY_ENV, master_key_secret.metadata.name, MASTER_KEY_ENV)]
        for suffix, env_name, value in (
            (OPENAI_KEY_SECRET, OPENAI_KEY_ENV, args.openai_api_key),
            (DATABASE_URL_SECRET, DATABASE_URL_ENV, args.database_url),
            (REDIS_URL_SECRET, REDIS_URL_ENV, args.redis_url),
        ):
            if value is not None:
                secret = self._secret(suffix, env_name, value)
                secret_env.append(kube.secret_env(env_name, secret.metadata.name, env_name))
        for key_name, value in args.tier_keys.items():
            env_name = secret_env_name(key_name)
            secret = self._secret(tier_key_secret(key_name), env_name, value)
            secret_env.append(kube.secret_env(env_name, secret.metadata.name, env_name))

        skips = kube.image_skips(gateway)
        # LiteLLM reads provider and master keys as `os.environ/NAME`; a file would need a wrapper.
        skips["CKV_K8S_35"] = "LiteLLM reads keys as os.environ/NAME; values come from Secrets via secretKeyRef"
        database = args.database_url is not None
        pod_spec = self._pod_spec(gateway, config_map.metadata.name, secret_env, selector, database, args.chains)
        # The Service's await waits for the same pods (backend.expose_to_gateway): the same budget.
        awaits = {kube.AWAIT_ANNOTATION: str(kube.rollout_seconds(pod_spec, IMAGE_PULL_SECONDS))}
        annotations = {**kube.checkov_skips(skips), **awaits}
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=self._metadata(GATEWAY_SERVICE, annotations=annotations),
            spec={
                # With the autoscaler on, the count is its: Pulumi does not set it (or every `pulumi up`
                # would reset what the autoscaler chose).
                **({} if gateway.autoscaling.enabled else {"replicas": gateway.replicas}),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "selector": {"matchLabels": selector},
                "template": {
                    # A new chain rolls the pods; LiteLLM reads its config only at start.
                    "metadata": {"labels": self._labels, "annotations": {"checksum/config": config_checksum(files)}},
                    "spec": pod_spec,
                },
            },
            opts=self._child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=self._metadata(GATEWAY_SERVICE, annotations=awaits),
            spec=kube.cluster_ip_service_spec(selector, GATEWAY_PORT, "http"),
            opts=self._child,
        )
        if gateway.autoscaling.enabled:
            self._autoscaler(gateway, deployment.metadata.name)
        if gateway.fewest_replicas >= 2:
            # Drains and upgrades keep one gateway answering. Not with one replica: the PDB would
            # block every node drain.
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=self._metadata(GATEWAY_SERVICE),
                spec={"minAvailable": 1, "selector": {"matchLabels": selector}},
                opts=self._child,
            )
        if placement.network_policies:
            k8s.networking.v1.NetworkPolicy(
                f"{name}-network",
                metadata=self._metadata(GATEWAY_SERVICE),
                spec=network_policy_spec(args),
                opts=self._child,
            )
        if gateway.service_monitor:
            self._service_monitor(selector, master_key_secret.metadata.name, gateway.service_monitor_labels)
        self.config_map_name = config_map.metadata.name
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"serviceName": self.service_name, "configMapName": self.config_map_name})

    def _metadata(self, object_name: str, **extra: Any) -> dict[str, Any]:
        return kube.metadata(object_name, self._namespace, self._labels, **extra)

    def _generated_master_key(self, name: str) -> pulumi.Output[str]:
        """LiteLLM refuses to start without a master key; generated ones start with "sk-", as its own do."""
        password = random.RandomPassword(f"{name}-master-key", length=48, special=False, opts=self._child)
        return pulumi.Output.concat("sk-", password.result)

    def _secret(self, suffix: str, env_name: str, value: pulumi.Output[str]) -> k8s.core.v1.Secret:
        """One Secret holding one value under its env var's name. The value stays secret.

        Auto-named (`litellm-openai-key-<random>`), not named: pulumi-kubernetes replaces a Secret
        whose data changes, and the new name changes the pod template, so a rotated key rolls the
        gateway (env from `secretKeyRef` is read only at container start). No checksum of the value
        is needed, so nothing derived from it is ever in plain text."""
        return k8s.core.v1.Secret(
            f"{self._name}-{suffix}",
            metadata={"namespace": self._namespace, "labels": self._labels},
            type="Opaque",
            string_data={env_name: pulumi.Output.secret(value)},
            opts=self._child,
        )

    def _autoscaler(self, gateway: GatewaySettings, deployment: pulumi.Input[str]) -> None:
        scaling = gateway.autoscaling
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{self._name}-autoscaler",
            metadata=self._metadata(GATEWAY_SERVICE),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                "minReplicas": scaling.min_replicas,
                "maxReplicas": scaling.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": scaling.cpu_target_percent},
                        },
                    }
                ],
                "behavior": {
                    # Removing a pod ends its streams after a drain: slowly, one at a time.
                    "scaleDown": {
                        "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    }
                },
            },
            opts=self._child,
        )

    def _service_monitor(
        self, selector: dict[str, str], master_key_secret: pulumi.Input[str], extra_labels: Mapping[str, str]
    ) -> None:
        """prometheus-operator scrapes /metrics/ with the master key (LiteLLM asks for it there).

        A Prometheus picks ServiceMonitors by label (kube-prometheus-stack: `release: <its release>`),
        so the operator's labels go on it, or nothing is ever scraped."""
        k8s.apiextensions.CustomResource(
            f"{self._name}-metrics",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=kube.metadata(GATEWAY_SERVICE, self._namespace, {**self._labels, **extra_labels}),
            spec={
                "selector": {"matchLabels": selector},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics/",
                        "interval": "30s",
                        "authorization": {
                            "type": "Bearer",
                            "credentials": {"name": master_key_secret, "key": MASTER_KEY_ENV},
                        },
                    }
                ],
            },
            opts=self._child,
        )

    @staticmethod
    def _pod_spec(
        gateway: GatewaySettings,
        config_map: pulumi.Input[str],
        secret_env: list[dict[str, Any]],
        selector: dict[str, str],
        database: bool,
        every: tuple[Chain, ...],
    ) -> dict[str, Any]:
        return {
            **kube.no_token_no_service_links(),
            "securityContext": kube.pod_security_context(IMAGE_USER if database else kube.RUN_AS_USER),
            # A rollout or a drain must not cut the longest answer any chain allows.
            "terminationGracePeriodSeconds": PRE_STOP_SECONDS + longest_of(every) + TEARDOWN_SECONDS,
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
                    "image": gateway.pinned_image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE_NAME}", "--port", str(GATEWAY_PORT)],
                    "env": [*kube.env(gateway_environment(gateway, every)), *secret_env],
                    "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
                    "lifecycle": {"preStop": PRE_STOP},
                    "resources": kube.resources(gateway.resources),
                    # With a database, LiteLLM's Prisma client writes its engine files at start.
                    "securityContext": kube.container_security_context(read_only_root=not database),
                    "startupProbe": kube.http_probe(
                        "/health/liveliness",
                        GATEWAY_PORT,
                        period=STARTUP_PERIOD_SECONDS,
                        timeout=3,
                        failures=startup_failures(database),
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


def startup_failures(database: bool) -> int:
    """Failed startup probes the kubelet allows: the start, after the migration in database mode."""
    migration = MIGRATION_LOCK_SECONDS + MIGRATION_SECONDS
    return STARTUP_FAILURES + (math.ceil(migration / STARTUP_PERIOD_SECONDS) if database else 0)


# Where the cloud tier may be: anywhere but the private ranges (the local tiers are in-cluster pods).
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]
# The same for IPv6 (dual-stack clusters): unique-local, link-local and loopback stay closed.
PRIVATE_RANGES_V6 = ["fc00::/7", "fe80::/10", "::1/128"]


def _public() -> list[dict[str, Any]]:
    """Any address outside the private ranges (IPv4 and IPv6)."""
    return [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}},
        {"ipBlock": {"cidr": "::/0", "except": PRIVATE_RANGES_V6}},
    ]


def _tcp(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def network_policy_spec(args: LiteLLMArgs) -> dict[str, Any]:
    """Clients may reach port 4000; the gateway may reach each in-cluster tier of the chain, DNS,
    and (when a tier is outside the cluster) HTTPS outside the private ranges."""
    instance = args.placement.instance
    tiers = [tier for chain in args.chains for tier in chain.tiers]
    deployed = {(tier.service, tier.port): None for tier in tiers if tier.service is not None}
    egress: list[dict[str, Any]] = [
        {
            "to": [{"podSelector": {"matchLabels": kube.selector_labels(service, instance)}}],
            "ports": [{"protocol": "TCP", "port": port}],
        }
        for service, port in deployed
    ]
    # An endpoint this program does not deploy: its port, to any pod of the cluster (an in-cluster
    # Service: its pods' labels are not ours to know), or outside the private ranges (a URL).
    for inside in (True, False):
        ports = sorted({tier.port for tier in tiers if tier.kind == "endpoint" and tier.in_cluster == inside})
        if ports:
            egress.append({"to": [{"namespaceSelector": {}}] if inside else _public(), "ports": _tcp(ports)})
    # DNS wherever the cluster runs it (kube-dns, CoreDNS, node-local caches), on its ports only.
    dns = [{"protocol": protocol, "port": port} for port in args.gateway.dns_ports for protocol in ("UDP", "TCP")]
    egress.append({"ports": dns})
    if any(tier.kind == "cloud" for tier in tiers):
        egress.append({"to": _public(), "ports": _tcp([443])})
    if args.database_url is not None:
        # The database host is inside the secret URL; only its port is opened, to any address.
        egress.append({"ports": [{"protocol": "TCP", "port": args.gateway.database_port}]})
    if args.redis.mode == "deploy":
        redis_pods = {"podSelector": {"matchLabels": kube.selector_labels(REDIS_SERVICE, instance)}}
        egress.append({"to": [redis_pods], "ports": [{"protocol": "TCP", "port": REDIS_PORT}]})
    elif args.redis.mode == "external":
        # As for the database: the host is inside the secret URL, only the port is opened.
        egress.append({"ports": [{"protocol": "TCP", "port": args.redis.external_port}]})
    return {
        "podSelector": {"matchLabels": kube.selector_labels(GATEWAY_SERVICE, instance)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}],
        "egress": egress,
    }

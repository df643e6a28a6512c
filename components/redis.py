"""Redis for the gateway fleet (`redis.mode: deploy`): a password Secret, a PVC, a Deployment,
a Service, and a NetworkPolicy that admits only the gateway.

What it holds and why it is configured so: core/redis_config.py. The gateway reaches it
through its own Secret holding the URL (password included); nothing here is in a ConfigMap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.backend import expose_to_gateway, model_volume, recreated_deployment
from core import kube
from core.names import REDIS_PORT, REDIS_SERVICE, service_host
from core.redis_config import REDIS_DATA_DIR, redis_conf, redis_url
from core.settings import RedisSettings

CONFIG_DIR = "/etc/redis"
CONFIG_KEY = "redis.conf"
PASSWORD_KEY = "password"
# The official image's `redis` user (Dockerfile: `useradd -r -g redis -u 999 redis`; it owns /data).
# Started as that user, docker-entrypoint.sh skips its chown-and-gosu step and execs redis-server.
REDIS_USER = 999
IMAGE_PULL_SECONDS = 120
# redis-cli reads the password from REDISCLI_AUTH, so it is not on the probe's command line.
PING = ["/bin/sh", "-c", 'redis-cli -p "$REDIS_PORT" ping | grep -q PONG']


@dataclass(frozen=True)
class RedisArgs:
    redis: RedisSettings
    placement: kube.Placement
    cluster_domain: str


class RedisStore(pulumi.ComponentResource):
    """One Redis the gateway replicas share. `url` is a secret Output (it holds the password)."""

    def __init__(self, name: str, args: RedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-gateway:index:RedisStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        placement, redis = args.placement, args.redis
        namespace, instance = placement.namespace, placement.instance
        labels = kube.labels(REDIS_SERVICE, instance, "state")

        password = random.RandomPassword(f"{name}-password", length=40, special=False, opts=child)
        # Auto-named: a new password is a new Secret, which changes the pod template and restarts Redis.
        config = k8s.core.v1.Secret(
            f"{name}-config",
            metadata={"namespace": namespace, "labels": labels},
            type="Opaque",
            string_data={
                CONFIG_KEY: pulumi.Output.secret(
                    password.result.apply(lambda secret: redis_conf(secret, REDIS_DATA_DIR, redis.max_memory_mb))
                ),
                PASSWORD_KEY: pulumi.Output.secret(password.result),
            },
            opts=child,
        )
        data = model_volume(
            f"{name}-data",
            f"{REDIS_SERVICE}-data",
            redis.storage_size,
            redis.storage_class_name,
            namespace,
            labels,
            child,
        )
        pod_spec = self._pod_spec(redis, config.metadata.name, data.metadata.name)
        rollout = kube.rollout_seconds(pod_spec, IMAGE_PULL_SECONDS)
        deployment = recreated_deployment(
            name, REDIS_SERVICE, placement, labels, pod_spec, kube.image_skips(redis), rollout, child
        )
        service = expose_to_gateway(
            name, REDIS_SERVICE, REDIS_PORT, placement, labels, child, port_name="redis", await_seconds=rollout
        )
        host = pulumi.Output.from_input(namespace).apply(
            lambda space: service_host(REDIS_SERVICE, space, args.cluster_domain)
        )
        self.url = pulumi.Output.secret(
            pulumi.Output.all(password.result, host).apply(lambda values: redis_url(values[0], values[1], REDIS_PORT))
        )
        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        self.register_outputs({"deploymentName": self.deployment_name, "serviceName": self.service_name})

    @staticmethod
    def _pod_spec(
        redis: RedisSettings, config_secret: pulumi.Input[str], data_claim: pulumi.Input[str]
    ) -> dict[str, Any]:
        return {
            **kube.no_token_no_service_links(),
            "securityContext": kube.pod_security_context(REDIS_USER),
            "containers": [
                {
                    "name": "redis",
                    "image": redis.pinned_image,
                    "imagePullPolicy": "IfNotPresent",
                    # The entrypoint turns a lone `*.conf` argument into `redis-server <file>`.
                    "args": [f"{CONFIG_DIR}/{CONFIG_KEY}"],
                    "env": [
                        *kube.env({"REDIS_PORT": str(REDIS_PORT)}),
                        kube.secret_env("REDISCLI_AUTH", config_secret, PASSWORD_KEY),
                    ],
                    "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
                    "resources": kube.resources(redis.resources),
                    "securityContext": kube.container_security_context(read_only_root=True),
                    # Replaying a large append-only file takes a while; Redis answers -LOADING meanwhile.
                    "startupProbe": kube.exec_probe(PING, period=2, timeout=2, failures=150),
                    "readinessProbe": kube.exec_probe(PING, period=5, timeout=2, failures=2),
                    "livenessProbe": kube.exec_probe(PING, period=15, timeout=5, failures=4),
                    "volumeMounts": [
                        {"name": "data", "mountPath": REDIS_DATA_DIR},
                        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": data_claim}},
                {"name": "config", "secret": {"secretName": config_secret}},
            ],
        }

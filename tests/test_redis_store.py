"""The fleet's Redis under Pulumi's mocks: deployed by the program, or an existing one given as a
secret URL, or none. Every object is checked against the Kubernetes schemas (strict)."""

import json

import kubernetes_validate
import pytest
import yaml

from core.declarations import ConfigError
from core.names import REDIS_URL_ENV
from core.settings import parse_settings
from pulumi_harness import (
    CONFIG_MAP,
    DEPLOYMENT,
    MASTER_KEY_CANARY,
    NETWORK_POLICY,
    SECRET,
    SERVICE,
    auto_name,
    run_program,
    run_program_expecting_error,
)

KEY = {"openaiApiKey": "sk-redis-test"}
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
EXTERNAL = "rediss://:external-password@redis.example.internal:6380/0"
REDIS_OBJECTS = (DEPLOYMENT, SERVICE, SECRET, PVC, NETWORK_POLICY)


def deployed(**redis):
    return run_program({"namespace": "fleet", "redis": {"mode": "deploy", **redis}}, KEY)


def container(run, name):
    return run.one(DEPLOYMENT, name).inputs["spec"]["template"]["spec"]["containers"][0]


def gateway_config(run):
    return yaml.safe_load(run.one(CONFIG_MAP, "litellm-config").inputs["data"]["config.yaml"])


def test_a_deployed_redis_runs_as_the_images_user_on_its_own_volume():
    run = deployed()
    redis = run.one(DEPLOYMENT, "redis").inputs
    spec = redis["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # one writer of the AOF
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 999 == pod["securityContext"]["fsGroup"]
    box = pod["containers"][0]
    assert box["image"] == "redis:7.0.15"
    assert box["args"] == ["/etc/redis/redis.conf"]
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in box["volumeMounts"]} == {"/data", "/etc/redis"}
    config_secret = next(v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v)
    assert config_secret == auto_name("redis-config")  # the config is a Secret: it holds the password
    auth = next(e for e in box["env"] if e["name"] == "REDISCLI_AUTH")
    assert auth["valueFrom"]["secretKeyRef"] == {"name": config_secret, "key": "password"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "redis-cli" in " ".join(box[probe]["exec"]["command"])  # the password stays in the env
    assert int(redis["metadata"]["annotations"]["pulumi.com/timeoutSeconds"]) >= 300 + 120
    claim = run.one(PVC, "redis-data").inputs
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    for kind in REDIS_OBJECTS:
        for resource in run.of_type(kind):
            kubernetes_validate.validate(resource.inputs, "1.33", strict=True)


def test_the_redis_config_keeps_counts_across_restarts_and_never_evicts_them():
    run = deployed(maxMemoryMb=100)
    secret = run.one(SECRET, "redis-config")
    assert sorted(secret.secret_paths) == ["stringData"]
    conf = secret.inputs["stringData"]["redis.conf"].splitlines()
    assert f"requirepass {MASTER_KEY_CANARY}" in conf
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory 100mb", "maxmemory-policy noeviction"):
        assert line in conf


def test_only_the_gateway_may_reach_redis_and_the_gateway_may_reach_it():
    run = deployed()
    (policy,) = [p for p in run.of_type(NETWORK_POLICY) if p.inputs["metadata"]["name"] == "redis-from-gateway"]
    spec = policy.inputs["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"
    (rule,) = spec["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "litellm"
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    egress = run.one(NETWORK_POLICY, "litellm").inputs["spec"]["egress"]
    to_redis = [r for r in egress if r.get("to") and "redis" in json.dumps(r["to"])]
    assert [r["ports"] for r in to_redis] == [[{"protocol": "TCP", "port": 6379}]]


def test_the_gateway_gets_the_url_from_its_own_secret_and_the_config_names_only_the_variable():
    run = deployed()
    env = {e["name"]: e for e in container(run, "litellm")["env"]}
    reference = env[REDIS_URL_ENV]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": auto_name("litellm-redis-url"), "key": REDIS_URL_ENV}
    secret = run.one(SECRET, "litellm-redis-url")
    assert secret.secret_paths == ["stringData"]
    assert secret.inputs["stringData"][REDIS_URL_ENV] == (
        f"redis://:{MASTER_KEY_CANARY}@redis.fleet.svc.cluster.local:6379/0"
    )
    router = gateway_config(run)["router_settings"]
    assert router["redis_url"] == f"os.environ/{REDIS_URL_ENV}"
    assert router["cache_kwargs"] == {
        "namespace": "llm-gateway:fleet",
        "socket_timeout": 0.25,
        "socket_connect_timeout": 0.25,
    }
    assert MASTER_KEY_CANARY not in json.dumps(gateway_config(run))


def test_an_external_redis_is_used_as_given_and_nothing_is_deployed():
    run = run_program({"redis": {"mode": "external", "externalPort": 6380}}, {**KEY, "redisUrl": EXTERNAL})
    assert [r for r in run.resources if r.type == DEPLOYMENT and r.name.startswith("redis")] == []
    assert run.one(SECRET, "litellm-redis-url").inputs["stringData"][REDIS_URL_ENV] == EXTERNAL
    egress = run.one(NETWORK_POLICY, "litellm").inputs["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 6380}]} in egress


def test_without_redis_every_replica_counts_alone_and_nothing_mentions_redis():
    run = run_program({"openai": {"rpm": 10}}, KEY)
    assert not [r for r in run.resources if "redis" in r.name]
    config = gateway_config(run)
    assert "redis_url" not in config["router_settings"]
    assert config["model_list"][-1]["model_info"]["spend_guard"] == {"rpm": 10}


def test_the_spend_guard_is_told_where_the_fleet_counts():
    config = gateway_config(deployed(cloudGuardWhenDown="open", timeoutMilliseconds=100))
    assert config["model_list"][-1]["model_info"].get("spend_guard") is None  # no limit set: nothing to count
    run = run_program({"namespace": "fleet", "openai": {"rpm": 3}, "redis": {"mode": "deploy"}}, KEY)
    assert gateway_config(run)["model_list"][-1]["model_info"]["spend_guard"] == {
        "rpm": 3,
        "redis_url_env": REDIS_URL_ENV,
        "redis_timeout_seconds": 0.25,
        "key_prefix": "llm-gateway:fleet",
        "when_redis_down": "closed",
    }


@pytest.mark.parametrize(
    ("config", "secrets", "key", "words"),
    [
        ({"redis": {"mode": "external"}}, {}, "llm-gateway:redisUrl", "is not set"),
        ({}, {"redisUrl": EXTERNAL}, "llm-gateway:redisUrl", "redis.mode is off"),
        ({"redis": {"mode": "deploy"}}, {"redisUrl": EXTERNAL}, "llm-gateway:redisUrl", "redis.mode is deploy"),
        ({"redis": {"mode": "cluster"}}, {}, "llm-gateway:redis.mode", "off, deploy, external"),
        ({"redis": {"cloudGuardWhenDown": "ajar"}}, {}, "llm-gateway:redis.cloudGuardWhenDown", "closed"),
        ({"redis": {"timeoutMilliseconds": 0}}, {}, "llm-gateway:redis.timeoutMilliseconds", "10"),
    ],
)
def test_bad_redis_settings_name_the_key_before_anything_is_created(config, secrets, key, words):
    error, registered = run_program_expecting_error(config, {**KEY, **secrets})
    assert registered == []
    assert str(error).startswith(key + " ") and words in str(error)
    assert "external-password" not in str(error)


def test_a_plaintext_redis_url_is_refused_without_showing_it():
    with pytest.raises(ConfigError, match=r"^llm-gateway:redisUrl is stored in plain text") as caught:
        parse_settings({"redis": {"mode": "external"}}, "secret", redis_url="plaintext")
    assert "pulumi config set --secret llm-gateway:redisUrl" in str(caught.value)

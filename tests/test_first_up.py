"""The first real `pulumi up`: what the real images, clusters and Pulumi's await would trip on.

Each test names the item of issue #12 it covers. What needs a process runs it the way the pod
would (bubblewrap: another UID with no passwd entry, a cleared environment).
"""

import json
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from components.litellm import IMAGE_USER, PRE_STOP, PRE_STOP_SECONDS, TEARDOWN_SECONDS
from core import kube
from core.chain import longest_answer_seconds
from core.stack_files import stack_config
from pulumi_harness import CONFIG_MAP, DEPLOYMENT, NETWORK_POLICY, SECRET, auto_name, run_program

KEY = {"openaiApiKey": "sk-first-up-test"}


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_config("prod"), KEY, stack="prod")


def deployment(run, name):
    return run.one(DEPLOYMENT, name).inputs


def pod(run, name):
    return deployment(run, name)["spec"]["template"]["spec"]


def env_of(container):
    return {item["name"]: item.get("value") for item in container["env"]}


def mounted(container, path):
    return any(path == m["mountPath"] or path.startswith(m["mountPath"] + "/") for m in container["volumeMounts"])


# 1. vLLM as UID 10001 -------------------------------------------------------------------------


def test_vllm_names_its_user_and_keeps_every_cache_on_the_cache_volume(prod):
    vllm = pod(prod, "vllm")["containers"][0]
    env = env_of(vllm)
    assert env["USER"] == env["LOGNAME"] == "vllm"  # getpass.getuser() reads these before pwd
    for cache in (
        "HOME",
        "HF_HOME",
        "XDG_CACHE_HOME",
        "VLLM_CACHE_ROOT",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
    ):
        assert env[cache].startswith("/cache"), cache
        assert mounted(vllm, env[cache]), cache
    assert mounted(vllm, "/tmp")


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is installed by scripts/test")
def test_getuser_works_for_a_uid_without_a_passwd_entry_only_with_the_pods_env(prod):
    # As the pod runs: UID 10001, which no passwd file here (or in the vLLM image) knows.
    env = env_of(pod(prod, "vllm")["containers"][0])
    probe = "import getpass; print(getpass.getuser())"
    sandbox = ["bwrap", "--ro-bind", "/", "/", "--unshare-user", "--uid", "10001", "--gid", "10001", "--clearenv"]
    bare = subprocess.run([*sandbox, sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert bare.returncode != 0 and "KeyError" in bare.stderr  # what torch met in the vLLM image
    pods_env = [arg for name in ("USER", "LOGNAME") for arg in ("--setenv", name, env[name])]
    fixed = subprocess.run([*sandbox, *pods_env, sys.executable, "-c", probe], capture_output=True, text=True)
    assert fixed.returncode == 0 and fixed.stdout.strip() == "vllm", fixed.stderr


# 2. Pulumi's await ----------------------------------------------------------------------------


def test_pulumi_waits_as_long_as_each_pod_may_take_to_become_ready(prod):
    for name in ("vllm", "ollama", "litellm"):
        manifest = deployment(prod, name)
        waits = int(manifest["metadata"]["annotations"][kube.AWAIT_ANNOTATION])
        spec = manifest["spec"]["template"]["spec"]
        for container in spec["containers"]:
            startup = container.get("startupProbe")
            if startup:
                # Never shorter than the kubelet's own patience with the container.
                assert waits > kube.probe_budget_seconds(startup), name
        assert waits > 600 or name == "litellm", name  # pulumi-kubernetes' default is 10 minutes
    vllm_startup = pod(prod, "vllm")["containers"][0]["startupProbe"]
    assert kube.probe_budget_seconds(vllm_startup) >= 900  # 15 minutes to download and load a model


def test_the_ollama_pull_has_a_budget_and_pulumi_waits_for_it():
    run = run_program({"ollama": {"pullTimeoutSeconds": 3600}}, KEY)
    init = pod(run, "ollama")["initContainers"][0]
    assert 'timeout "$PULL_TIMEOUT_SECONDS" ollama pull' in init["command"][2]
    assert env_of(init)["PULL_TIMEOUT_SECONDS"] == "3600"
    waits = int(deployment(run, "ollama")["metadata"]["annotations"][kube.AWAIT_ANNOTATION])
    assert waits > 3600


# 3. Ollama never sees a GPU unless asked --------------------------------------------------------


def test_ollama_hides_every_gpu_by_default_and_only_an_operator_turns_that_off(prod):
    for container in [*pod(prod, "ollama")["initContainers"], *pod(prod, "ollama")["containers"]]:
        env = env_of(container)
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == "-1"
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
    with_gpu = run_program({"ollama": {"gpu": True}}, KEY)
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(pod(with_gpu, "ollama")["containers"][0])


# 4. Database mode with the non-root LiteLLM image ------------------------------------------------


def test_database_mode_runs_as_the_images_own_user_and_plain_mode_stays_read_only():
    plain = pod(run_program({}, KEY), "litellm")
    assert plain["securityContext"]["runAsUser"] == kube.RUN_AS_USER
    assert plain["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The image sets XDG_CACHE_HOME=/app/.cache, read-only here: it is moved onto the tmp volume.
    assert env_of(plain["containers"][0])["XDG_CACHE_HOME"].startswith("/tmp/")
    database = pod(run_program({}, {**KEY, "databaseUrl": "postgresql://u:p@db:5432/l"}), "litellm")
    assert database["securityContext"]["runAsUser"] == IMAGE_USER == 65534  # `USER nobody`
    assert database["securityContext"]["runAsNonRoot"] is True


# 5. A rotated secret reaches the pods ----------------------------------------------------------


def test_secrets_are_auto_named_so_a_new_value_rolls_the_gateway(prod):
    secrets = prod.of_type(SECRET)
    assert secrets and all("name" not in s.inputs["metadata"] for s in secrets)
    env = {item["name"]: item for item in pod(prod, "litellm")["containers"][0]["env"]}
    for logical, variable in (("litellm-master-key", "LITELLM_MASTER_KEY"), ("litellm-openai-key", "OPENAI_API_KEY")):
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == auto_name(logical)
    # Nothing derived from a secret value is written in plain text (no checksum annotations).
    template = deployment(prod, "litellm")["spec"]["template"]["metadata"]["annotations"]
    assert list(template) == ["checksum/config"]


# 6. An existing namespace ----------------------------------------------------------------------


def test_an_existing_namespace_is_used_and_never_created():
    run = run_program({"namespace": "ml", "createNamespace": False}, KEY)
    assert not run.of_type("kubernetes:core/v1:Namespace")
    for resource in run.kubernetes:
        assert resource.inputs["metadata"]["namespace"] == "ml", resource.name
    assert run.outputs["namespace"] == "ml"


# 7. Cluster domain -----------------------------------------------------------------------------


def test_the_cluster_domain_is_a_setting():
    run = run_program({"clusterDomain": "k8s.example.internal"}, KEY)
    assert run.outputs["gatewayUrl"] == "http://litellm.llm-gateway.svc.k8s.example.internal:4000"
    config = yaml.safe_load(run.one(CONFIG_MAP, "litellm-config").inputs["data"]["config.yaml"])
    bases = [m["litellm_params"]["api_base"] for m in config["model_list"][:2]]
    assert all(".svc.k8s.example.internal:" in base for base in bases)


# 8. Network policies ---------------------------------------------------------------------------


def test_cloud_egress_covers_ipv6_and_dns_ports_are_a_setting():
    run = run_program({"gateway": {"dnsPorts": [53, 5353]}}, KEY)
    (policy,) = [p for p in run.of_type(NETWORK_POLICY) if p.inputs["metadata"]["name"] == "litellm"]
    egress = policy.inputs["spec"]["egress"]
    https = next(rule for rule in egress if rule.get("ports") == [{"protocol": "TCP", "port": 443}])
    cidrs = {peer["ipBlock"]["cidr"] for peer in https["to"]}
    assert cidrs == {"0.0.0.0/0", "::/0"}
    dns = next(rule for rule in egress if any(p["port"] == 5353 for p in rule.get("ports", [])))
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {
        (protocol, port) for port in (53, 5353) for protocol in ("UDP", "TCP")
    }


# 9. Rolling the gateway does not cut long answers ----------------------------------------------


def test_the_gateway_pod_waits_for_the_longest_answer_and_leaves_the_endpoints_first(prod):
    from core.chain import failover_chain
    from core.stack_files import stack_settings

    spec = pod(prod, "litellm")
    chain = failover_chain(stack_settings("prod"))
    assert longest_answer_seconds(chain) == 600 + 600 + 120  # vLLM, then Ollama, then the cloud
    longest = longest_answer_seconds(chain)
    assert spec["terminationGracePeriodSeconds"] == PRE_STOP_SECONDS + longest + TEARDOWN_SECONDS
    assert spec["containers"][0]["lifecycle"] == {"preStop": PRE_STOP}  # how long it pauses: tests/test_pod.py
    # LiteLLM's own drain after SIGTERM is 30 s unless told: told the longest answer.
    assert env_of(spec["containers"][0])["GRACEFUL_SHUTDOWN_TIMEOUT"] == str(longest)


# 10. vLLM hygiene ------------------------------------------------------------------------------


def test_vllm_sends_no_usage_statistics_and_volumes_are_not_chowned_on_every_start(prod):
    env = env_of(pod(prod, "vllm")["containers"][0])
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    for name in ("vllm", "ollama", "litellm"):
        assert pod(prod, name)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_every_new_field_is_strict_valid(prod):
    for resource in prod.kubernetes:
        if not resource.type.startswith("kubernetes:index") and "monitoring" not in resource.type:
            kubernetes_validate.validate(json.loads(json.dumps(resource.inputs)), "1.33", strict=True)

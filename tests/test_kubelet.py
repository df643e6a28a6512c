"""What the kubelet does to our pods by itself (issue 19, items 1, 4 and 5).

Service links: the environment each pod gets is drill/pod.py's emulation of the kubelet
(pkg/kubelet/kubelet_pods.go getServiceEnvVarMap, pkg/kubelet/envvars/envvars.go FromServices) over
the Services the program renders; what each program reads comes from its own code where it can be
had (vLLM's envs.py, vendored and run here; the installed LiteLLM), else from its sources, cited.
Then the preStop hook on the oldest Kubernetes the README names, and the startup budget of database
mode against LiteLLM's own migration timeout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest
from kubernetes_validate import ValidationError
from litellm_proxy_extras.prisma_toolchain import DEFAULT_PRISMA_MIGRATE_DEPLOY_TIMEOUT, migration_lock_timeout

from components.litellm import MIGRATION_LOCK_SECONDS, MIGRATION_SECONDS
from core import kube
from drill.pod import LITELLM_IMAGE_ENV, container_environment, service_environment
from pulumi_harness import CONFIG_MAP, DEPLOYMENT, SERVICE, auto_name, run_program

KEY = {"openaiApiKey": "sk-kubelet-test"}
DATABASE = {**KEY, "databaseUrl": "postgresql://litellm:secret@db:5432/litellm"}
VLLM_ENVS = Path(__file__).parent / "upstream" / "vllm_envs_0_11_0.py"
VLLM_ENVS_SHA256 = "a70016521a542d7bfa4884c0f9c3efc74df8cd030f5971a58774a87ab35d3803"  # the sdist member


def names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# What Ollama v0.12.6 reads from its environment (ollama/ollama at tag v0.12.6, every non-test file):
# envconfig/config.go and the other Go sources (os.Getenv/LookupEnv, envconfig.Var/String/Bool/Uint;
# upper-case names and the lower-case proxy ones), and getenv() in the vendored llama.cpp/ggml C/C++.
# The image sets only PATH, LD_LIBRARY_PATH, NVIDIA_* and OLLAMA_HOST (Dockerfile); its entrypoint is
# /bin/ollama itself.
OLLAMA_READS = names(
    """CUDA_VISIBLE_DEVICES GGML_BACKEND_PATH GGML_CUDA_DISABLE_FUSION GGML_CUDA_DISABLE_GRAPHS
    GGML_CUDA_ENABLE_UNIFIED_MEMORY GGML_CUDA_INIT GGML_CUDA_NO_PINNED GGML_CUDA_REGISTER_HOST
    GGML_METAL_CONCURRENCY_DISABLE GGML_METAL_FUSION_DEBUG GGML_METAL_FUSION_DISABLE GGML_METAL_GRAPH_DEBUG
    GGML_METAL_GRAPH_OPTIMIZE_DISABLE GGML_METAL_NO_RESIDENCY GGML_METAL_SHARED_BUFFERS_DISABLE
    GGML_NO_BACKTRACE GGML_SCHED_DEBUG GGML_VK_ALLOW_SYSMEM_FALLBACK GGML_VK_DEBUG_MARKERS
    GGML_VK_DISABLE_BFLOAT16 GGML_VK_DISABLE_COOPMAT GGML_VK_DISABLE_COOPMAT2 GGML_VK_DISABLE_F16
    GGML_VK_DISABLE_FUSION GGML_VK_DISABLE_GRAPH_OPTIMIZE GGML_VK_DISABLE_HOST_VISIBLE_VIDMEM
    GGML_VK_DISABLE_INTEGER_DOT_PRODUCT GGML_VK_DISABLE_MMVQ GGML_VK_DISABLE_MULTI_ADD
    GGML_VK_FORCE_MAX_ALLOCATION_SIZE GGML_VK_FORCE_MAX_BUFFER_SIZE GGML_VK_FORCE_MMVQ GGML_VK_PERF_LOGGER
    GGML_VK_PREFER_HOST_MEMORY GGML_VK_SUBALLOCATION_BLOCK_SIZE GGML_VK_VISIBLE_DEVICES
    GGML_VULKAN_OUTPUT_TENSOR GGML_VULKAN_SKIP_CHECKS GPU_DEVICE_ORDINAL HF_ENDPOINT HIP_VISIBLE_DEVICES HOME
    HSA_OVERRIDE_GFX_VERSION HTTPS_PROXY HTTP_PROXY ID JETSON_JETPACK KMP_BLOCKTIME LLAMA_BATCH_DEBUG
    LLAMA_CACHE LLAMA_GRAPH_INPUT_DEBUG LLAMA_GRAPH_RESULT_DEBUG LLAMA_GRAPH_REUSE_DISABLE
    LLAMA_KV_CACHE_DEBUG LLAMA_TRACE LOCALAPPDATA MODEL_ENDPOINT MTMD_BACKEND_DEVICE MTMD_DEBUG_GRAPH NO_COLOR
    NO_PROXY OLLAMA_AUTH OLLAMA_CONTEXT_LENGTH OLLAMA_DEBUG OLLAMA_EXPERIMENT OLLAMA_FLASH_ATTENTION
    OLLAMA_GPU_OVERHEAD OLLAMA_HOST OLLAMA_INTEL_GPU OLLAMA_KEEP_ALIVE OLLAMA_KV_CACHE_TYPE
    OLLAMA_LIBRARY_PATH OLLAMA_LLM_LIBRARY OLLAMA_LOAD_TIMEOUT OLLAMA_MAX_LOADED_MODELS OLLAMA_MAX_QUEUE
    OLLAMA_MODELS OLLAMA_MULTIUSER_CACHE OLLAMA_NEW_ENGINE OLLAMA_NOHISTORY OLLAMA_NOPRUNE OLLAMA_NUM_PARALLEL
    OLLAMA_ORIGINS OLLAMA_REGISTRY_MAXSTREAMS OLLAMA_REMOTES OLLAMA_SCHED_SPREAD OMP_WAIT_POLICY PATH
    ProgramW6432 ROCR_VISIBLE_DEVICES TERM TaskbarCreated XDG_CACHE_HOME http_proxy https_proxy no_proxy"""
)
# What the Redis 7.0 image reads: docker-library/redis 7.0/debian/docker-entrypoint.sh reads none;
# redis/redis at tag 7.0.15, getenv() in src/*.c: redis-server (HOME, TERM, NOTIFY_SOCKET, UPSTART_JOB,
# FAKETTY) and redis-cli (REDISCLI_AUTH, REDISCLI_HISTFILE, REDISCLI_RCFILE, REDISCLI_CLUSTER_YES).
REDIS_READS = names(
    "HOME TERM NOTIFY_SOCKET UPSTART_JOB FAKETTY REDISCLI_AUTH REDISCLI_HISTFILE REDISCLI_RCFILE REDISCLI_CLUSTER_YES"
)
SHELL_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
ENV_NAME_LITERAL = re.compile(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""")
CONFIG_ENV_REFERENCE = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def every_pod():
    """One run with all four pods: vLLM, Ollama, the gateway (database mode) and Redis (`deploy`)."""
    return run_program({"redis": {"mode": "deploy"}}, DATABASE)


@pytest.fixture(scope="module")
def vllm_envs():
    """vLLM 0.11.0's own vllm/envs.py, loaded from the vendored copy (its getters find themselves in
    sys.modules, so it is registered there while the tests run)."""
    body = VLLM_ENVS.read_text().split("\n", 7)[7]  # below the 7-line provenance header
    assert hashlib.sha256(body.encode()).hexdigest() == VLLM_ENVS_SHA256, "the vendored envs.py was edited"
    spec = importlib.util.spec_from_file_location("vllm_envs_0_11_0", VLLM_ENVS)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {spec.name: module}):
        spec.loader.exec_module(module)
        yield module


def pod_spec(run, name: str) -> dict:
    return run.one(DEPLOYMENT, name).inputs["spec"]["template"]["spec"]


def with_links(spec: dict) -> dict:
    """The same pod spec as the API server would default it without our setting."""
    return {key: value for key, value in spec.items() if key != "enableServiceLinks"}


def kubelet_environments(run, name: str, spec: dict, image_env: dict | None = None) -> Iterator[tuple[dict, dict]]:
    """(container, the environment the kubelet starts it with) for each container of the pod."""
    namespace = run.one(DEPLOYMENT, name).inputs["metadata"]["namespace"]
    links = service_environment(spec, namespace, [r.inputs for r in run.of_type(SERVICE)])
    secrets = {auto_name(r.name): r.inputs["stringData"] for r in run.of_type("kubernetes:core/v1:Secret")}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        yield container, container_environment(container, secrets, image_env, links)


def injected_names(run, name: str, spec: dict) -> set[str]:
    """The service-link names the kubelet puts into the pod that its own env does not set."""
    namespace = run.one(DEPLOYMENT, name).inputs["metadata"]["namespace"]
    links = service_environment(spec, namespace, [r.inputs for r in run.of_type(SERVICE)])
    own = {item["name"] for container in spec["containers"] for item in container.get("env", [])}
    return set(links) - own


def script_reads(spec: dict) -> set[str]:
    """The variables the pod's own shell commands read: command, args, exec probes and hooks."""
    words = []
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        words += [*container.get("command", []), *container.get("args", [])]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            words += container.get(probe, {}).get("exec", {}).get("command", [])
        words += container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return {match for word in words for match in SHELL_VARIABLE.findall(word)}


def litellm_reads(run) -> set[str]:
    """What the gateway pod's program may read: every UPPER_SNAKE string literal in the installed
    LiteLLM and in the modules the ConfigMap ships (a superset of the names it looks up), the REDIS_*
    names LiteLLM builds from redis-py's arguments (its own code), and config.yaml's os.environ/ names."""
    from litellm._redis import _get_redis_env_kwarg_mapping

    site = Path(importlib.util.find_spec("litellm").origin).parent.parent
    names = set(_get_redis_env_kwarg_mapping())
    for package in ("litellm", "litellm_proxy_extras", "litellm_enterprise"):
        for path in (site / package).rglob("*.py"):
            names |= set(ENV_NAME_LITERAL.findall(path.read_text(errors="replace")))
    for text in run.one(CONFIG_MAP, "litellm-config").inputs["data"].values():
        names |= set(ENV_NAME_LITERAL.findall(text)) | set(CONFIG_ENV_REFERENCE.findall(text))
    return names


# 1. Service links ------------------------------------------------------------------------------


def test_no_pod_of_ours_takes_service_links_or_a_token(every_pod):
    for name in ("vllm", "ollama", "litellm", "redis"):
        spec = pod_spec(every_pod, name)
        assert spec["enableServiceLinks"] is False and spec["automountServiceAccountToken"] is False, name
        # What remains is the API server's own Service, which the kubelet always injects.
        assert {variable.split("_")[0] for variable in injected_names(every_pod, name, spec)} == {"KUBERNETES"}


def test_vllm_runs_every_getter_of_its_own_envs_py_under_the_kubelets_environment(every_pod, vllm_envs):
    def failing_getters(spec: dict) -> dict[str, str]:
        ((_, environment),) = kubelet_environments(every_pod, "vllm", spec)
        failures = {}
        with mock.patch.dict(os.environ, environment, clear=True):
            for variable, getter in vllm_envs.environment_variables.items():
                try:
                    getter()
                except Exception as error:  # any getter that raises stops vLLM at start
                    failures[variable] = str(error)
        return failures

    spec = pod_spec(every_pod, "vllm")
    assert failing_getters(spec) == {}
    assert not injected_names(every_pod, "vllm", spec) & set(vllm_envs.environment_variables)
    # The control: with service links on (the Kubernetes default), the Service `vllm` crashes vLLM.
    linked = failing_getters(with_links(spec))
    assert list(linked) == ["VLLM_PORT"] and "appears to be a URI" in linked["VLLM_PORT"]


def test_the_gateway_reads_none_of_the_names_the_kubelet_injects(every_pod):
    from litellm._redis import _redis_kwargs_from_environment

    spec, reads = pod_spec(every_pod, "litellm"), litellm_reads(every_pod)
    assert {"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "DATABASE_URL"} <= reads  # the scan sees what it must
    assert not injected_names(every_pod, "litellm", spec) & reads
    # The control: the Service `redis` gives REDIS_PORT=tcp://…, and LiteLLM's Redis client takes it up.
    assert "REDIS_PORT" in injected_names(every_pod, "litellm", with_links(spec)) & reads
    for links_spec, port_prefix in ((spec, None), (with_links(spec), "tcp://")):
        ((_, environment),) = kubelet_environments(every_pod, "litellm", links_spec, LITELLM_IMAGE_ENV)
        with mock.patch.dict(os.environ, environment, clear=True):
            port = _redis_kwargs_from_environment().get("port")
        assert (port is None) if port_prefix is None else str(port).startswith(port_prefix)


def test_ollama_and_redis_read_none_of_the_names_the_kubelet_injects(every_pod):
    for name, reads in (("ollama", OLLAMA_READS), ("redis", REDIS_READS)):
        spec = pod_spec(every_pod, name)
        program_reads = reads | script_reads(spec)
        assert not injected_names(every_pod, name, spec) & program_reads, name
    # Redis' probes read $REDIS_PORT, which the Service `redis` would inject as tcp://…; the pod's own
    # value wins (container env over service links, kubelet makeEnvironmentVariables), links or not.
    redis = pod_spec(every_pod, "redis")
    assert "REDIS_PORT" in script_reads(redis)
    for spec in (redis, with_links(redis)):
        ((_, environment),) = kubelet_environments(every_pod, "redis", spec)
        assert environment["REDIS_PORT"] == "6379"


# 4. preStop on every supported Kubernetes ------------------------------------------------------


def test_the_gateways_prestop_is_valid_on_the_oldest_supported_kubernetes(every_pod):
    deployment = every_pod.one(DEPLOYMENT, "litellm").inputs
    pre_stop = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert pre_stop["exec"]["command"][0] == "python"  # the image's interpreter (Dockerfile.non_root)
    for resource in every_pod.kubernetes:  # database mode and Redis too: the stack tests cover the rest
        if resource.type.startswith("kubernetes:") and "apiextensions" not in resource.type:
            kubernetes_validate.validate(resource.inputs, kube.MINIMUM_KUBERNETES_VERSION, strict=True)
    # The control: the earlier `preStop.sleep` (Kubernetes 1.29 alpha, 1.30 on) fails that validation.
    deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 10}}}
    with pytest.raises(ValidationError, match="sleep"):
        kubernetes_validate.validate(deployment, kube.MINIMUM_KUBERNETES_VERSION, strict=True)


# 5. Database mode's first migration ------------------------------------------------------------


def test_database_mode_gives_the_migration_its_whole_timeout_before_the_startup_probe_gives_up(every_pod):
    assert MIGRATION_SECONDS == DEFAULT_PRISMA_MIGRATE_DEPLOY_TIMEOUT  # litellm_proxy_extras, as installed
    assert migration_lock_timeout() == MIGRATION_LOCK_SECONDS  # another replica's migration, waited for
    plain = pod_spec(run_program({}, KEY), "litellm")["containers"][0]["startupProbe"]
    database = every_pod.one(DEPLOYMENT, "litellm").inputs
    startup = database["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    waited = migration_lock_timeout() + DEFAULT_PRISMA_MIGRATE_DEPLOY_TIMEOUT
    assert kube.probe_budget_seconds(startup) >= waited + kube.probe_budget_seconds(plain)
    assert kube.probe_budget_seconds(plain) < 200  # without a database a stuck start is still found soon
    # Pulumi waits for that too (the await annotation follows from the pod's budgets).
    assert int(database["metadata"]["annotations"][kube.AWAIT_ANNOTATION]) > kube.probe_budget_seconds(startup)

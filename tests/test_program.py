"""The whole Pulumi program under mocks: what `pulumi up` would register, resource by resource."""

import json

import kubernetes_validate
import pytest
import yaml

from core.gateway_pod import config_checksum
from core.kube import MINIMUM_KUBERNETES_VERSION
from core.names import CONFIG_FILE_NAME, GATEWAY_MODULES, PROGRESS_HANDLER_FILE
from pulumi_harness import (
    CONFIG_MAP,
    DEPLOYMENT,
    MASTER_KEY_CANARY,
    ROOT,
    SECRET,
    SERVICE,
    auto_name,
    run_program,
    run_program_expecting_error,
    stack_config_of,
    stack_files,
)

OPENAI_KEY_CANARY = "sk-OPENAICANARY-7f3a9c2e51d04b8a"
KEY = {"openaiApiKey": OPENAI_KEY_CANARY}
KUBERNETES_VERSION = "1.33"


@pytest.fixture(scope="module")
def default_run():
    return run_program({}, KEY)


def gateway_config(run):
    return yaml.safe_load(run.one(CONFIG_MAP, "litellm-config").inputs["data"][CONFIG_FILE_NAME])


def container(run, deployment_name):
    return run.one(DEPLOYMENT, deployment_name).inputs["spec"]["template"]["spec"]["containers"][0]


def test_default_stack_creates_the_expected_resources(default_run):
    # Secrets are auto-named (a new value rolls the gateway): listed by their logical names.
    kinds = sorted(f"{r.inputs['kind']}/{r.inputs['metadata'].get('name') or r.name}" for r in default_run.kubernetes)
    assert kinds == [
        "ConfigMap/litellm-config",
        "Deployment/litellm",
        "Deployment/ollama",
        "Deployment/vllm",
        "Namespace/llm-gateway",
        "NetworkPolicy/litellm",
        "NetworkPolicy/ollama-from-gateway",
        "NetworkPolicy/vllm-from-gateway",
        "PersistentVolumeClaim/ollama-models",
        "PersistentVolumeClaim/vllm-cache",
        "PodDisruptionBudget/litellm",
        "Secret/litellm-master-key",
        "Secret/litellm-openai-key",
        "Service/litellm",
        "Service/ollama",
        "Service/vllm",
    ]
    components = sorted(r.type for r in default_run.resources if r.type.startswith("llm-gateway:"))
    assert components == [
        "llm-gateway:index:LiteLLMGateway",
        "llm-gateway:index:OllamaBackend",
        "llm-gateway:index:VllmBackend",
    ]


def test_every_namespaced_object_is_in_the_stack_namespace():
    run = run_program({"namespace": "inference"}, KEY)
    for resource in run.kubernetes:
        if resource.inputs["kind"] != "Namespace":
            assert resource.inputs["metadata"]["namespace"] == "inference", resource.name


def test_chain_order_with_openai_last(default_run):
    config = gateway_config(default_run)
    assert [m["model_info"]["id"] for m in config["model_list"]] == ["vllm", "ollama", "openai"]
    assert config["router_settings"]["fallbacks"] == [{"chat": ["chat-ollama"]}, {"chat-ollama": ["chat-openai"]}]
    assert default_run.outputs["fallbackChain"] == ["vllm", "ollama", "openai"]


def test_api_bases_point_at_the_services_the_program_created(default_run):
    config = gateway_config(default_run)
    bases = {m["model_info"]["id"]: m["litellm_params"]["api_base"] for m in config["model_list"]}
    for tier, path in (("vllm", "/v1"), ("ollama", "")):
        service = default_run.one(SERVICE, tier).inputs
        host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
        assert bases[tier] == f"http://{host}:{service['spec']['ports'][0]['port']}{path}"
        target = service["spec"]["ports"][0]["targetPort"]
        ports = container(default_run, tier)["ports"]
        assert any(port["name"] == target for port in ports)
    assert default_run.outputs["gatewayUrl"] == "http://litellm.llm-gateway.svc.cluster.local:4000"


def test_services_select_their_own_pods(default_run):
    for name in ("vllm", "ollama", "litellm"):
        selector = default_run.one(SERVICE, name).inputs["spec"]["selector"]
        pod_labels = default_run.one(DEPLOYMENT, name).inputs["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        others = [d for d in default_run.of_type(DEPLOYMENT) if d.inputs["metadata"]["name"] != name]
        for other in others:
            assert not selector.items() <= other.inputs["spec"]["template"]["metadata"]["labels"].items()


def test_per_tier_timeouts_reach_the_config():
    run = run_program(
        {"vllm": {"timeoutSeconds": 901}, "ollama": {"timeoutSeconds": 302}, "openai": {"timeoutSeconds": 63}}, KEY
    )
    timeouts = {m["model_info"]["id"]: m["litellm_params"]["timeout"] for m in gateway_config(run)["model_list"]}
    assert timeouts == {"vllm": 901, "ollama": 302, "openai": 63}


def test_openai_key_lives_only_in_its_secret_and_stays_secret(default_run):
    secret = default_run.one(SECRET, "litellm-openai-key")
    assert secret.inputs["stringData"] == {"OPENAI_API_KEY": OPENAI_KEY_CANARY}
    assert "stringData" in secret.secret_paths
    for resource in default_run.resources:
        if resource is secret:
            continue
        assert OPENAI_KEY_CANARY not in json.dumps(resource.inputs), resource.name
    assert OPENAI_KEY_CANARY not in json.dumps(default_run.outputs)


def test_master_key_is_generated_secret_and_only_in_its_secret(default_run):
    master = f"sk-{MASTER_KEY_CANARY}"
    secret = default_run.one(SECRET, "litellm-master-key")
    assert secret.inputs["stringData"] == {"LITELLM_MASTER_KEY": master}
    assert "stringData" in secret.secret_paths
    assert default_run.outputs["masterKey"] == master
    assert default_run.secret_outputs == {"masterKey"}
    for resource in default_run.kubernetes:
        if resource is not secret:
            assert MASTER_KEY_CANARY not in json.dumps(resource.inputs), resource.name


def test_gateway_reads_keys_from_secrets_not_values(default_run):
    env = {item["name"]: item for item in container(default_run, "litellm")["env"]}
    openai_key = {"name": auto_name("litellm-openai-key"), "key": "OPENAI_API_KEY"}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == openai_key
    assert env["LITELLM_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["name"] == auto_name("litellm-master-key")
    assert all("value" not in item for name, item in env.items() if name.endswith("KEY"))


def test_config_checksum_annotation_matches_the_config_map(default_run):
    data = default_run.one(CONFIG_MAP, "litellm-config").inputs["data"]
    template = default_run.one(DEPLOYMENT, "litellm").inputs["spec"]["template"]
    assert template["metadata"]["annotations"]["checksum/config"] == config_checksum(data)
    changed = run_program({"gateway": {"modelName": "assistant"}}, KEY)
    changed_template = changed.one(DEPLOYMENT, "litellm").inputs["spec"]["template"]
    assert changed_template["metadata"]["annotations"] != template["metadata"]["annotations"]


def test_the_config_map_ships_the_progress_handler_byte_for_byte(default_run):
    data = default_run.one(CONFIG_MAP, "litellm-config").inputs["data"]
    assert data[PROGRESS_HANDLER_FILE.name] == PROGRESS_HANDLER_FILE.read_text()
    for module in GATEWAY_MODULES:
        assert data[module.name] == module.read_text()
    assert sorted(data) == sorted([CONFIG_FILE_NAME, *(module.name for module in GATEWAY_MODULES)])
    assert {m.name for m in GATEWAY_MODULES} == {
        "contract.py",
        "vllm_progress.py",
        "honest_errors.py",
        "cloud_guard.py",
        "request_check.py",
        "context_check.py",
        "served_model.py",
        "lean_metrics.py",
    }
    config = yaml.safe_load(data[CONFIG_FILE_NAME])
    handlers = config["litellm_settings"]["custom_provider_map"]
    assert handlers == [{"provider": "vllm-progress", "custom_handler": "vllm_progress.handler"}]
    assert config["litellm_settings"]["callbacks"] == [
        "request_check.handler",
        "context_check.handler",
        "honest_errors.handler",
        "cloud_guard.handler",
        "served_model.handler",
        "prometheus",
        "lean_metrics.handler",
    ]
    assert config["model_list"][0]["litellm_params"]["model"].startswith("vllm-progress/")
    mount = container(default_run, "litellm")["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/litellm" and "subPath" not in mount  # the whole directory


def test_gaming_mode_scales_vllm_to_zero_and_keeps_the_chain(default_run):
    gaming = run_program({"gamingMode": True}, KEY)
    assert gaming.one(DEPLOYMENT, "vllm").inputs["spec"]["replicas"] == 0
    assert default_run.one(DEPLOYMENT, "vllm").inputs["spec"]["replicas"] == 1
    assert gaming.one(CONFIG_MAP, "litellm-config").inputs == default_run.one(CONFIG_MAP, "litellm-config").inputs
    assert gaming.outputs["vllmReplicas"] == 0
    back = run_program({"gamingMode": False}, KEY)
    assert back.one(DEPLOYMENT, "vllm").inputs["spec"]["replicas"] == 1


def test_vllm_gets_the_gpu_the_scheduling_and_the_volumes():
    run = run_program(
        {
            "vllm": {
                "gpuCount": 2,
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "runtimeClassName": "nvidia",
                "imageDigest": "sha256:" + "a" * 64,
            }
        },
        KEY,
    )
    deployment = run.one(DEPLOYMENT, "vllm").inputs["spec"]
    pod = deployment["template"]["spec"]
    assert deployment["strategy"] == {"type": "Recreate"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["containers"][0]["image"] == "vllm/vllm-openai:v0.11.0@sha256:" + "a" * 64
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "vllm-cache"


def test_ollama_pulls_its_model_onto_the_volume_before_serving(default_run):
    pod = default_run.one(DEPLOYMENT, "ollama").inputs["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert "ollama pull" in init["command"][-1]
    assert {"name": "OLLAMA_MODEL", "value": "qwen2.5:3b"} in init["env"]
    assert {"name": "OLLAMA_MODELS", "value": "/models"} in init["env"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ollama-models"


def test_without_the_cloud_tier_there_are_two_tiers_and_no_openai_secret():
    run = run_program({"openai": {"enabled": False}})
    assert [m["model_info"]["id"] for m in gateway_config(run)["model_list"]] == ["vllm", "ollama"]
    assert [s.name for s in run.of_type(SECRET)] == ["litellm-master-key"]
    env_names = [item["name"] for item in container(run, "litellm")["env"]]
    assert "OPENAI_API_KEY" not in env_names
    assert run.outputs["fallbackChain"] == ["vllm", "ollama"]


@pytest.mark.parametrize(
    ("config", "secrets", "key"),
    [
        ({"vllm": {"replicaz": 1}}, KEY, "llm-gateway:vllm.replicaz"),
        ({"vllm": {"replicas": -1}}, KEY, "llm-gateway:vllm.replicas"),
        ({"ollama": {"model": ""}}, KEY, "llm-gateway:ollama.model"),
        ({"gamingMode": "maybe"}, KEY, "llm-gateway:gamingMode"),
        ({"gatway": {"replicas": 2}}, KEY, "llm-gateway:gatway"),
        ({}, {}, "llm-gateway:openaiApiKey"),
        (KEY, {}, "llm-gateway:openaiApiKey"),  # set without --secret
    ],
)
def test_bad_config_fails_before_any_resource_is_registered(config, secrets, key):
    error, registered = run_program_expecting_error(config, secrets)
    assert str(error).startswith(key)
    assert registered == []
    assert OPENAI_KEY_CANARY not in str(error)


def manifests(run):
    return [r.inputs for r in run.kubernetes]


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES_VERSION, KUBERNETES_VERSION])
@pytest.mark.parametrize("overrides", [{}, {"openai": {"enabled": False}}, {"gamingMode": True}])
def test_every_manifest_validates_strictly(overrides, version):
    secrets = {} if overrides.get("openai") else KEY
    run = run_program(overrides, secrets)
    for manifest in manifests(run):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_repo_has_dev_and_prod_stacks():
    assert {p.name for p in stack_files()} >= {"Pulumi.dev.yaml", "Pulumi.prod.yaml"}


@pytest.mark.parametrize("path", stack_files(), ids=lambda p: p.name)
def test_each_stack_file_runs_cleanly_and_validates(path):
    config = stack_config_of(path)
    stack = path.name.split(".")[1]
    run = run_program(config, KEY, stack=stack)
    assert run.outputs["fallbackChain"][-1] == "openai"
    for manifest in manifests(run):
        for version in (MINIMUM_KUBERNETES_VERSION, KUBERNETES_VERSION):
            kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == stack


def test_dev_stack_runs_without_a_gpu():
    run = run_program(stack_config_of(ROOT / "Pulumi.dev.yaml"), KEY)
    vllm = run.one(DEPLOYMENT, "vllm").inputs["spec"]
    assert vllm["replicas"] == 0
    assert "nvidia.com/gpu" not in vllm["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_prod_stack_schedules_vllm_on_gpu_nodes():
    run = run_program(stack_config_of(ROOT / "Pulumi.prod.yaml"), KEY, stack="prod")
    pod = run.one(DEPLOYMENT, "vllm").inputs["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_every_kubernetes_object_goes_through_the_one_explicit_provider(default_run):
    (provider,) = default_run.of_type("pulumi:providers:kubernetes")
    assert "renderYamlToDirectory" not in provider.inputs
    for resource in default_run.kubernetes:
        assert (resource.provider and resource.provider.split("::")[-2:] == ["kubernetes", "kubernetes-id"]) or (
            "pulumi:providers:kubernetes::kubernetes" in resource.provider
        ), resource.name


def test_render_yaml_to_directory_reaches_the_provider():
    run = run_program({"renderYamlToDirectory": "rendered/dev"}, KEY)
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == "rendered/dev"
    error, registered = run_program_expecting_error({"renderYamlToDirectory": "../outside"}, KEY)
    assert str(error).startswith("llm-gateway:renderYamlToDirectory") and registered == []


def test_two_runs_of_the_same_stack_register_byte_identical_inputs():
    # A program that is not deterministic shows a diff on every `pulumi preview`.
    config = stack_config_of(ROOT / "Pulumi.prod.yaml")
    first, second = (run_program(config, KEY, stack="prod") for _ in range(2))
    assert [r.name for r in first.resources] == [r.name for r in second.resources]
    for before, after in zip(first.resources, second.resources, strict=True):
        assert json.dumps(before.inputs, sort_keys=False) == json.dumps(after.inputs, sort_keys=False), before.name
    assert first.outputs == second.outputs

"""What a platform team checks before accepting the manifests: probes, hardening, rollouts,
network policy, labels — and checkov's Kubernetes checks over every rendered object."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pulumi_harness import DEPLOYMENT, NETWORK_POLICY, run_program

KEY = {"openaiApiKey": "sk-hardening-test"}
RECOMMENDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
}


@pytest.fixture(scope="module")
def run():
    return run_program({}, KEY)


def pods(run):
    return {d.inputs["metadata"]["name"]: d.inputs["spec"]["template"]["spec"] for d in run.of_type(DEPLOYMENT)}


def all_containers(pod):
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_every_container_is_hardened_and_bounded(run):
    for name, pod in pods(run).items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 10000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in all_containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_read_only_root_everywhere_but_vllm(run):
    for name, pod in pods(run).items():
        for container in all_containers(pod):
            assert container["securityContext"]["readOnlyRootFilesystem"] is (name != "vllm"), container["name"]


def test_probes_drive_failover_without_killing_a_busy_gpu(run):
    vllm = pods(run)["vllm"]["containers"][0]
    readiness, liveness, startup = vllm["readinessProbe"], vllm["livenessProbe"], vllm["startupProbe"]
    assert readiness["httpGet"]["path"] == "/health"
    # A hung or dead vLLM leaves the Service endpoints within ~5 s.
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 5
    # Model load may take many minutes; liveness is far more patient than readiness.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    gateway = pods(run)["litellm"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    for pod in pods(run).values():
        for container in pod["containers"]:
            readiness = container["readinessProbe"]
            assert (
                "httpGet" not in readiness or readiness["httpGet"]["path"] != "/health" or container["name"] == "vllm"
            )
            assert "livenessProbe" in container and "readinessProbe" in container


def test_ollama_is_ready_only_once_its_model_is_loaded(run):
    ollama = pods(run)["ollama"]["containers"][0]
    env = {item["name"]: item.get("value") for item in ollama["env"]}
    # The startup probe preloads the model (`ollama run <model>` with an empty prompt), and keeps
    # trying rather than killing the container; readiness then requires it resident (`ollama ps`), and
    # loads it back when it is not (tests/test_ollama_pod.py runs both).
    startup, readiness = ollama["startupProbe"]["exec"]["command"], ollama["readinessProbe"]["exec"]["command"]
    assert startup[:2] == readiness[:2] == ["/bin/sh", "-c"]
    assert 'ollama run "$SERVED_MODEL" </dev/null' in startup[2]
    assert "ollama ps" in readiness[2] and "$SERVED_MODEL" in readiness[2]
    assert env["OLLAMA_MODEL"] == "qwen2.5:3b" and env["OLLAMA_KEEP_ALIVE"] == "-1"
    for probe in ("startupProbe", "readinessProbe"):
        assert ollama[probe]["timeoutSeconds"] >= 60  # a CPU model load takes tens of seconds
    assert "lifecycle" not in ollama  # no postStart hook: a failed one kills the container


def test_rollouts_single_gpu_recreate_gateway_pdb_and_spread(run):
    deployments = {d.inputs["metadata"]["name"]: d.inputs["spec"] for d in run.of_type(DEPLOYMENT)}
    assert deployments["vllm"]["strategy"] == {"type": "Recreate"}
    assert deployments["ollama"]["strategy"] == {"type": "Recreate"}
    assert deployments["litellm"]["replicas"] >= 2
    assert deployments["litellm"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = run.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdb.inputs["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": deployments["litellm"]["selector"]["matchLabels"]},
    }
    spread = deployments["litellm"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployments["litellm"]["selector"]["matchLabels"]


def test_one_gateway_replica_gets_no_pdb_that_would_block_drains():
    assert run_program({"gateway": {"replicas": 1}}, KEY).of_type("kubernetes:policy/v1:PodDisruptionBudget") == []


def test_local_tiers_accept_only_the_gateway(run):
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in run.of_type(NETWORK_POLICY)}
    gateway_pods = pods(run)
    gateway_labels = {k: v for k, v in run.one(DEPLOYMENT, "litellm").inputs["spec"]["selector"]["matchLabels"].items()}
    for tier, port in (("vllm", 8000), ("ollama", 11434)):
        spec = policies[f"{tier}-from-gateway"]
        assert (
            spec["podSelector"]["matchLabels"].items()
            <= run.one(DEPLOYMENT, tier).inputs["spec"]["template"]["metadata"]["labels"].items()
        )
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": gateway_labels}}]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    assert "litellm" in gateway_pods


def test_gateway_egress_is_local_tiers_dns_and_https_only(run):
    spec = next(p.inputs["spec"] for p in run.of_type(NETWORK_POLICY) if p.inputs["metadata"]["name"] == "litellm")
    ports = sorted((port["protocol"], port["port"]) for rule in spec["egress"] for port in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 8000), ("TCP", 11434), ("UDP", 53)]
    https = next(rule for rule in spec["egress"] if rule["ports"][0]["port"] == 443)
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]
    no_cloud = run_program({"openai": {"enabled": False}})
    spec = next(p.inputs["spec"] for p in no_cloud.of_type(NETWORK_POLICY) if p.inputs["metadata"]["name"] == "litellm")
    assert all(port["port"] != 443 for rule in spec["egress"] for port in rule["ports"])


def test_network_policies_can_be_turned_off():
    assert run_program({"networkPolicies": False}, KEY).of_type(NETWORK_POLICY) == []


def test_every_object_carries_the_recommended_labels(run):
    for resource in run.kubernetes:
        assert resource.inputs["metadata"]["labels"].keys() >= RECOMMENDED_LABELS, resource.name
    for name, deployment in ((d.inputs["metadata"]["name"], d) for d in run.of_type(DEPLOYMENT)):
        assert deployment.inputs["spec"]["template"]["metadata"]["labels"].keys() >= RECOMMENDED_LABELS, name


def checkov(manifests: list[dict], directory: Path) -> dict:
    # checkov skips a whole file that contains `{{` as a Helm template, and then reports nothing at
    # all; the plugins' Python in the ConfigMap may hold `{{` (f-strings), which no check reads.
    text = yaml.safe_dump_all(manifests).replace("{{", "{ {")
    (directory / "manifests.yaml").write_text(text)
    executable = shutil.which("checkov", path=str(Path(sys.executable).parent)) or "checkov"
    completed = subprocess.run(
        [executable, "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(completed.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("overrides", [{}, {"vllm": {"imageDigest": "sha256:" + "b" * 64}}], ids=["default", "digest"])
def test_checkov_finds_nothing_and_every_skip_says_why(overrides, tmp_path):
    run = run_program(overrides, KEY)
    report = checkov([r.inputs for r in run.kubernetes], tmp_path)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    skipped = report["results"]["skipped_checks"]
    summary = report["summary"]
    print(f"\n[checkov] passed {summary['passed']}, failed {summary['failed']}, skipped {summary['skipped']}")
    for check in skipped:
        print(
            f"[checkov] skipped {check['check_id']} on {check['resource']}: {check['check_result']['suppress_comment']}"
        )
        assert len(check["check_result"]["suppress_comment"]) > 20  # a reason, not a bare id
    assert failed == []
    assert summary["passed"] > 100
    digest_skips = [c for c in skipped if c["check_id"] == "CKV_K8S_43" and "vllm" in c["resource"]]
    assert (digest_skips == []) == bool(overrides)  # the digest skip goes away once a digest is set

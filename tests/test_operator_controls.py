"""Operator controls: metrics and ServiceMonitor, ingress, optional database — under mocks — and
the cloud spend guard and fallback metrics through the real proxy."""

import json
import re

import httpx
import kubernetes_validate
import pytest
import yaml

from core.settings import parse_settings
from core.stack_files import stack_config
from drill.client import chat
from drill.runner import Drill
from pulumi_harness import auto_name, run_program, run_program_expecting_error

KEY = {"openaiApiKey": "sk-operator-test"}
DATABASE_CANARY = "postgresql://litellm:CANARYdbpassword@db.internal:5432/litellm"


def gateway_config(run):
    config_map = next(r for r in run.resources if r.type == "kubernetes:core/v1:ConfigMap")
    return yaml.safe_load(config_map.inputs["data"]["config.yaml"])


def gateway_container(run):
    deployment = next(r for r in run.resources if r.name == "litellm-deployment")
    return deployment.inputs["spec"]["template"]["spec"]["containers"][0]


# --- Metrics ----------------------------------------------------------------------------------


def test_prometheus_metrics_are_on_by_default_and_can_be_turned_off():
    assert "prometheus" in gateway_config(run_program({}, KEY))["litellm_settings"]["callbacks"]
    off = run_program({"gateway": {"metrics": False}}, KEY)
    assert "prometheus" not in gateway_config(off)["litellm_settings"]["callbacks"]


def test_service_monitor_scrapes_with_the_master_key_secret():
    run = run_program({"gateway": {"serviceMonitor": True}}, KEY)
    (monitor,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"]
    spec = monitor.inputs["spec"]
    service = next(r for r in run.resources if r.name == "litellm-service")
    assert spec["selector"]["matchLabels"].items() <= service.inputs["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == service.inputs["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics/"
    assert endpoint["authorization"]["credentials"] == {
        "name": auto_name("litellm-master-key"),
        "key": "LITELLM_MASTER_KEY",
    }
    assert run_program({}, KEY).of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor") == []


def test_service_monitor_without_metrics_is_refused():
    error, registered = run_program_expecting_error({"gateway": {"serviceMonitor": True, "metrics": False}}, KEY)
    assert str(error).startswith("llm-gateway:gateway.serviceMonitor") and registered == []


# kube-prometheus-stack's Prometheus, installed as release "kps" with its default values
# (serviceMonitorSelectorNilUsesHelmValues, ruleSelectorNilUsesHelmValues: true), selects these
# labels (templates/prometheus/prometheus.yaml); its Grafana sidecar loads ConfigMaps with the other.
KPS_SERVICE_MONITOR_SELECTOR = KPS_RULE_SELECTOR = {"release": "kps"}
KPS_DASHBOARD_LABEL = {"grafana_dashboard": "1"}


def selected(resource, match_labels) -> bool:
    return match_labels.items() <= resource.inputs["metadata"]["labels"].items()


def test_a_default_kube_prometheus_stack_selects_the_monitor_the_rules_and_the_dashboard():
    run = run_program(
        {
            "gateway": {"serviceMonitor": True, "serviceMonitorLabels": {"release": "kps"}},
            "alerts": {"enabled": True, "dashboard": True, "ruleLabels": {"release": "kps"}},
        },
        KEY,
    )
    (monitor,) = run.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    (rule,) = run.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    assert selected(monitor, KPS_SERVICE_MONITOR_SELECTOR) and selected(rule, KPS_RULE_SELECTOR)
    assert selected(run.one("kubernetes:core/v1:ConfigMap", "litellm-dashboard"), KPS_DASHBOARD_LABEL)
    # The operator's labels are added to ours, not instead of them.
    assert monitor.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "litellm"
    # Without them nothing is scraped: the defect this setting mends.
    (unlabelled,) = run_program({"gateway": {"serviceMonitor": True}}, KEY).of_type(
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
    )
    assert not selected(unlabelled, KPS_SERVICE_MONITOR_SELECTOR)


def test_service_monitor_labels_without_a_service_monitor_are_refused():
    error, registered = run_program_expecting_error({"gateway": {"serviceMonitorLabels": {"release": "kps"}}}, KEY)
    assert str(error).startswith('llm-gateway:gateway.serviceMonitorLabels = {"release": "kps"}') and registered == []
    assert "gateway.serviceMonitor true" in str(error)


# --- Ingress ----------------------------------------------------------------------------------


def test_standard_ingress_routes_the_host_to_the_gateway_service():
    run = run_program(
        {"ingress": {"enabled": True, "host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls"}},
        KEY,
    )
    (ingress,) = run.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    kubernetes_validate.validate(ingress.inputs, "1.33", strict=True)
    spec = ingress.inputs["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "litellm", "port": {"number": 4000}}


def test_traefik_ingress_route():
    run = run_program({"ingress": {"enabled": True, "kind": "IngressRoute", "host": "llm.lan"}}, KEY)
    (route,) = run.of_type("kubernetes:traefik.io/v1alpha1:IngressRoute")
    spec = route.inputs["spec"]
    assert spec["entryPoints"] == ["web"]
    assert spec["routes"][0]["match"] == "Host(`llm.lan`)"
    # With the ServersTransport `litellm`: this route's timeouts (tests/test_awaits_and_gaming_mode.py).
    assert spec["routes"][0]["services"] == [{"name": "litellm", "port": 4000, "serversTransport": "litellm"}]
    assert run.of_type("kubernetes:networking.k8s.io/v1:Ingress") == []


def test_ingress_is_off_by_default_and_needs_a_host():
    run = run_program({}, KEY)
    assert not [r for r in run.resources if "Ingress" in r.type]
    error, registered = run_program_expecting_error({"ingress": {"enabled": True}}, KEY)
    assert str(error).startswith("llm-gateway:ingress.host is not set") and registered == []


# --- Optional database ------------------------------------------------------------------------


def test_database_url_only_in_its_secret_and_the_gateway_uses_it():
    run = run_program({}, {**KEY, "databaseUrl": DATABASE_CANARY})
    secret = next(r for r in run.resources if r.name == "litellm-database-url")
    assert secret.inputs["stringData"] == {"DATABASE_URL": DATABASE_CANARY}
    assert secret.secret_paths == ["stringData"]
    for resource in run.resources:
        if resource is not secret:
            assert "CANARYdbpassword" not in json.dumps(resource.inputs), resource.name
    assert "CANARYdbpassword" not in json.dumps(run.outputs)
    assert gateway_config(run)["general_settings"]["database_url"] == "os.environ/DATABASE_URL"
    container = gateway_container(run)
    env = {item["name"]: item for item in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": auto_name("litellm-database-url"),
        "key": "DATABASE_URL",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is False  # Prisma writes at start
    policy = next(r for r in run.resources if r.type.endswith("NetworkPolicy") and r.name == "litellm-network")
    ports = [port["port"] for rule in policy.inputs["spec"]["egress"] for port in rule["ports"]]
    assert 5432 in ports


def test_without_a_database_the_gateway_is_stateless():
    run = run_program({}, KEY)
    assert "database_url" not in gateway_config(run)["general_settings"]
    assert not [r for r in run.resources if r.name == "litellm-database-url"]
    assert gateway_container(run)["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_plaintext_database_url_is_refused_without_showing_it():
    error, registered = run_program_expecting_error({"databaseUrl": DATABASE_CANARY}, KEY)
    assert str(error).startswith("llm-gateway:databaseUrl is stored in plain text")
    assert "CANARY" not in str(error) and registered == []


# --- Through the real proxy -------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_drill():
    settings = parse_settings({**stack_config("dev"), "openai": {"rpm": 3}}, openai_key="secret")
    with Drill(settings) as running:
        yield running


@pytest.mark.drill
def test_cloud_rpm_limit_gives_a_clear_429_and_the_cloud_gets_exactly_the_limit(guarded_drill):
    drill = guarded_drill
    drill.all_up()
    drill.reset_counts()
    local = [chat(drill.url, "chat") for _ in range(10)]  # local tiers are never limited
    assert [a.tier for a in local] == ["vllm"] * 10
    drill.standins["vllm"].set_mode("down")
    drill.standins["ollama"].set_mode("down")
    answers = [chat(drill.url, "chat") for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    error = answers[3].body["error"]
    assert error["type"] == "rate_limit_error" and error["provider_specific_fields"] == {"reason": "cloud_rate_limited"}
    assert not re.search(r"127\.0\.0\.1|:\d{4,5}\b", json.dumps(answers[3].body))
    assert drill.standins["openai"].served["client-received"] == 3
    drill.standins["ollama"].set_mode("up")
    assert chat(drill.url, "chat").tier == "ollama"  # Ollama back: no limit applies to it


@pytest.mark.drill
def test_a_fallback_to_ollama_shows_in_the_prometheus_metrics(guarded_drill):
    drill = guarded_drill
    drill.all_up()
    drill.standins["vllm"].set_mode("down")
    assert chat(drill.url, "chat").tier == "ollama"
    metrics = httpx.get(
        f"{drill.url}/metrics/", headers={"Authorization": f"Bearer {drill.master_key}"}, trust_env=False, timeout=10
    ).text
    fallbacks = [
        line
        for line in metrics.splitlines()
        if line.startswith("litellm_deployment_successful_fallbacks_total")
        and 'fallback_model="chat-ollama"' in line
        and 'requested_model="chat"' in line
    ]
    assert fallbacks and float(fallbacks[0].rsplit(" ", 1)[1]) >= 1
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("litellm_deployment_success_responses_total") and 'model_id="ollama"' in line
    ]
    assert served

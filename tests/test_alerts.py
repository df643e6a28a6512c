"""Alerts and the dashboard, on the metrics the real proxy exports through real failovers.

`promtool check rules` on the rendered rules; then the drill runs the phases of drill/capture.py
on the real proxy, scrapes its metrics after each, and `promtool test rules` checks every alert
fires in the phase that should fire it and in no other, and that every dashboard query returns data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import pytest
import yaml

from core.litellm_config import litellm_config
from core.names import LITELLM_METRICS
from core.observability import alert_rules, dashboard, dashboard_queries, prometheus_rule_spec
from core.settings import parse_settings
from core.stack_files import ROOT, stack_settings
from drill.capture import PHASES, metric_names, phase_end_minute, run_phases
from drill.runner import Drill
from gateway.contract import GATEWAY_COUNTERS, GATEWAY_GAUGES, scraped
from pulumi_harness import CONFIG_MAP, run_program

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool comes with Debian's prometheus (scripts/test)")
SETTINGS = stack_settings("dev")
# rpm counts every call the guard lets through, refused ones too (one or two in "nothing answers",
# depending on whether the second found the cloud cooling down): of the 4 requests of the cloud
# phase, the first is answered and the last refused.
GUARDED = dataclasses.replace(SETTINGS, openai=dataclasses.replace(SETTINGS.openai, rpm=3))
# With the autoscaler, in a namespace of its own: its alert must select our HPA there (item 11).
AUTOSCALED = parse_settings(
    {"namespace": "ml", "gateway": {"autoscaling": {"enabled": True}}, "alerts": {"enabled": True}},
    openai_key="secret",
)
# The phase (index into PHASES) at whose end each alert must be firing; at every other phase end
# it must not be. The GPU alert's window is 15 minutes, three phases: it is checked from phase 3 on.
FIRES_IN = {
    "LlmGatewayNoTierAvailable": {2},
    "LlmGatewayOllamaDown": {2, 3},
    "LlmGatewayCloudServing": {3},
    "LlmGatewaySpendGuardRejecting": {3},
    "LlmGatewayGpuTierNotServing": {3},
    "LlmGatewayVllmProgressBlind": set(),  # the vLLM stand-in serves /metrics; a refused vLLM is not blindness
}
CHECKED_FROM = {"LlmGatewayGpuTierNotServing": 3}


def write_rules(tmp_path, settings) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(prometheus_rule_spec(settings), sort_keys=False))
    return str(path)


@needs_promtool
def test_promtool_accepts_the_rendered_rules(tmp_path):
    for settings in (
        SETTINGS,
        dataclasses.replace(SETTINGS, openai=dataclasses.replace(SETTINGS.openai, enabled=False)),
        AUTOSCALED,
    ):
        result = subprocess.run([PROMTOOL, "check", "rules", write_rules(tmp_path, settings)], capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_program_ships_the_rules_and_the_dashboard_when_asked():
    key = {"openaiApiKey": "sk-alerts-test"}
    run = run_program({"alerts": {"enabled": True, "dashboard": True, "ruleLabels": {"release": "kps"}}}, key)
    (rule,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:PrometheusRule"]
    assert rule.inputs["spec"] == prometheus_rule_spec(stack_settings_default())
    assert rule.inputs["metadata"]["labels"]["release"] == "kps"
    board = run.one(CONFIG_MAP, "litellm-dashboard").inputs
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["llm-gateway.json"]) == dashboard(stack_settings_default())
    assert not [r for r in run_program({}, key).resources if "PrometheusRule" in r.type]


def stack_settings_default():
    return parse_settings({"alerts": {"enabled": True, "dashboard": True}}, openai_key="secret")


@pytest.mark.drill
@needs_promtool
def test_every_alert_fires_in_its_phase_on_the_real_proxys_metrics(tmp_path):
    with Drill(GUARDED) as drill:
        capture = run_phases(drill)
    statuses = capture.statuses
    print(f"\n[alerts] phases {[title for title, _, _ in PHASES]} answered {statuses}")
    assert statuses[2] == [503, 503] and statuses[3][0] == 200 and statuses[3][-1] == 429  # as they say
    rules = alert_rules(GUARDED)
    queries = dashboard_queries(GUARDED)
    names = metric_names([rule["expr"] for rule in rules] + list(queries.values()))
    alert_tests = []
    for rule in rules:
        for phase in range(CHECKED_FROM.get(rule["alert"], 0), len(PHASES)):
            firing = phase in FIRES_IN[rule["alert"]]
            expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}] if firing else []
            alert_tests.append(
                {"eval_time": f"{phase_end_minute(phase)}m", "alertname": rule["alert"], "exp_alerts": expected}
            )
    # Every dashboard query returns data at the end of the phase where the cloud answered.
    dashboard_tests = [
        {"expr": f"absent({expr})", "eval_time": f"{phase_end_minute(3)}m", "exp_samples": []}
        for expr in queries.values()
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [write_rules(tmp_path, GUARDED)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": capture.input_series(names),
                        "alert_rule_test": alert_tests,
                        "promql_expr_test": dashboard_tests,
                    }
                ],
            },
            sort_keys=False,
        )
    )
    result = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True)
    print(f"[alerts] promtool: {len(alert_tests)} alert checks, {len(dashboard_tests)} dashboard queries")
    assert result.returncode == 0, result.stdout + result.stderr


# --- The autoscaler without metrics (issue 19, item 11) -------------------------------------------

HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"


def hpa_condition(namespace: str, name: str, values: str) -> list[dict[str, str]]:
    """kube-state-metrics' three series for one HPA's ScalingActive condition (one per status, the
    matching one 1), as internal/store/horizontalpodautoscaler.go writes them. `values` is the
    promtool notation of the `false` series; the `true` series is its complement."""
    complement = " ".join(f"{1 - int(part[0])}{part[1:]}" for part in values.split())
    series = 'kube_horizontalpodautoscaler_status_condition{{namespace="{}",horizontalpodautoscaler="{}",'
    series += 'condition="ScalingActive",status="{}"}}'
    return [
        {"series": series.format(namespace, name, "false"), "values": values},
        {"series": series.format(namespace, name, "true"), "values": complement},
        {"series": series.format(namespace, name, "unknown"), "values": "0x40"},
    ]


def test_the_autoscaler_alert_exists_only_with_the_autoscaler():
    names = {rule["alert"] for rule in alert_rules(AUTOSCALED)}
    assert "LlmGatewayAutoscalerBlind" in names
    assert "LlmGatewayAutoscalerBlind" not in {rule["alert"] for rule in alert_rules(stack_settings_default())}


def test_the_autoscaler_alert_selects_the_hpa_the_program_registers():
    run = run_program(
        {"namespace": "ml", "gateway": {"autoscaling": {"enabled": True}}, "alerts": {"enabled": True}},
        {"openaiApiKey": "sk-alerts-test"},
    )
    (hpa,) = run.of_type(HPA)
    (rule,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:PrometheusRule"]
    (blind,) = [r for r in rule.inputs["spec"]["groups"][0]["rules"] if r["alert"] == "LlmGatewayAutoscalerBlind"]
    metadata = hpa.inputs["metadata"]
    assert f'namespace="{metadata["namespace"]}"' in blind["expr"]
    assert f'horizontalpodautoscaler="{metadata["name"]}"' in blind["expr"]


@needs_promtool
def test_promtool_fires_the_autoscaler_alert_for_our_hpa_only_after_its_hold(tmp_path):
    # Ours loses its metrics at minute 5 and gets them back at minute 30. Another HPA in our
    # namespace, and one of our name in another namespace, are blind all along: never ours to report.
    blind_from_5_to_30 = "0x4 1x24 0x10"
    series = [
        *hpa_condition("ml", "litellm", blind_from_5_to_30),
        *hpa_condition("ml", "someone-else", "1x40"),
        *hpa_condition("other", "litellm", "1x40"),
    ]
    (rule,) = [rule for rule in alert_rules(AUTOSCALED) if rule["alert"] == "LlmGatewayAutoscalerBlind"]
    firing = [
        {
            "exp_labels": {
                "namespace": "ml",
                "horizontalpodautoscaler": "litellm",
                "condition": "ScalingActive",
                "status": "false",
                **rule["labels"],
            },
            "exp_annotations": rule["annotations"],
        }
    ]
    # `for: 15m` from minute 5: pending at 19, firing at 20 and 29, resolved once ScalingActive is back.
    expected = {"4m": [], "19m": [], "20m": firing, "29m": firing, "31m": []}
    assert_promtool_alert(tmp_path, AUTOSCALED, rule, series, expected)


def assert_promtool_alert(tmp_path, settings, rule, series, expected) -> None:
    """`promtool test rules`: `rule` of `settings` on `series` (1 sample a minute) gives the alerts of
    `expected` (eval time → alerts) and no others."""
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [write_rules(tmp_path, settings)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "alert_rule_test": [
                            {"eval_time": at, "alertname": rule["alert"], "exp_alerts": alerts}
                            for at, alerts in expected.items()
                        ],
                    }
                ],
            },
            sort_keys=False,
        )
    )
    result = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- vLLM's /metrics unreadable (issue 21): busy and hung look alike --------------------------------


@needs_promtool
def test_promtool_fires_the_progress_blind_alert_while_any_gateway_pod_is_blind(tmp_path):
    # Pod a cannot read vLLM's /metrics from minute 5 to 20; pod b reads them all along. One blind
    # pod is enough: its requests are the ones moved off a busy GPU.
    series = [
        {"series": 'llm_gateway_vllm_progress_blind{pod="litellm-a"}', "values": "0x4 1x15 0x10"},
        {"series": 'llm_gateway_vllm_progress_blind{pod="litellm-b"}', "values": "0x31"},
    ]
    (rule,) = [rule for rule in alert_rules(SETTINGS) if rule["alert"] == "LlmGatewayVllmProgressBlind"]
    firing = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
    # `for: 5m` from minute 5: pending at 9, firing at 10 and 20, resolved once the pod reads them again.
    expected = {"4m": [], "9m": [], "10m": firing, "20m": firing, "22m": []}
    assert_promtool_alert(tmp_path, SETTINGS, rule, series, expected)


def litellm_metric(series: str) -> str:
    """A series' metric as LiteLLM's `prometheus_metrics_config` names it (no `_total`, `_bucket`, …)."""
    return re.sub(r"_(total|bucket|sum|count)$", "", series)


def test_litellm_emits_every_metric_the_alerts_the_dashboard_and_the_docs_read():
    settings = dataclasses.replace(
        stack_settings("prod"), alerts=dataclasses.replace(stack_settings("prod").alerts, enabled=True, dashboard=True)
    )
    read = json.dumps(alert_rules(settings)) + json.dumps(dashboard_queries(settings))
    read += (ROOT / "docs" / "monitoring.md").read_text()
    named = {litellm_metric(series) for series in re.findall(r"\blitellm_[a-z_]+", read)}
    assert named and named <= set(LITELLM_METRICS), named - set(LITELLM_METRICS)
    config = litellm_config(settings)["litellm_settings"]
    assert config["prometheus_metrics_config"][0]["metrics"] == list(LITELLM_METRICS)
    quiet = dataclasses.replace(settings, gateway=dataclasses.replace(settings.gateway, metrics=False))
    assert "prometheus_metrics_config" not in litellm_config(quiet)["litellm_settings"]


def test_the_plugins_define_every_metric_of_theirs_the_alerts_the_dashboard_and_the_docs_read():
    """The gateway's own series are named in gateway/contract.py, which the plugins register them by."""
    settings = dataclasses.replace(
        stack_settings("prod"), alerts=dataclasses.replace(stack_settings("prod").alerts, enabled=True, dashboard=True)
    )
    read = json.dumps(alert_rules(settings)) + json.dumps(dashboard_queries(settings))
    read += (ROOT / "docs" / "monitoring.md").read_text()
    defined = {*map(scraped, GATEWAY_COUNTERS), *GATEWAY_GAUGES}
    named = set(re.findall(r"\bllm_gateway_[a-z_]+", read))
    assert named and named <= defined, named - defined


# --- several chains (issue 23): each chain's alerts count its own requests only ----------------------

CHAINS = parse_settings(
    {
        "alerts": {"enabled": True},
        "chains": [
            {
                "name": "embed",
                "kind": "embeddings",
                "tiers": [
                    {"vllm": {"model": "BAAI/bge-m3"}, "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024}},
                    {
                        "ollama": {"model": "bge-m3", "modelMemory": "1200Mi", "memoryPerContextToken": 20000},
                        "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024},
                    },
                ],
            }
        ],
        "ollama": {"resources": {"requests": {"memory": "8Gi"}, "limits": {"memory": "10Gi"}}},
    },
    openai_key="secret",
)


def test_each_chain_gets_its_alerts_labelled_with_it():
    rules = alert_rules(CHAINS)
    embed = [rule for rule in rules if rule["labels"].get("chain") == "embed"]
    assert {rule["alert"] for rule in embed} == {
        "LlmGatewayGpuTierNotServing",
        "LlmGatewayNoTierAvailable",
        "LlmGatewayLastLocalTierDown",
    }
    default = [rule for rule in rules if "chain" not in rule["labels"]]
    assert "LlmGatewayOllamaDown" in {rule["alert"] for rule in default}  # its name kept: routes name it
    assert all(
        'requested_model="embed"' in rule["expr"] for rule in embed if rule["alert"] != "LlmGatewayLastLocalTierDown"
    )


@needs_promtool
def test_promtool_fires_no_tier_available_for_the_failing_chain_only(tmp_path):
    # From minute 5 every embeddings request fails with no tier left; chat requests are all answered.
    failed = 'llm_gateway_failed_requests_total{reason="no_tier_available",status="503",requested_model="%s"}'
    series = [{"series": failed % "embed", "values": "0x4 1+1x10"}, {"series": failed % "chat", "values": "0x15"}]
    rules = [rule for rule in alert_rules(CHAINS) if rule["alert"] == "LlmGatewayNoTierAvailable"]
    embed = next(rule for rule in rules if rule["labels"].get("chain") == "embed")
    firing = [{"exp_labels": embed["labels"], "exp_annotations": embed["annotations"]}]
    assert_promtool_alert(tmp_path, CHAINS, embed, series, {"4m": [], "8m": firing})

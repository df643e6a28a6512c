"""What operators are told and shown: alert rules and a Grafana dashboard, from the chain.

Pure: no Pulumi import. Every expression but one uses metric names and labels the real proxy exports
(the drill scrapes them after real failovers and `promtool test rules` runs these rules on that data):
LiteLLM's own per-deployment counters (label `model_id` = the tier id, `requested_model` = the model
group) and those the gateway's plugins add: `llm_gateway_failed_requests_total{reason}`
(gateway/honest_errors.py), `llm_gateway_cloud_guard_rejections_total{limit}`
(gateway/cloud_guard.py) and `llm_gateway_vllm_progress_blind` (gateway/vllm_progress.py); those names,
and the reasons the alerts select, come from gateway/contract.py, which the plugins read too. The tiers
are read from the chain, never spelled out: the GPU tier is the first, Ollama the last one inside the
cluster, the cloud the one outside it. The one: with the autoscaler on, kube-state-metrics'
`kube_horizontalpodautoscaler_status_condition` (its internal/store/horizontalpodautoscaler.go),
tested with promtool on series in that exporter's format.
"""

from __future__ import annotations

from typing import Any

from core.chain import Chain, Tier, all_tiers, chains, failover_chain
from core.names import GATEWAY_SERVICE, PROJECT
from core.settings import Settings
from gateway.contract import (
    CLOUD_GUARD_REJECTIONS,
    CLOUD_RATE_LIMITED,
    FAILED_REQUESTS,
    NO_TIER_AVAILABLE,
    PROGRESS_BLIND,
    scraped,
)

DASHBOARD_UID = "llm-gateway-failover"
# Requests clients sent (LiteLLM's health probes carry route "None").
CLIENT_REQUESTS = 'litellm_proxy_total_requests_metric_total{route!="None"}'
# How long the autoscaler may go without metrics before anyone is told. Its controller marks
# ScalingActive false at any sync (every 15 s by default) that gets no metrics, also briefly while
# metrics-server has sampled no pod yet (a fresh start of either); a blind autoscaler still holds
# its pods, so there is no hurry. kube-prometheus-stack's own HPA alerts wait 15 minutes too.
AUTOSCALER_BLIND_FOR = "15m"
# How long gateway/vllm_progress.py's PROGRESS_BLIND gauge must say 1: one unread sample (a slow answer at
# peak) is not yet a watch without evidence.
PROGRESS_BLIND_FOR = "5m"


def _served(tier: Tier, window: str) -> str:
    return f'sum(increase(litellm_deployment_success_responses_total{{model_id="{tier.name}"}}[{window}]))'


def _fell_back_from(tier: Tier, window: str) -> str:
    """Requests that left `tier` for the next one: it failed them (refused, 5xx, hung). Added, not
    `or`-ed: the two counters carry the same labels, and `or` would drop one of them."""
    selector = f'{{requested_model="{tier.group}"}}[{window}]'
    return (
        f"(sum(increase(litellm_deployment_successful_fallbacks_total{selector})) or vector(0))"
        f" + (sum(increase(litellm_deployment_failed_fallbacks_total{selector})) or vector(0))"
    )


def _failed(reason: str, window: str, chain: str | None = None) -> str:
    """`chain`: only that chain's requests (gateway/honest_errors.py labels each with its model)."""
    scope = f',requested_model="{chain}"' if chain else ""
    return f'sum(increase({scraped(FAILED_REQUESTS)}{{reason="{reason}"{scope}}}[{window}]))'


def _rule(
    name: str, expr: str, severity: str, summary: str, description: str, hold_for: str | None = None
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        **({"for": hold_for} if hold_for else {}),
        "labels": {"severity": severity, "part_of": PROJECT},
        "annotations": {"summary": summary, "description": description},
    }


def _autoscaler_blind(settings: Settings) -> dict[str, Any]:
    """Without metrics (no metrics-server, or pods without CPU requests) the HPA cannot compute a
    count: it keeps the replicas it has, minReplicas after the first `pulumi up`, and says so only in
    its ScalingActive condition, which kube-state-metrics exports. Ours only: by namespace and name."""
    selector = (
        f'namespace="{settings.namespace}",horizontalpodautoscaler="{GATEWAY_SERVICE}",'
        'condition="ScalingActive",status="false"'
    )
    return _rule(
        "LlmGatewayAutoscalerBlind",
        f"kube_horizontalpodautoscaler_status_condition{{{selector}}} == 1",
        "warning",
        "The gateway's autoscaler cannot read the pods' CPU use: it is not scaling",
        f"ScalingActive is false: the gateway keeps the pods it has (minReplicas, "
        f"{settings.gateway.autoscaling.min_replicas}, after a first `pulumi up`) whatever the load. Usually no "
        f"metrics-server; `kubectl -n {settings.namespace} describe hpa {GATEWAY_SERVICE}` gives the reason.",
        hold_for=AUTOSCALER_BLIND_FOR,
    )


def _progress_blind(gpu: Tier) -> dict[str, Any]:
    """gateway/vllm_progress.py sets the gauge while vLLM answers but its /metrics cannot be read. Then
    only a gateway process's own streams show progress: a GPU busy for other replicas looks hung."""
    return _rule(
        "LlmGatewayVllmProgressBlind",
        f"max({PROGRESS_BLIND}) == 1",
        "warning",
        f"The gateway cannot read {gpu.name}'s /metrics: a busy GPU looks like a hung one",
        "Requests quiet past vllm.firstTokenTimeoutSeconds go to the next tier and the GPU tier is cooled down, "
        "at peak too. Check that vLLM serves /metrics on its port (a NetworkPolicy or proxy in the way, metric "
        "names changed by a vLLM upgrade); the gateway's log says what it got.",
        hold_for=PROGRESS_BLIND_FOR,
    )


def alert_rules(settings: Settings) -> list[dict[str, Any]]:
    """The rules of the PrometheusRule's one group (also what `promtool test rules` runs). The default
    chain's rules keep their names and expressions; each other chain's carry a `chain` label."""
    every = chains(settings)
    scoped = len(every) > 1  # several chains: each rule counts its own chain's requests only
    rules = _chain_rules(settings, every[0], scoped)
    cloud = [tier for chain in every for tier in chain.tiers if not tier.in_cluster and tier.kind == "cloud"]
    if cloud:
        rules.append(
            _rule(
                "LlmGatewaySpendGuardRejecting",
                f"sum(increase({scraped(CLOUD_GUARD_REJECTIONS)}[{settings.alerts.window_minutes}m])) > 0",
                "warning",
                f"The cloud spend guard is refusing requests (429 {CLOUD_RATE_LIMITED})",
                "A cloud limit (openai.rpm, openai.tpm or openai.maxBudgetUsd) is reached while local tiers are down.",
            )
        )
    rules.append(_progress_blind(every[0].tiers[0]))
    for chain in every[1:]:
        rules += [_labelled(rule, chain) for rule in _chain_rules(settings, chain, scoped)]
    if settings.gateway.autoscaling.enabled:
        rules.append(_autoscaler_blind(settings))
    return rules


def _labelled(rule: dict[str, Any], chain: Chain) -> dict[str, Any]:
    return {**rule, "labels": {**rule["labels"], "chain": chain.name}}


def _chain_rules(settings: Settings, chain: Chain, scoped: bool) -> list[dict[str, Any]]:
    """One chain's alerts: its GPU tier idle, no tier left, its last local tier failing, its cloud
    answering. The default chain's last local tier keeps the alert name `LlmGatewayOllamaDown`
    (Alertmanager routes name it); another chain's is `LlmGatewayLastLocalTierDown`."""
    tiers = chain.tiers
    first, local_last = tiers[0], [tier for tier in tiers if tier.in_cluster][-1]
    idle, window = f"{settings.alerts.gpu_idle_minutes}m", f"{settings.alerts.window_minutes}m"
    requests = CLIENT_REQUESTS if not scoped else CLIENT_REQUESTS.replace("}", f',requested_model="{chain.name}"}}')
    no_tier = _failed(NO_TIER_AVAILABLE, window, chain.name if scoped else None)
    rules = []
    if first.probed:  # a GPU tier (ours or an existing vLLM)
        rules.append(
            _rule(
                "LlmGatewayGpuTierNotServing",
                f"sum(increase({requests}[{idle}])) > 0 unless on() {_served(first, idle)} > 0",
                "warning",
                f"The GPU tier ({first.name}) has answered nothing for {idle} while requests arrive",
                "Gaming Mode that was never ended, a lost GPU, or vLLM failing: every answer comes from a slower tier.",
            )
        )
    rules.append(
        _rule(
            "LlmGatewayNoTierAvailable",
            f"{no_tier} > 0",
            "critical",
            "Requests fail: no inference tier could answer them",
            f"Clients get 503 {NO_TIER_AVAILABLE}: every tier of the chain refused, failed or is cooling down.",
        )
    )
    # No tier after it: its failures are the gateway's failures.
    down = f"{_fell_back_from(local_last, window)} > 0" if local_last is not tiers[-1] else f"{no_tier} > 0"
    default_chain = chain.name == settings.gateway.model_name
    rules.append(
        _rule(
            "LlmGatewayOllamaDown" if default_chain else "LlmGatewayLastLocalTierDown",
            down,
            "critical",
            f"The last local tier ({local_last.name}) is failing requests",
            "The CPU tier is the last line of defence inside the cluster; after it, prompts leave the cluster.",
        )
    )
    for tier in tiers:
        if tier.in_cluster:
            continue
        rules.append(
            _rule(
                "LlmGatewayCloudServing",
                f"{_served(tier, window)} > 0",
                "warning",
                f"The cloud tier ({tier.name}) is answering: prompts are leaving the cluster",
                "Both local tiers were unavailable for these requests. Check vLLM and Ollama.",
            )
        )
    return rules


def prometheus_rule_spec(settings: Settings) -> dict[str, Any]:
    return {"groups": [{"name": PROJECT, "rules": alert_rules(settings)}]}


def dashboard_queries(settings: Settings) -> dict[str, str]:
    """Panel title → PromQL, every query over the metrics above."""
    chain = failover_chain(settings)
    tiers = all_tiers(settings)
    cloud = [tier for tier in tiers if not tier.in_cluster]
    probed = "|".join(tier.name for tier in tiers if tier.probed)
    queries = {
        "Requests per second by tier": (
            'sum by (model_id) (rate(litellm_deployment_success_responses_total{model_id!=""}[5m]))'
        ),
        "Latency p95 by tier (seconds)": (
            "histogram_quantile(0.95, sum by (le, model_id) "
            '(rate(litellm_llm_api_latency_metric_bucket{model_id!=""}[5m])))'
        ),
        "Failovers per second (from → to)": (
            "sum by (requested_model, fallback_model) (rate(litellm_deployment_successful_fallbacks_total[5m]))"
        ),
        "Failed requests by reason": f"sum by (reason) (rate({scraped(FAILED_REQUESTS)}[5m]))",
        "vLLM probe and cooldown state (0 healthy, 1 partial, 2 outage)": (
            f'max by (model_id) (litellm_deployment_state{{model_id="{chain[0].name}"}})'
            if not settings.chains
            else f'max by (model_id) (litellm_deployment_state{{model_id=~"{probed}"}})'
        ),
    }
    if settings.chains:
        queries["Requests per second by chain"] = f"sum by (requested_model) (rate({CLIENT_REQUESTS}[5m]))"
    if cloud:
        ids = "|".join(tier.name for tier in cloud)
        queries["Cloud share of answers"] = (
            f'sum(rate(litellm_deployment_success_responses_total{{model_id=~"{ids}"}}[1h])) '
            '/ sum(rate(litellm_deployment_success_responses_total{model_id!=""}[1h]))'
        )
        queries["Cloud spend (USD, 24 h)"] = f'sum(increase(litellm_spend_metric_total{{model_id=~"{ids}"}}[24h]))'
        queries["Spend guard rejections by limit"] = f"sum by (limit) (increase({scraped(CLOUD_GUARD_REJECTIONS)}[1h]))"
    return queries


def dashboard(settings: Settings) -> dict[str, Any]:
    """A Grafana dashboard (schema 39) for kube-prometheus-stack's sidecar."""
    panels = []
    for index, (title, expr) in enumerate(dashboard_queries(settings).items()):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
            }
        )
    return {
        "uid": DASHBOARD_UID,
        "title": f"{PROJECT}: tiers and failover",
        "tags": [PROJECT],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }

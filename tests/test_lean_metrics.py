"""gateway/lean_metrics.py: LiteLLM's rate-limit gauges are worked out only when they are emitted.

The series themselves are checked through the real proxy in tests/test_alerts.py (every alert fires
on the metrics it scrapes) and tests/test_drill.py (a fallback shows in the counters).
"""

from __future__ import annotations

import importlib.util

from litellm.integrations.prometheus import PrometheusLogger
from litellm.types.integrations.prometheus import NoOpMetric

from core.litellm_config import litellm_config
from core.names import LEAN_METRICS_FILE
from tests.test_fallback import settings_for


def load_lean_metrics():
    spec = importlib.util.spec_from_file_location(LEAN_METRICS_FILE.stem, LEAN_METRICS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_gauge_pair_that_is_not_emitted_costs_nothing_and_one_that_is_is_set_as_before(monkeypatch):
    calls = []

    def litellms_own(self, **kwargs):  # stands for LiteLLM's method, which the plugin wraps
        calls.append(kwargs["metric_name"])

    monkeypatch.setattr(PrometheusLogger, "_set_rate_limit_allowed_and_used_gauges", litellms_own)
    load_lean_metrics()
    load_lean_metrics()  # LiteLLM may load a callback file twice: wrapped once
    patched = PrometheusLogger._set_rate_limit_allowed_and_used_gauges
    assert patched is not litellms_own and patched.skips_unemitted
    patched(None, metric_name="unread", allowed_gauge=NoOpMetric(), used_gauge=NoOpMetric())
    patched(None, metric_name="half-read", allowed_gauge=object(), used_gauge=NoOpMetric())
    patched(None, metric_name="read", allowed_gauge=object(), used_gauge=object())
    assert calls == ["half-read", "read"]


def test_the_rendered_config_loads_it_beside_prometheus_only_with_metrics_on():
    on = litellm_config(settings_for())["litellm_settings"]["callbacks"]
    assert on[on.index("prometheus") + 1] == f"{LEAN_METRICS_FILE.stem}.handler"
    off = litellm_config(settings_for({"gateway": {"metrics": False}}))["litellm_settings"]["callbacks"]
    assert "prometheus" not in off and f"{LEAN_METRICS_FILE.stem}.handler" not in off

"""The gateway autoscaled (issue 13, first part): an HPA owns the replica count, Pulumi does not."""

import kubernetes_validate
import pytest

from core.declarations import ConfigError
from core.settings import parse_settings
from pulumi_harness import DEPLOYMENT, run_program

KEY = {"openaiApiKey": "sk-autoscaling-test"}
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def scaled(**autoscaling):
    return run_program({"gateway": {"autoscaling": {"enabled": True, **autoscaling}}}, KEY)


def test_with_the_autoscaler_the_deployment_sets_no_replica_count():
    run = scaled(minReplicas=2, maxReplicas=8, cpuTargetPercent=60)
    (hpa,) = run.of_type(HPA)
    spec = hpa.inputs["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "litellm"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    # Pulumi and an HPA both setting replicas: every `pulumi up` would reset the autoscaler's choice.
    assert "replicas" not in run.one(DEPLOYMENT, "litellm").inputs["spec"]
    for resource in (hpa, run.one(DEPLOYMENT, "litellm")):
        kubernetes_validate.validate(resource.inputs, "1.33", strict=True)


def test_the_disruption_budget_follows_the_autoscalers_minimum():
    assert len(scaled(minReplicas=2).of_type(PDB)) == 1
    # With a minimum of one pod a PDB of minAvailable 1 would block every node drain.
    assert scaled(minReplicas=1, maxReplicas=4).of_type(PDB) == []


def test_without_the_autoscaler_nothing_changes():
    run = run_program({}, KEY)
    assert run.of_type(HPA) == []
    assert run.one(DEPLOYMENT, "litellm").inputs["spec"]["replicas"] == 2


def test_a_minimum_above_the_maximum_is_refused():
    with pytest.raises(ConfigError, match=r"gateway\.autoscaling\.minReplicas .* at most maxReplicas \(3\)"):
        parse_settings({"gateway": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}}, "secret")

"""What `pulumi up` waits for, and what it does to a count someone scaled by hand (issue 19: items
2, 3, 9 and 12).

Under mocks: the await annotations, the resource options that reach the engine (the harness keeps
them) and the replica patch. What pulumi-kubernetes then does with them is read from its source
(v4.32.0 / HEAD 9497796, July 2026); where a test needs that behaviour, the few rules it relies on
are written out below with their upstream file, and applied to what the program registers.
"""

import kubernetes_validate
import pytest

from components.ingress import EDGE_MARGIN_SECONDS, NGINX_TIMEOUTS
from components.vllm import PATCH_FORCE_ANNOTATION
from core import kube
from core.chain import failover_chain, longest_answer_seconds
from core.stack_files import stack_config, stack_settings
from pulumi_harness import DEPLOYMENT, DEPLOYMENT_PATCH, SERVICE, run_program

KEY = {"openaiApiKey": "sk-awaits-test"}
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
SERVERS_TRANSPORT = "kubernetes:traefik.io/v1alpha1:ServersTransport"
INGRESS_ROUTE = "kubernetes:traefik.io/v1alpha1:IngressRoute"


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_config("prod"), KEY, stack="prod")


def annotations(registration):
    return registration.inputs["metadata"].get("annotations", {})


def skips_await(registration) -> bool:
    return annotations(registration).get(kube.SKIP_AWAIT_ANNOTATION) == "true"


def claims(deployment) -> set[str]:
    volumes = deployment.inputs["spec"]["template"]["spec"].get("volumes", [])
    return {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}


# Item 2: no Deployment waits on a claim no pod consumes ------------------------------------------


@pytest.mark.parametrize(
    "stack, config", [("dev", stack_config("dev")), ("gaming", {"gamingMode": True}), ("prod", stack_config("prod"))]
)
def test_a_deployment_without_pods_never_waits_for_its_claims(stack, config):
    # pulumi-kubernetes await/deployment.go: the Deployment is done only when every claim of its pod
    # template is Bound (isEveryPVCReady), at 0 replicas too; a WaitForFirstConsumer claim binds
    # only when a pod is scheduled. So: no pod, no await.
    run = run_program(config, KEY, stack="prod" if stack == "prod" else "dev")
    for deployment in run.of_type(DEPLOYMENT):
        without_pods = deployment.inputs["spec"].get("replicas", 1) == 0
        assert skips_await(deployment) == (without_pods and bool(claims(deployment))), deployment.name
    # The replica patch is awaited with the Deployment's own awaiter (it is a Deployment to the provider).
    (patch,) = run.of_type(DEPLOYMENT_PATCH)
    assert skips_await(patch) == (patch.inputs["spec"]["replicas"] == 0)
    vllm_at_zero = stack != "prod"
    assert skips_await(run.one(DEPLOYMENT, "vllm")) == vllm_at_zero


def test_the_await_choice_is_made_when_the_deployment_is_created(prod):
    # Leaving Gaming Mode through the stack must not start a wait on a claim that never bound (a
    # stack first deployed at 0): the choice is frozen like the count, and the patch does the waiting.
    vllm = prod.one(DEPLOYMENT, "vllm")
    assert f'metadata.annotations["{kube.SKIP_AWAIT_ANNOTATION}"]' in vllm.ignore_changes


# Item 3: no await is shorter than what it waits for ---------------------------------------------


def selected_by(service, deployments):
    selector = service.inputs["spec"]["selector"]
    (deployment,) = [
        d for d in deployments if selector.items() <= d.inputs["spec"]["template"]["metadata"]["labels"].items()
    ]
    return deployment


def await_seconds(registration) -> int:
    return int(annotations(registration)[kube.AWAIT_ANNOTATION])


def test_each_service_waits_as_long_as_the_pods_behind_it(prod):
    services = prod.of_type(SERVICE)
    assert {s.inputs["metadata"]["name"] for s in services} == {"vllm", "ollama", "litellm", "redis"}
    for service in services:
        deployment = selected_by(service, prod.of_type(DEPLOYMENT))
        # await/service.go waits until the endpoints hold no unready pod, 10 minutes unless told.
        assert await_seconds(service) == await_seconds(deployment), service.name
    for slow in ("vllm", "ollama"):
        assert await_seconds(prod.one(SERVICE, slow)) > 600, slow


def test_a_service_without_pods_is_not_told_to_skip_its_await():
    # At 0 replicas the Service await ends once the empty endpoints have settled (10 s): success
    # is "ready, settled, nothing pending" (await/service.go checkAndLogStatus), no endpoint needed.
    run = run_program({"gamingMode": True}, KEY)
    vllm = run.one(SERVICE, "vllm")
    assert not skips_await(vllm)
    assert await_seconds(vllm) == await_seconds(run.one(DEPLOYMENT, "vllm"))


# Item 9: the edge outlasts the longest answer; Pulumi does not wait for a load balancer ----------

EDGE = {"enabled": True, "host": "llm.example.com"}


def test_the_ingress_waits_longer_than_the_longest_answer_the_chain_allows():
    config = {**stack_config("prod"), "ingress": {**EDGE, "className": "nginx"}}
    run = run_program(config, KEY, stack="prod")
    longest = longest_answer_seconds(failover_chain(stack_settings("prod")))
    assert longest == 1320  # vLLM 600 + Ollama 600 + the cloud 120: far above ingress-nginx's 60
    (ingress,) = run.of_type(INGRESS)
    for timeout in NGINX_TIMEOUTS:
        assert int(annotations(ingress)[timeout]) == longest + EDGE_MARGIN_SECONDS > longest
    # Controllers without a published address never satisfy await/ingress.go: not awaited.
    assert skips_await(ingress)
    kubernetes_validate.validate(ingress.inputs, "1.33", strict=True)


def test_the_operators_annotations_override_ours():
    mine = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600", kube.SKIP_AWAIT_ANNOTATION: "false"}
    (ingress,) = run_program({"ingress": {**EDGE, "annotations": mine}}, KEY).of_type(INGRESS)
    assert annotations(ingress)["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations(ingress)[kube.SKIP_AWAIT_ANNOTATION] == "false"  # wait for the address after all
    assert annotations(ingress)["nginx.ingress.kubernetes.io/proxy-send-timeout"] != "3600"


def test_the_traefik_route_uses_its_own_transport_with_the_same_timeout():
    run = run_program({"ingress": {**EDGE, "kind": "IngressRoute"}}, KEY)
    longest = longest_answer_seconds(failover_chain(stack_settings("dev")))
    (transport,) = run.of_type(SERVERS_TRANSPORT)
    (route,) = run.of_type(INGRESS_ROUTE)
    # traefik docs/content/reference/dynamic-configuration/traefik.io_serverstransports.yaml
    assert transport.inputs["spec"] == {
        "forwardingTimeouts": {"responseHeaderTimeout": f"{longest + EDGE_MARGIN_SECONDS}s"}
    }
    assert transport.inputs["metadata"]["namespace"] == route.inputs["metadata"]["namespace"]
    for service in route.inputs["spec"]["routes"][0]["services"]:
        assert service["serversTransport"] == transport.inputs["metadata"]["name"]


# Item 12: Gaming Mode by kubectl, and what `pulumi up` does afterwards ---------------------------
#
# The rules of pulumi-kubernetes' server-side-apply update that decide it, as read upstream:
# - await/await.go fixCSAFieldManagers → fluxcd/pkg ssa/patch.go matchFieldManager: entries of
#   managers whose name starts with "kubectl" (Update or Apply) become Pulumi's, except those
#   written through a subresource. `kubectl scale` writes through the scale subresource, whose
#   entry (apimachinery managedfields/scalehandler.go ToParent) takes spec.replicas away from
#   every other manager; `kubectl patch`/`edit` write the Deployment itself.
# - await/await.go handleSSAIgnoreFields: a field in ignoreChanges held by another manager only is
#   left out of the apply; otherwise it is sent with its live value.
# - await/await.go patchForce: no force unless `pulumi.com/patchForce` (or the provider's option);
#   structured-merge-diff merge/update.go: an unforced apply of a value another manager holds fails.

PULUMI = "pulumi-kubernetes-4f2c1a"  # the provider's field manager (a name it makes per resource)
KUBECTL_SCALE = {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fields": {"spec.replicas"}}
KUBECTL_PATCH = {"manager": "kubectl-patch", "operation": "Update", "subresource": "", "fields": {"spec.replicas"}}


def live_after(kubectl_entry, count):
    ours = {"manager": PULUMI, "operation": "Apply", "subresource": "", "fields": {"spec.template"}}
    return {"replicas": count, "managed": [ours, kubectl_entry]}


def pulumi_apply(resource, live, create: bool = False) -> str:
    """What `pulumi up` applying `resource` does to a live count: "kept", "reset to N" or "conflict".
    On create the inputs go as they are; ignoreChanges and the take-over only act on an update
    (and the take-over never for a patch resource)."""
    managed = live["managed"]
    if not create and resource.type != DEPLOYMENT_PATCH:
        managed = [
            {**entry, "manager": PULUMI}
            if entry["manager"].startswith("kubectl") and not entry["subresource"]
            else entry
            for entry in managed
        ]
    holders = {entry["manager"] for entry in managed if "spec.replicas" in entry["fields"]}
    body = dict(resource.inputs["spec"])
    if not create and "spec.replicas" in resource.ignore_changes:
        if holders and PULUMI not in holders:
            body.pop("replicas", None)
        else:
            body["replicas"] = live["replicas"]
    if "replicas" not in body or body["replicas"] == live["replicas"]:
        return "kept"
    if holders - {PULUMI} and annotations(resource).get(PATCH_FORCE_ANNOTATION) != "true":
        return "conflict"
    return f"reset to {body['replicas']}"


@pytest.mark.parametrize("kubectl", [KUBECTL_SCALE, KUBECTL_PATCH], ids=["kubectl scale", "kubectl patch"])
def test_pulumi_up_after_a_manual_scale_keeps_the_count(prod, kubectl):
    vllm = prod.one(DEPLOYMENT, "vllm")
    assert vllm.inputs["spec"]["replicas"] == 1
    # Gaming Mode from the gaming machine, then any `pulumi up` that updates the Deployment (a new
    # image, a new setting), with or without --refresh (the engine copies the old, or refreshed,
    # count into the inputs; the provider then leaves it out or sends the live value).
    assert pulumi_apply(vllm, live_after(kubectl, 0)) == "kept"
    # And back by hand: still the operator's.
    assert pulumi_apply(vllm, live_after(kubectl, 2)) == "kept"


def test_without_ignore_changes_pulumi_up_would_fail_or_take_the_gpu_back(prod):
    # The behaviour before this change: the same rules, the Deployment as it was registered.
    vllm = prod.one(DEPLOYMENT, "vllm")
    vllm.ignore_changes = []
    assert pulumi_apply(vllm, live_after(KUBECTL_SCALE, 0)) == "conflict"  # `pulumi up` fails
    assert pulumi_apply(vllm, live_after(KUBECTL_PATCH, 0)) == "reset to 1"  # silently, mid-game


def test_a_changed_stack_count_is_one_new_forced_patch_and_nothing_else():
    playing = run_program({**stack_config("prod"), "gamingMode": True}, KEY, stack="prod")
    working = run_program({**stack_config("prod"), "gamingMode": False}, KEY, stack="prod")
    # Every object keeps its logical name, and its inputs outside the ignored paths.
    assert [(r.type, r.name) for r in playing.kubernetes] == [(r.type, r.name) for r in working.kubernetes]
    for before, after in zip(playing.kubernetes, working.kubernetes, strict=True):
        if before.name != "vllm-deployment":
            assert before.inputs == after.inputs, before.name
    ignored = set(working.one(DEPLOYMENT, "vllm").ignore_changes)
    assert ignored == {"spec.replicas", f'metadata.annotations["{kube.SKIP_AWAIT_ANNOTATION}"]'}
    # The count: one patch per value. A new logical name is a create: one forced apply that takes
    # the count from whoever holds it, because the operator changed the stack on purpose.
    (enter,) = playing.of_type(DEPLOYMENT_PATCH)
    (leave,) = working.of_type(DEPLOYMENT_PATCH)
    assert (enter.name, leave.name) == ("vllm-replicas-0", "vllm-replicas-1")
    assert pulumi_apply(leave, live_after(KUBECTL_SCALE, 0), create=True) == "reset to 1"
    # Afterwards the patch never re-applies its count, even when a refresh has read kubectl's back.
    assert leave.ignore_changes == ["spec.replicas"]
    assert pulumi_apply(leave, live_after(KUBECTL_SCALE, 0)) == "kept"
    # It waits like the Deployment: as long as its pods may take, and not at all for 0.
    assert leave.create_timeout == f"{await_seconds(working.one(DEPLOYMENT, 'vllm'))}s"
    assert skips_await(enter) and not skips_await(leave)


def test_rendering_yaml_writes_no_patch():
    # A patch's file would overwrite the Deployment's (same kind, namespace and name).
    run = run_program({"renderYamlToDirectory": "rendered"}, KEY)
    assert run.of_type(DEPLOYMENT_PATCH) == []

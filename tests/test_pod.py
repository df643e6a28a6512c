"""The gateway as its pod, not only its config: the rendered Deployment run by bubblewrap.

The program runs under mocks; its Deployment, ConfigMap and Secrets (test values) are handed to
drill/pod.py, which starts the real LiteLLM proxy with the container's args, the image's ENV plus
the container's env (secretKeyRef resolved), the spec's UID and GID, a read-only root, emptyDirs
as tmpfs and the ConfigMap laid out as the kubelet does. Then the kubelet's probes, failover
through the pod, and termination with a long answer in flight.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from core.chain import failover_chain
from core.stack_files import stack_config, stack_settings
from drill.client import chat
from drill.pod import MASTER_SERVICE, EmulatedPod, bubblewrap, service_environment
from drill.runner import Drill
from pulumi_harness import DEPLOYMENT, MASTER_KEY_CANARY, SERVICE, auto_name, run_program

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(bubblewrap() is None, reason="bubblewrap is installed by scripts/test"),
]

OPENAI_TEST_KEY = "sk-pod-test-openai-key"
MASTER_KEY = f"sk-{MASTER_KEY_CANARY}"  # what the mocked RandomPassword makes the master key
ANSWER_SECONDS = 47  # SIGTERM comes 12 s in (2 s + the 10 s preStop pause)


def rendered_pod(api_bases: dict[str, str]) -> EmulatedPod:
    run = run_program(stack_config("dev"), {"openaiApiKey": OPENAI_TEST_KEY})
    deployment = run.one(DEPLOYMENT, "litellm").inputs
    config_maps = {r.inputs["metadata"]["name"]: r.inputs["data"] for r in run.of_type("kubernetes:core/v1:ConfigMap")}
    secrets = {auto_name(r.name): r.inputs["stringData"] for r in run.of_type("kubernetes:core/v1:Secret")}
    services = [r.inputs for r in run.of_type(SERVICE)]
    return EmulatedPod(deployment, config_maps, secrets, api_bases, services)


@pytest.fixture(scope="module")
def tiers():
    standins = Drill(stack_settings("dev"))
    bases = standins.start_standins()
    yield standins, bases
    for standin in standins.standins.values():
        standin.stop()


@pytest.fixture(scope="module")
def pod(tiers):
    _, bases = tiers
    emulated = rendered_pod(bases).start()
    try:
        emulated.started_after = emulated.wait_started()
        yield emulated
    finally:
        emulated.stop()


def ask(pod: EmulatedPod, **options):
    return chat(pod.url, "chat", api_key=MASTER_KEY, timeout=60, **options)


def test_the_pod_starts_as_its_spec_says_and_passes_the_kubelets_probes(pod):
    print(f"\n[pod] started (startup probe passed) after {pod.started_after:.1f} s")
    spec = pod.spec
    assert spec["securityContext"]["runAsUser"] == 10001
    assert pod.container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod.probe("readinessProbe") and pod.probe("livenessProbe")
    # Nothing but the probes without a key.
    assert chat(pod.url, "chat", api_key="not-the-key").status in (400, 401)


def running_environment(pod: EmulatedPod) -> dict[str, str]:
    """The environment the proxy process really has (its /proc entry), not what was meant for it."""
    raw = Path(f"/proc/{pod.child_pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if item)


def test_the_proxy_gets_no_service_links_only_the_api_servers_variables(pod):
    environment = running_environment(pod)
    # What the kubelet would add with service links on: every Service of the namespace, `vllm` included.
    with_links = service_environment({}, pod.deployment["metadata"]["namespace"], pod.services)
    assert with_links["VLLM_PORT"].startswith("tcp://") and with_links["LITELLM_PORT"].startswith("tcp://")
    namespace_links = {name for name in with_links if not name.startswith("KUBERNETES_")}
    assert not namespace_links & set(environment), sorted(namespace_links & set(environment))
    assert environment["KUBERNETES_SERVICE_HOST"] == MASTER_SERVICE["spec"]["clusterIP"]  # links off or on


def test_failover_through_the_pod(pod, tiers):
    standins, _ = tiers
    standins.all_up()
    standins.reset_counts()
    assert ask(pod).tier == "vllm"
    standins.standins["vllm"].set_mode("down")
    assert ask(pod).tier == "ollama"
    standins.standins["ollama"].set_mode("down")
    cloud = ask(pod)
    assert cloud.tier == "openai" and cloud.status == 200
    standins.standins["openai"].set_mode("down")
    nothing = ask(pod)
    assert nothing.status == 503
    assert nothing.body["error"]["provider_specific_fields"] == {"reason": "no_tier_available"}
    standins.all_up()
    assert standins.counts()["openai"] == 1


def test_the_chain_the_pod_serves_is_the_rendered_one(pod):
    chain = [tier.name for tier in failover_chain(stack_settings("dev"))]
    config = (pod.workdir / "config" / "config.yaml").read_text()
    for tier in chain:
        assert f"id: {tier}" in config


def test_terminating_the_pod_lets_a_long_answer_finish(pod, tiers):
    # Last in the module: it ends the pod. SIGTERM comes after the preStop pause, as in a rollout.
    # The answer runs 35 s past SIGTERM: longer than LiteLLM's default 30 s drain, which would cut it.
    standins, _ = tiers
    standins.all_up()
    ending = pod
    try:
        standins.standins["vllm"].set_mode("slow", delay=ANSWER_SECONDS, tokens=90)
        answers = []
        client = threading.Thread(target=lambda: answers.append(ask(ending, stream=True)))
        client.start()
        time.sleep(2)
        terminating_at = time.monotonic()
        exited_after_sigterm = ending.terminate()
        client.join(60)
        (answer,) = answers
        print(
            f"\n[pod] {ANSWER_SECONDS} s answer in flight: preStop + SIGTERM, complete after {answer.seconds:.1f} s; "
            f"the proxy exited {exited_after_sigterm:.1f} s after SIGTERM "
            f"({time.monotonic() - terminating_at:.1f} s after termination began)"
        )
        assert answer.status == 200 and answer.tier == "vllm"
        assert answer.content == " ".join(standins.standins["vllm"].words())
        assert answer.chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert ending.process.returncode is not None
        grace = ending.spec["terminationGracePeriodSeconds"]
        assert exited_after_sigterm < grace  # it drained; the kubelet did not have to kill it
    finally:
        standins.all_up()
        ending.stop()


def test_without_the_drain_setting_litellm_would_cut_that_answer(tiers):
    # The control: the same pod with LiteLLM's default drain shortened to 3 s. Runs after the
    # module's pod has ended (one emulated pod at a time).
    standins, bases = tiers
    standins.all_up()
    control = rendered_pod(bases)
    for item in control.container["env"]:
        if item["name"] == "GRACEFUL_SHUTDOWN_TIMEOUT":
            item["value"] = "3"
    control.start()
    try:
        control.wait_started()
        standins.standins["vllm"].set_mode("slow", delay=30, tokens=60)
        outcome = []

        def client_call() -> None:
            started = time.monotonic()
            try:
                outcome.append(ask(control, stream=True).content)
            except httpx.HTTPError as cut:  # the proxy closed the stream in the middle
                outcome.append(f"cut after {time.monotonic() - started:.1f} s: {type(cut).__name__}")

        client = threading.Thread(target=client_call)
        client.start()
        time.sleep(2)
        control.terminate()
        client.join(60)
        (result,) = outcome
        print(f"\n[pod] with a 3 s drain, the 30 s answer: {result}")
        assert result.startswith("cut after") or result != " ".join(standins.standins["vllm"].words())
    finally:
        standins.all_up()
        control.stop()

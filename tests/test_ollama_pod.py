"""The Ollama pod's own commands, as rendered, run with sh against the `ollama` stand-in (issue 19).

The program runs under mocks; drill/ollama_pod.py runs its Ollama Deployment: the init script, the
server, the startup and readiness probes' commands, in the pod's own network namespace, with the
models claim a directory kept across pods. drill/ollama_cli.py stands in for /bin/ollama v0.12.6
(a pull asks the registry for the manifest first, even with the model present, as
server/images.go does), and a registry stand-in inside the pod's namespace serves
registry.ollama.ai until the test stops it: then it refuses, as it does during an outage.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from components.ollama import LIST_SECONDS
from core.chain import failover_chain
from core.declarations import ConfigError
from core.ollama_model import served_model, threads_for_cpu_limit
from core.settings import parse_settings
from drill.ollama_pod import OllamaPod, publish, usable
from pulumi_harness import DEPLOYMENT, run_program

MODEL = "qwen2.5:3b"
SERVED = served_model(MODEL)
KEY = {"openaiApiKey": "sk-ollama-pod-test"}
# The init script and readiness command before issue 19 (commit 1e74dc2), for the negative controls.
OLD_PULL_SCRIPT = """\
ollama serve &
server=$!
tries=0
until ollama list >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -gt "$SERVER_START_SECONDS" ] && { echo "ollama did not start" >&2; exit 1; }
  sleep 1
done
timeout "$PULL_TIMEOUT_SECONDS" ollama pull "$OLLAMA_MODEL"
status=$?
kill "$server"
exit "$status"
"""
OLD_MODEL_RESIDENT = ["/bin/sh", "-c", 'ollama ps | grep -qF -- "$OLLAMA_MODEL"']

needs_sandbox = pytest.mark.skipif(not usable(), reason="needs root, bubblewrap, unshare, nsenter and ip")


def ollama_deployment(ollama: dict | None = None) -> dict:
    return run_program({"ollama": ollama or {}}, KEY).one(DEPLOYMENT, "ollama").inputs


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container["env"]}


@pytest.fixture
def place():
    """The registry's store and the models claims, outside /tmp (the pod's /tmp is an emptyDir)."""
    base = Path(tempfile.mkdtemp(prefix="llm-gateway-ollama-test-", dir="/var/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def claim(place: Path, name: str) -> Path:
    path = place / name
    path.mkdir()
    return path


def ready_pod(place: Path, pods, deployment: dict, parameters: dict | None = None) -> OllamaPod:
    """The model in the registry, a pod on a fresh claim: init, server, startup probe, ready."""
    publish(place / "store", MODEL, b"weights-1", parameters or {})
    pod = pods(deployment, claim(place, "models"))
    pod.start_registry(place / "store")
    assert pod.run_init().returncode == 0
    pod.start_main()
    pod.wait_started()
    assert pod.probe("readinessProbe")
    return pod


@pytest.fixture
def pods():
    started: list[OllamaPod] = []

    def make(deployment: dict, models: Path) -> OllamaPod:
        pod = OllamaPod(deployment, models).start()
        started.append(pod)
        return pod

    yield make
    for pod in started:
        pod.stop()


# Item 7: a restart needs no network, and a model can be pinned ----------------------------------


@needs_sandbox
def test_a_restart_with_the_model_on_its_volume_needs_no_registry(place, pods):
    deployment, models = ollama_deployment(), claim(place, "models")
    publish(place / "store", MODEL, b"weights-1", {"stop": ["<|im_end|>"]})
    first = pods(deployment, models)
    first.start_registry(place / "store")
    assert first.run_init().returncode == 0
    first.stop()

    restarted = pods(deployment, models)  # a new pod on the same claim; no registry: it refuses
    init = restarted.run_init()
    assert init.returncode == 0, init.stderr
    assert f"{MODEL} is on the volume: no pull" in init.stdout
    restarted.start_main()
    restarted.wait_started()
    assert restarted.probe("readinessProbe")

    # The control: the script before the fix, on the same volume, fails offline (the stand-in's pull,
    # like server/images.go, asks the registry for the manifest although the model is there).
    old_init = {**deployment["spec"]["template"]["spec"]["initContainers"][0]}
    old_init["command"] = ["/bin/sh", "-c", OLD_PULL_SCRIPT]
    old = json.loads(json.dumps(deployment))
    old["spec"]["template"]["spec"]["initContainers"] = [old_init]
    restarted.stop()
    offline_old = pods(old, models).run_init()
    assert offline_old.returncode != 0 and "pull model manifest" in offline_old.stderr


@needs_sandbox
def test_a_pinned_model_is_kept_and_a_moved_tag_is_refused(place, pods):
    store = place / "store"
    pinned = publish(store, MODEL, b"weights-1", {})
    deployment = ollama_deployment({"modelDigest": pinned})
    models = claim(place, "models")
    pod = pods(deployment, models)
    pod.start_registry(store)
    first = pod.run_init()
    assert first.returncode == 0, first.stderr
    assert f"{MODEL} {pinned}" in first.stdout  # what the README tells operators to copy
    pod.stop()

    moved = publish(store, MODEL, b"weights-2", {})  # the tag now names other weights
    fresh = pods(deployment, claim(place, "fresh-models"))  # a new volume pulls the moved tag
    fresh.start_registry(store)
    refused = fresh.run_init()
    assert refused.returncode != 0
    assert f"{moved}, not {pinned} as llm-gateway:ollama.modelDigest pins" in refused.stderr
    assert f"set ollama.modelDigest to {moved}" in refused.stderr

    # The operator checks the new model and moves the pin: the old volume gets it from the registry.
    repinned = pods(ollama_deployment({"modelDigest": moved}), models)
    repinned.start_registry(store)
    updated = repinned.run_init()
    assert updated.returncode == 0, updated.stderr
    assert f"{MODEL} {moved}" in updated.stdout


def test_a_model_cannot_be_named_by_digest_and_the_pin_is_checked():
    with pytest.raises(ConfigError) as by_digest:
        parse_settings({"ollama": {"model": "qwen2.5:3b@sha256:" + "a" * 64}}, openai_key="secret")
    assert str(by_digest.value).startswith("llm-gateway:ollama.model ")
    assert "ollama.modelDigest" in str(by_digest.value)
    with pytest.raises(ConfigError) as short:
        parse_settings({"ollama": {"modelDigest": "2249da2f0f86"}}, openai_key="secret")
    assert str(short.value).startswith("llm-gateway:ollama.modelDigest ")


# Item 8: a model that left memory is loaded back ---------------------------------------------


@needs_sandbox
def test_the_cpu_tier_loads_back_a_model_that_left_memory(place, pods):
    deployment = ollama_deployment()
    pod = ready_pod(place, pods, deployment)

    # A client's request with keep_alive 0 (LiteLLM passes it on: see the next test): answered, then
    # the runner is unloaded (server/sched.go: a zero session duration expires it once idle).
    assert pod.exec(["ollama", "run", SERVED, "hello", "--keepalive", "0"]).returncode == 0
    assert SERVED not in pod.exec(["ollama", "ps"]).stdout
    assert pod.exec(OLD_MODEL_RESIDENT).returncode != 0  # the control: the old probe stays NotReady for good

    started = time.monotonic()
    assert pod.probe("readinessProbe")  # the rendered probe loads it back and passes
    reloaded_after = time.monotonic() - started
    assert SERVED in pod.exec(["ollama", "ps"]).stdout
    assert reloaded_after < pod.container["readinessProbe"]["timeoutSeconds"]
    print(f"readiness restored in {reloaded_after:.1f} s (a stand-in load takes {pod.load_seconds} s)")


@needs_sandbox
def test_a_frozen_server_is_not_ready_within_seconds_not_after_a_load_budget(place, pods):
    """The reload gives readiness a long timeout; a server that no longer answers must still leave
    the Service's endpoints as fast as before (a few seconds), or the gateway keeps sending to it."""
    pod = ready_pod(place, pods, ollama_deployment())

    os.killpg(pod.main.pid, signal.SIGSTOP)  # the server and its sandbox freeze, as a hung process
    try:
        started = time.monotonic()
        assert not pod.probe("readinessProbe")
        failed_after = time.monotonic() - started
    finally:
        os.killpg(pod.main.pid, signal.SIGCONT)
    assert failed_after < LIST_SECONDS + 2, failed_after  # 2 s for the sandbox around the command
    print(f"frozen server: readiness failed after {failed_after:.1f} s")


def test_litellm_passes_a_clients_keep_alive_and_runner_options_on_to_ollama():
    """Why the pod cannot rely on clients: LiteLLM 1.108.7 forwards `keep_alive` as Ollama's own
    field and `num_thread` into `options` (llms/ollama/chat/transformation.py transform_request)."""
    import litellm
    from aiohttp import web

    seen: list[dict] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(await request.json())
        message = {"role": "assistant", "content": "hi"}
        return web.json_response({"model": SERVED, "done": True, "message": message, "done_reason": "stop"})

    async def call() -> None:
        app = web.Application()
        app.router.add_post("/api/chat", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            await litellm.acompletion(
                model=f"ollama_chat/{SERVED}",
                api_base=f"http://127.0.0.1:{port}",
                messages=[{"role": "user", "content": "x"}],
                keep_alive=0,
                num_thread=64,
            )
        finally:
            await runner.cleanup()

    asyncio.run(call())
    assert seen[0]["keep_alive"] == 0 and seen[0]["options"]["num_thread"] == 64


# Item 10: Ollama's threads follow its CPU limit -------------------------------------------------


@pytest.mark.parametrize(("limit", "threads"), [("4", 4), ("3500m", 3), ("500m", 1), ("1999m", 1), ("2.5", 2)])
def test_the_thread_count_is_the_cpu_limit_rounded_down(limit, threads):
    assert threads_for_cpu_limit(limit) == threads
    deployment = ollama_deployment({"resources": {"limits": {"cpu": limit, "memory": "8Gi"}}})
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(init)["MODEL_THREADS"] == str(threads)
    assert "PARAMETER num_thread %s" in init["command"][2] and '"$MODEL_THREADS"' in init["command"][2]


def test_the_gateway_the_warm_up_and_readiness_call_the_derived_model():
    pod_spec = ollama_deployment()["spec"]["template"]["spec"]
    main = pod_spec["containers"][0]
    assert env_of(main)["SERVED_MODEL"] == env_of(pod_spec["initContainers"][0])["SERVED_MODEL"] == SERVED
    assert '"$SERVED_MODEL"' in main["startupProbe"]["exec"]["command"][2]
    assert '"$SERVED_MODEL"' in main["readinessProbe"]["exec"]["command"][2]
    ollama = next(tier for tier in failover_chain(parse_settings({}, openai_key="secret")) if tier.name == "ollama")
    assert ollama.litellm_params["model"] == f"ollama_chat/{SERVED}"


@needs_sandbox
def test_warm_up_readiness_and_a_gateway_request_share_one_runner_with_the_limits_threads(place, pods):
    threads = (os.cpu_count() or 1) + 1  # not what the runner would take by itself (one per host core)
    deployment = ollama_deployment({"resources": {"limits": {"cpu": f"{threads}500m", "memory": "8Gi"}}})
    pod = ready_pod(place, pods, deployment, {"stop": ["<|im_end|>"]})
    # The request LiteLLM sends for a client's plain chat (its own transformation, no options set).
    from litellm.llms.ollama.chat.transformation import OllamaChatConfig

    body = OllamaChatConfig().transform_request(SERVED, [{"role": "user", "content": "hi"}], {}, {}, {})
    post = (
        "import json, sys, urllib.request; "
        "request = urllib.request.Request('http://127.0.0.1:11434/api/chat', sys.argv[1].encode()); "
        "print(json.load(urllib.request.urlopen(request))['message']['content'])"
    )
    answer = pod.exec(["python3", "-c", post, json.dumps(body)])
    assert answer.returncode == 0 and "[ollama]" in answer.stdout, answer.stderr
    loads = [line for line in pod.log().splitlines() if "runner loaded" in line]
    assert loads == [loads[0]] and loads[0].endswith(f'model={SERVED} threads={threads}"'), pod.log()

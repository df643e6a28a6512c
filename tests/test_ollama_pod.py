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
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from components.ollama import IMAGE_PULL_SECONDS, LIST_SECONDS, LOAD_SECONDS, SERVER_START_SECONDS
from core import kube
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


# One Ollama pod serves every CPU model, each pulled, warm and resident ------------------------------

SMALL, MID, EMBEDDER = "qwen2.5:0.5b", "qwen2.5:1.5b", "bge-m3:567m"
SEVERAL = {
    "ollama": {"resources": {"requests": {"cpu": "2", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "20Gi"}}},
    "chains": [
        {"name": "small", "tiers": [{"ollama": {"model": SMALL}}]},
        {"name": "mid", "tiers": [{"ollama": {"model": MID}}]},
        {
            "name": "embed",
            "kind": "embeddings",
            "tiers": [
                {
                    "ollama": {"model": EMBEDDER, "modelMemory": "1200Mi", "memoryPerContextToken": 20000},
                    "embedding": {"model": "BAAI/bge-m3", "dimensions": 1024},
                }
            ],
        },
    ],
}
# Four models: one more than Ollama keeps loaded by default on a CPU (server/sched.go).
EVERY_MODEL = (MODEL, SMALL, MID, EMBEDDER)
CHAT_SERVED = tuple(served_model(model) for model in (MODEL, SMALL, MID))
EMBED_SERVED = served_model(EMBEDDER)
EMBED_OK = re.compile(r'\| 200 \|.*POST +"/api/embed"')
REFUSED_GENERATE = re.compile(r'\| 400 \|.*POST +"/api/generate"')


@pytest.fixture(scope="module")
def several_deployment() -> dict:
    return run_program(SEVERAL, KEY).one(DEPLOYMENT, "ollama").inputs


def publish_every_model(store: Path) -> None:
    for model in EVERY_MODEL:
        publish(store, model, f"weights-of-{model}".encode(), {}, embedding=model == EMBEDDER)


def started_pod(place: Path, pods, deployment: dict) -> OllamaPod:
    """Every model in the registry, a pod on a fresh claim: every init container, the server, the
    startup probe passed (readiness not yet probed)."""
    publish_every_model(place / "store")
    pod = pods(deployment, claim(place, "models"))
    pod.start_registry(place / "store")
    for index in range(len(pod.spec["initContainers"])):
        init = pod.run_init(index)
        assert init.returncode == 0, init.stderr
    pod.start_main()
    pod.wait_started()
    return pod


def resident_models(pod: OllamaPod) -> set[str]:
    listed = pod.exec(["ollama", "ps"])
    assert listed.returncode == 0, listed.stderr
    return {line.split(" ")[0] for line in listed.stdout.splitlines()[1:] if line.strip()}


def runner_loads(pod: OllamaPod) -> list[str]:
    return [line.split("model=")[1].split(" ")[0] for line in pod.log().splitlines() if "runner loaded" in line]


def test_a_pod_with_several_models_lists_them_by_kind_and_budgets_a_load_each(several_deployment):
    main = several_deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(main)
    assert env["CHAT_MODELS"].split() == list(CHAT_SERVED)
    assert env["EMBEDDING_MODELS"].split() == [EMBED_SERVED]
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "4"
    for probe in ("startupProbe", "readinessProbe"):
        assert main[probe]["exec"]["command"][0] == "/bin/bash"  # the image's bash: /dev/tcp for /api/embed
        assert main[probe]["timeoutSeconds"] == 4 * LOAD_SECONDS
    pod_spec = several_deployment["spec"]["template"]["spec"]
    init_seconds = (SERVER_START_SECONDS + 1800) * 4  # ollama.pullTimeoutSeconds' default, per model
    expected = kube.rollout_seconds(pod_spec, IMAGE_PULL_SECONDS, init_seconds)
    assert several_deployment["metadata"]["annotations"][kube.AWAIT_ANNOTATION] == str(expected)

    one = ollama_deployment()["spec"]["template"]["spec"]["containers"][0]  # a one-model pod: as before
    assert not {"CHAT_MODELS", "EMBEDDING_MODELS", "OLLAMA_MAX_LOADED_MODELS"} & set(env_of(one))
    assert one["startupProbe"]["exec"]["command"][0] == one["readinessProbe"]["exec"]["command"][0] == "/bin/sh"


@needs_sandbox
def test_every_model_is_pulled_once_and_a_restart_needs_no_registry(place, pods, several_deployment):
    publish_every_model(place / "store")
    models = claim(place, "models")
    first = pods(several_deployment, models)
    first.start_registry(place / "store")
    pulled = []
    for index, container in enumerate(first.spec["initContainers"]):
        init = first.run_init(index)
        assert init.returncode == 0, init.stderr
        assert init.stderr.count("pulling manifest") == 1, init.stderr  # one pull per init container
        pulled.append(env_of(container)["OLLAMA_MODEL"])
        assert f"{pulled[-1]} sha256:" in init.stdout
    assert pulled == list(EVERY_MODEL)
    first.stop()

    restarted = pods(several_deployment, models)  # the same claim, no registry: it refuses
    for index, model in enumerate(EVERY_MODEL):
        init = restarted.run_init(index)
        assert init.returncode == 0, init.stderr
        assert f"{model} is on the volume: no pull" in init.stdout


@needs_sandbox
def test_every_model_is_warm_before_the_pod_is_ready_the_embedding_model_through_embed(place, pods, several_deployment):
    pod = started_pod(place, pods, several_deployment)
    # The startup probe alone has loaded all four, each once; no readiness probe has run yet.
    assert resident_models(pod) == {*CHAT_SERVED, EMBED_SERVED}
    assert sorted(runner_loads(pod)) == sorted([*CHAT_SERVED, EMBED_SERVED]), pod.log()
    log = pod.log()
    assert EMBED_OK.search(log) and not REFUSED_GENERATE.search(log), log  # never `ollama run` on bge-m3

    assert pod.probe("readinessProbe")
    # The request LiteLLM sends for a client's embeddings (its own payload, no options) finds the
    # runner the warm-up loaded: nothing is loaded again.
    from litellm.llms.ollama.completion.handler import _prepare_ollama_embedding_payload

    body = _prepare_ollama_embedding_payload(EMBED_SERVED, ["hello"], {})
    post = (
        "import json, sys, urllib.request; "
        "request = urllib.request.Request('http://127.0.0.1:11434/api/embed', sys.argv[1].encode()); "
        "print(len(json.load(urllib.request.urlopen(request))['embeddings']))"
    )
    answer = pod.exec(["python3", "-c", post, json.dumps(body)])
    assert answer.returncode == 0 and answer.stdout.strip() == "1", answer.stderr
    assert len(runner_loads(pod)) == 4, pod.log()


@needs_sandbox
def test_readiness_loads_back_each_model_that_left_memory_its_own_way(place, pods, several_deployment):
    pod = started_pod(place, pods, several_deployment)
    assert pod.probe("readinessProbe")
    for served in (EMBED_SERVED, served_model(SMALL)):  # `ollama stop`, or a client's keep_alive 0
        assert pod.exec(["ollama", "stop", served]).returncode == 0
    assert resident_models(pod) == {served_model(MODEL), served_model(MID)}

    # The control: the one-model pod's way (`ollama run` with no prompt) does not load an embedding
    # model. Ollama 0.12.6 refuses it before loading ("does not support generate").
    refused = pod.exec(["/bin/sh", "-c", 'ollama run "$0" </dev/null', EMBED_SERVED])
    assert refused.returncode != 0 and f'"{EMBED_SERVED}" does not support generate' in refused.stderr
    assert EMBED_SERVED not in resident_models(pod)
    embeds_before = len(EMBED_OK.findall(pod.log()))

    assert pod.probe("readinessProbe")  # the rendered probe loads both back, then passes
    assert resident_models(pod) == {*CHAT_SERVED, EMBED_SERVED}
    assert sorted(runner_loads(pod)[4:]) == sorted([served_model(SMALL), EMBED_SERVED])  # those two, once each
    assert len(EMBED_OK.findall(pod.log())) == embeds_before + 1


@needs_sandbox
def test_without_the_loaded_models_limit_a_fourth_model_unloads_another(place, pods, several_deployment):
    """The control for OLLAMA_MAX_LOADED_MODELS: Ollama's default keeps 3 models loaded on a CPU, so
    warming the fourth unloads one; the startup probe says which instead of passing."""
    unlimited = json.loads(json.dumps(several_deployment))
    main = unlimited["spec"]["template"]["spec"]["containers"][0]
    main["env"] = [item for item in main["env"] if item["name"] != "OLLAMA_MAX_LOADED_MODELS"]
    publish_every_model(place / "store")
    pod = pods(unlimited, claim(place, "models"))
    pod.start_registry(place / "store")
    for index in range(len(EVERY_MODEL)):
        assert pod.run_init(index).returncode == 0
    pod.start_main()
    for _ in range(100):
        if pod.exec(["ollama", "list"]).returncode == 0:
            break
        time.sleep(0.1)
    warm_up = pod.exec(main["startupProbe"]["exec"]["command"])
    assert warm_up.returncode != 0 and "is not resident" in warm_up.stderr
    assert len(resident_models(pod)) == 3
    assert not pod.probe("readinessProbe")  # loading one back unloads another: never ready

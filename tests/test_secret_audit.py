"""Secret audit: canary keys go in; they may come out only inside Kubernetes Secrets' values and
secret stack outputs. Searched: every resource input, labels, annotations, the rendered LiteLLM
config, exports, log lines, error messages, and — through the real proxy — the demo's printed
output, response bodies and headers, and the proxy's own log."""

import json
import logging

import pytest

from core.stack_files import stack_settings
from drill import demo
from drill.client import chat
from drill.runner import Drill
from pulumi_harness import MASTER_KEY_CANARY, SECRET, run_program, run_program_expecting_error

OPENAI_CANARY = "sk-CANARYopenai7c1e9f04b2d6a8"
REDIS_URL_CANARY = "redis://:CANARYredis5e0d7b@redis.example.internal:6379/0"
CANARIES = (OPENAI_CANARY, MASTER_KEY_CANARY, REDIS_URL_CANARY)


def leaks(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


@pytest.mark.parametrize(
    ("config", "redis_secret"),
    [
        ({}, {}),
        ({"redis": {"mode": "deploy"}}, {}),  # its password is a RandomPassword: the mock's canary
        ({"redis": {"mode": "external"}}, {"redisUrl": REDIS_URL_CANARY}),
    ],
    ids=["no-redis", "redis-deployed", "redis-external"],
)
def test_canaries_only_in_secret_values_and_secret_outputs(capsys, caplog, config, redis_secret):
    caplog.set_level(logging.DEBUG)
    run = run_program(config, {"openaiApiKey": OPENAI_CANARY, **redis_secret})
    for resource in run.resources:
        inputs = dict(resource.inputs)
        if resource.type == SECRET:
            assert resource.secret_paths == ["stringData"], resource.name
            inputs.pop("stringData")
        assert leaks(json.dumps(inputs)) == [], f"{resource.type} {resource.name}"
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            assert leaks(json.dumps(value)) == [], name
    assert run.secret_outputs == {"masterKey"}
    found = [r for r in run.resources if r.type == SECRET and OPENAI_CANARY in json.dumps(r.inputs)]
    assert [r.name for r in found] == ["litellm-openai-key"]  # it did go somewhere
    captured = capsys.readouterr()
    assert leaks(captured.out + captured.err + caplog.text) == []


@pytest.mark.parametrize(
    ("config", "secrets"),
    [
        ({"openaiApiKey": OPENAI_CANARY}, {}),  # set without --secret: refused, value not shown
        ({"vllm": {"replicaz": 2}}, {"openaiApiKey": OPENAI_CANARY}),
        ({}, {"openaiApiKey": "sk-other", "openaiApikey": OPENAI_CANARY}),  # a typo'd key, set with --secret
        ({"gamingMode": "maybe"}, {"openaiApiKey": OPENAI_CANARY}),
    ],
)
def test_error_messages_never_carry_the_key(config, secrets):
    error, registered = run_program_expecting_error(config, secrets)
    assert registered == []
    assert str(error).startswith("llm-gateway:")
    assert OPENAI_CANARY not in str(error)


@pytest.mark.drill
def test_the_running_gateway_never_shows_the_keys(capsys):
    drill = Drill(stack_settings("dev"), master_key=f"sk-{MASTER_KEY_CANARY}", openai_key=OPENAI_CANARY)
    with drill:
        for title, modes in demo.STEPS[:3]:
            demo.run_step(drill, title, modes)
        for tier in ("vllm", "ollama"):
            drill.standins[tier].set_mode("down")
        drill.standins["openai"].set_mode("error", status=401)
        failed = chat(drill.url, "chat", api_key=drill.master_key)
        streamed = chat(drill.url, "chat", stream=True, api_key=drill.master_key)
        wrong_key = chat(drill.url, "chat", api_key="sk-not-the-key")
        proxy_log = drill.log_path.read_text(errors="replace")
    printed = capsys.readouterr().out
    assert "request 3" in printed  # the demo really ran
    assert failed.status == 503
    for answer in (failed, streamed, wrong_key):
        assert leaks(json.dumps(answer.body) + json.dumps(answer.headers)) == []
    assert leaks(printed) == []
    assert leaks(proxy_log) == []
    config = (drill.workdir / "config.yaml").read_text()
    assert leaks(config) == [] and "os.environ/OPENAI_API_KEY" in config


OPERATOR_KEY_CANARY = "sk-CANARYoperator3f9a1c5e7d20b4"  # the old gateway's key, brought by the operator


def test_an_operators_own_master_key_stays_secret_and_replaces_the_generated_one(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    run = run_program({}, {"openaiApiKey": OPENAI_CANARY, "masterKey": OPERATOR_KEY_CANARY})
    holders = [r for r in run.resources if OPERATOR_KEY_CANARY in json.dumps(r.inputs)]
    assert [(r.type, r.name) for r in holders] == [(SECRET, "litellm-master-key")]
    assert holders[0].secret_paths == ["stringData"]
    assert not [
        r for r in run.resources if r.type == "random:index/randomPassword:RandomPassword" and "master" in r.name
    ]
    assert run.outputs["masterKey"] == OPERATOR_KEY_CANARY and "masterKey" in run.secret_outputs
    captured = capsys.readouterr()
    assert OPERATOR_KEY_CANARY not in captured.out + captured.err + caplog.text


def test_an_operators_master_key_in_plain_text_is_refused_without_showing_it():
    error, registered = run_program_expecting_error({"masterKey": OPERATOR_KEY_CANARY}, {"openaiApiKey": OPENAI_CANARY})
    assert registered == []
    assert str(error).startswith("llm-gateway:masterKey") and "--secret" in str(error)
    assert OPERATOR_KEY_CANARY not in str(error)

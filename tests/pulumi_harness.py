"""Runs __main__.py under Pulumi's own mocks and returns every registration, normalised.

No CLI, no provider binary, no cluster. Mock quirks handled once, here:
- numbers cross the mock boundary as floats → whole floats become ints;
- secrets arrive wrapped in the SDK's signature dict → unwrapped, and the path is recorded;
- `new_resource` is called from several threads → a lock, and rows sorted by (type, name);
- `set_mocks` reuses an existing root stack → the root is reset and each run gets a fresh loop;
- `new_resource` sees inputs only → the monitor keeps the options that reach the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor

from core.names import PROJECT
from core.stack_files import ROOT, stack_config, stack_files

MAIN = ROOT / "__main__.py"
# The SDK wraps a secret as {SIGNATURE_KEY: SECRET_SIGNATURE, "value": ...} (pulumi/runtime/rpc.py).
SIGNATURE_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"
# The type tokens the tests look registrations up by.
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"
MASTER_KEY_CANARY = "MASTERCANARY0123456789abcdefghijklmnopqrstuvwxyzAB"  # 48 chars, like the real one


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    secret_paths: list[str] = field(default_factory=list)
    provider: str | None = None  # "urn::id" of the provider the resource was registered with
    ignore_changes: list[str] = field(default_factory=list)  # resource options, as the engine gets them
    create_timeout: str = ""
    parent: str = ""  # URN of the parent resource (a component, or the stack)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.inputs


@dataclass
class ProgramRun:
    resources: list[Registration]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str) -> Registration:
        """The object called `name`: its metadata.name, or for an auto-named one its logical name."""
        found = [
            r
            for r in self.resources
            if r.type == type_token and (r.inputs.get("metadata", {}).get("name") or r.name) == name
        ]
        assert len(found) == 1, f"expected one {type_token} named {name}, found {len(found)}"
        return found[0]

    @property
    def kubernetes(self) -> list[Registration]:
        """The objects the program creates; a patch (`…Patch`) changes one of them, it is none."""
        return [r for r in self.resources if r.type.startswith("kubernetes:") and not r.type.endswith("Patch")]


def normalise(value: Any, path: str, secret_paths: list[str]) -> Any:
    if isinstance(value, dict):
        if value.get(SIGNATURE_KEY) == SECRET_SIGNATURE:
            secret_paths.append(path)
            return normalise(value.get("value"), path, secret_paths)
        return {k: normalise(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def auto_name(logical_name: str) -> str:
    """What the mock calls an auto-named object (deterministic, like a stored Pulumi state)."""
    return f"{logical_name}-{hashlib.sha256(logical_name.encode()).hexdigest()[:8]}"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[Registration] = []
        self.options: dict[tuple[str, str], tuple[list[str], str, str]] = {}  # filled by OptionsMonitor

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        secret_paths: list[str] = []
        inputs = normalise(args.inputs, "", secret_paths)
        with self.lock:
            ignore_changes, create_timeout, parent = self.options.get((args.typ, args.name), ([], "", ""))
            row = Registration(
                args.typ, args.name, inputs, secret_paths, args.provider, ignore_changes, create_timeout, parent
            )
            self.rows.append(row)
        state = dict(args.inputs)
        metadata = state.get("metadata")
        if args.typ.startswith("kubernetes:") and isinstance(metadata, dict) and not metadata.get("name"):
            # Pulumi auto-names an object without metadata.name: `<logical name>-<random suffix>`.
            state["metadata"] = {**metadata, "name": auto_name(args.name)}
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = MASTER_KEY_CANARY
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


class OptionsMonitor(MockMonitor):
    """The SDK's mock monitor, keeping the resource options each registration carries to the engine
    (the mocks' `new_resource`, which it then calls, is given inputs only)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request):
        with self.recording.lock:
            self.recording.options[(request.type, request.name)] = (
                list(request.ignoreChanges),
                request.customTimeouts.create,
                request.parent,
            )
        return super().RegisterResource(request)


def pulumi_config_strings(values: dict[str, Any]) -> dict[str, str]:
    """Bare keys → the `llm-gateway:key` strings Pulumi hands a program (objects as JSON)."""
    rendered = {}
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value)
        else:
            text = str(value)
        rendered[f"{PROJECT}:{key}"] = text
    return rendered


def _fresh_runtime(config: dict[str, Any], secrets: dict[str, str], stack: str) -> RecordingMocks:
    runtime_settings.ROOT.set(None)
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_all_config(
        pulumi_config_strings({**config, **secrets}), secret_keys=[f"{PROJECT}:{key}" for key in secrets]
    )
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=OptionsMonitor(mocks))
    return mocks


def run_program(config: dict[str, Any], secrets: dict[str, str] | None = None, stack: str = "dev") -> ProgramRun:
    """Run __main__.py once. `secrets` are stack keys set with `--secret` (bare names)."""
    mocks = _fresh_runtime(config, secrets or {}, stack)
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(MAIN), run_name="__main__")
        exported = runtime_settings.get_root_resource().outputs

        async def resolve():
            for name, output in exported.items():
                out = pulumi.Output.from_input(output)
                outputs[name] = await out.future()
                if await out.is_secret():
                    secret_outputs.add(name)

        return pulumi.Output.from_input(resolve())

    program()
    rows = sorted(mocks.rows, key=lambda r: (r.type, r.name))
    return ProgramRun(rows, outputs, secret_outputs)


def run_program_expecting_error(config: dict[str, Any], secrets: dict[str, str] | None = None):
    """Run a config that must fail. Returns (error, registrations made before it)."""
    error, rows = try_program(config, secrets)
    assert error is not None, "the program accepted a config it should have rejected"
    return error, rows


def try_program(config: dict[str, Any], secrets: dict[str, str] | None = None):
    """Run any config: (the program's clean error or None, registrations). Any other exception
    propagates — for a Pulumi program that is a raw traceback in front of the user."""
    mocks = _fresh_runtime(config, secrets or {}, "dev")
    errors: list[pulumi.RunError] = []

    @pulumi.runtime.test
    def program():
        try:
            runpy.run_path(str(MAIN), run_name="__main__")
        except pulumi.RunError as error:
            errors.append(error)

    program()  # also lets the runtime finish what set_mocks started
    return (errors[0] if errors else None), list(mocks.rows)


__all__ = ["ROOT", "stack_files"]


def stack_config_of(path: Path) -> dict[str, Any]:
    """A stack file's `config:` with bare keys (mocks do not read stack files: tests feed them)."""
    return stack_config(path.name.split(".")[1])

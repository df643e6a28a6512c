"""Golden records of what today's stacks register: the proof that an upgrade replaces nothing.

    .venv/bin/python -m tests.golden_stacks --check   # rerun every golden config, list what differs
    .venv/bin/python -m tests.golden_stacks --write   # write a missing tests/golden/<config>.json

For each config below, __main__.py runs under the tests' mocks (tests/pulumi_harness.py) and every
registration is written down: its URN as the engine forms it, the resource options that can replace
it or change what the engine does with it, and its inputs. tests/test_no_replacement.py reruns the
recorded config (the file keeps the config, so a later edit of Pulumi.<stack>.yaml does not move the
proof) and demands the same URNs and the same bytes, apart from its reviewed allowlist.

`--write` writes the file of a config added here and leaves a changed one alone; `--force`
overwrites, legitimate only after a change released on purpose as a replacing (breaking) one. Never
to make tests/test_no_replacement.py pass for an existing stack's resource: an in-place difference
goes in that test's allowlist with its reason.

What a golden file holds, and what it leaves out:
- secret values never: each secret leaf is `[secret sha256:<12 hex>]`, the fingerprint of a value
  made from the fixed canaries below (a changed `redis.conf` inside a Secret still shows, and a
  Secret's data is replace-triggering). Secret stack outputs are listed by name only;
- strings over 8 KiB (the larger gateway plugins shipped in the ConfigMap) as `sha256:<hex>, <n>
  bytes`: byte-exact without copying the code into every file; their text is in git (gateway/);
- options not kept: `dependencies` (the engine orders by them, it never diffs or replaces on them)
  and the plugin `version` (a dependency bump is not this refactor's business: requirements-lock).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from google.protobuf.json_format import MessageToDict

from tests import pulumi_harness

GOLDEN = Path(__file__).resolve().parent / "golden"
SECRET_MARK = "[secret]"  # a secret stack output (secret inputs: `[secret sha256:<12 hex>]`)
LONG_TEXT = 8 * 1024

# Stack secrets, set with `--secret`: fixed canaries, so fingerprints are stable and no real-looking
# key is ever needed. A golden file or a rerun that contains any of them has leaked a secret.
CANARIES = {
    "openaiApiKey": "sk-GOLDENCANARY-openai-4e1d",
    "databaseUrl": "postgresql://goldencanary:GOLDENCANARY-db@db:5432/litellm",
    "redisUrl": "redis://:GOLDENCANARY-redis@redis.example.internal:6379/0",
    "masterKey": "sk-GOLDENCANARY-master-9b2f",
}
LEAK_MARKERS = ("GOLDENCANARY", pulumi_harness.MASTER_KEY_CANARY)


@dataclass(frozen=True)
class GoldenConfig:
    name: str
    stack: str
    exercises: str  # the optional objects and code paths this config is here for
    config: dict[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = ("openaiApiKey",)
    stack_file: bool = False  # start from Pulumi.<stack>.yaml, as read at --write time

    def resolved(self) -> dict[str, Any]:
        if not self.stack_file:
            return dict(self.config)
        return {**pulumi_harness.stack_config_of(pulumi_harness.ROOT / f"Pulumi.{self.stack}.yaml"), **self.config}


# Together they create every optional object. Literal on purpose (not imported from
# tests/created_resources.py EVERYTHING_ON): a change there must not move a recorded stack.
CONFIGS = (
    GoldenConfig(
        "stack-dev",
        "dev",
        "Pulumi.dev.yaml: vLLM at 0 replicas (patch vllm-replicas-0, skipAwait), 1 gateway (no PDB)",
        stack_file=True,
    ),
    GoldenConfig(
        "stack-prod",
        "prod",
        "Pulumi.prod.yaml: GPU, runtimeClass, tolerations, redis deploy (RedisStore), PDB",
        stack_file=True,
    ),
    GoldenConfig(
        "gaming-mode",
        "prod",
        "Pulumi.prod.yaml with gamingMode true: vllm-replicas-0 instead of vllm-replicas-1",
        config={"gamingMode": True},
        stack_file=True,
    ),
    GoldenConfig("defaults", "dev", "only the OpenAI key: the default objects, generated master key"),
    GoldenConfig(
        "everything-on",
        "dev",
        "HPA, ServiceMonitor, PrometheusRule, dashboard ConfigMap, nginx Ingress (TLS, annotations), "
        "redis deploy, databaseUrl Secret, storage classes, image digests",
        config={
            "gateway": {
                "serviceMonitor": True,
                "serviceMonitorLabels": {"release": "kube-prometheus-stack"},
                "autoscaling": {"enabled": True},
                "imageDigest": "sha256:" + "1" * 64,
            },
            "alerts": {"enabled": True, "dashboard": True, "ruleLabels": {"release": "kube-prometheus-stack"}},
            "ingress": {
                "enabled": True,
                "host": "llm.example.com",
                "className": "nginx",
                "tlsSecretName": "llm-example-tls",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            },
            "redis": {"mode": "deploy", "storageClassName": "fast"},
            "vllm": {"storageClassName": "fast", "imageDigest": "sha256:" + "2" * 64},
            "ollama": {"storageClassName": "fast", "modelDigest": "sha256:" + "3" * 64},
        },
        secrets=("openaiApiKey", "databaseUrl"),
    ),
    GoldenConfig(
        "traefik-external-redis",
        "dev",
        "Traefik IngressRoute + ServersTransport (TLS, entry points, annotations), redis external "
        "(redisUrl Secret), operator masterKey (no RandomPassword), dashboard without alerts",
        config={
            "ingress": {
                "enabled": True,
                "kind": "IngressRoute",
                "host": "llm.example.com",
                "tlsSecretName": "llm-example-tls",
                "entryPoints": ["websecure"],
                "annotations": {"example.com/owner": "platform"},
            },
            "redis": {"mode": "external"},
            "alerts": {"dashboard": True},
        },
        secrets=("openaiApiKey", "redisUrl", "masterKey"),
    ),
    GoldenConfig(
        "openai-off-existing-namespace",
        "dev",
        "openai.enabled false (two tiers, no key Secret), createNamespace false, networkPolicies "
        "false, PrometheusRule without dashboard",
        config={
            "namespace": "ml",
            "createNamespace": False,
            "networkPolicies": False,
            "openai": {"enabled": False},
            "alerts": {"enabled": True},
            "gateway": {"replicas": 3},
        },
        secrets=(),
    ),
    GoldenConfig(
        "render-yaml",
        "dev",
        "renderYamlToDirectory: the provider's input, no DeploymentPatch (no live cluster)",
        config={"renderYamlToDirectory": "rendered"},
    ),
)


# --- recording ---------------------------------------------------------------------------------


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _masked(value: Any) -> Any:
    """A secret value with every leaf replaced by its fingerprint; keys (env var names) stay."""
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return f"[secret sha256:{_fingerprint(value)}]"


def _mask_path(value: Any, path: str) -> Any:
    """Mask the value at a harness secret path (`a.b[0].c`). Keys may hold dots (`config.yaml`), so
    the path is matched against the keys actually present, not split blindly."""
    if path == "":
        return _masked(value)
    if path.startswith("[") and isinstance(value, list):
        index, rest = path[1:].split("]", 1)
        position = int(index)
        return [_mask_path(item, rest.removeprefix(".")) if i == position else item for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in sorted(value, key=len, reverse=True):
            if path == key or path.startswith((key + ".", key + "[")):
                rest = path[len(key) :].removeprefix(".")
                return {**value, key: _mask_path(value[key], rest)}
    raise AssertionError(f"secret path {path!r} not found in the inputs")


def _shortened(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, str) and len(value.encode()) > LONG_TEXT:
        data = value.encode()
        return f"sha256:{hashlib.sha256(data).hexdigest()}, {len(data)} bytes"
    return value


def _mock_urn(row: pulumi_harness.Registration) -> str:
    """The URN the mock monitor gave a registration (pulumi/runtime/mocks.py make_urn): its parent's
    last type, `$`, its own type. Every row has a parent: the stack at least."""
    stack_part, project, parent_type = row.parent.split("::")[:3]
    return f"{stack_part}::{project}::{parent_type.split('$')[-1]}${row.type}::{row.name}"


def _real_urns(rows: list[pulumi_harness.Registration]) -> dict[str, str]:
    """Mock URN → the URN the engine forms. The mock keeps only the parent's last type (and
    prefixes the stack's); the engine chains every parent's type except the root stack's:
    pulumi/pulumi pkg/resource/deploy/deployment.go, generateURN."""
    by_mock: dict[str, pulumi_harness.Registration] = {}
    for row in rows:
        assert _mock_urn(row) not in by_mock, f"two registrations share the URN {_mock_urn(row)}"
        by_mock[_mock_urn(row)] = row

    def qualified_type(row: pulumi_harness.Registration) -> str:
        if row.parent in by_mock:
            return qualified_type(by_mock[row.parent]) + "$" + row.type
        assert row.parent.split("::")[2] == "pulumi:pulumi:Stack", f"{row.name}: unknown parent {row.parent}"
        return row.type

    return {
        urn: "::".join([*row.parent.split("::")[:2], qualified_type(row), row.name]) for urn, row in by_mock.items()
    }


def _options(request: Any, real: dict[str, str]) -> dict[str, Any]:
    """The options that can replace a resource or change what the engine does with it; only those
    set (a newly set one shows as an added key)."""

    def urn_of(reference: str) -> str:  # a provider reference is "<urn>::<id>"
        urn = reference.rsplit("::", 1)[0] if reference.count("::") > 3 else reference
        return real.get(urn, urn)

    options: dict[str, Any] = {}
    if request.custom:
        options["provider"] = urn_of(request.provider) if request.provider else "(default provider)"
    if request.providers:
        options["providers"] = {package: urn_of(ref) for package, ref in request.providers.items()}
    if request.ignoreChanges:
        options["ignoreChanges"] = list(request.ignoreChanges)
    timeouts = {kind: getattr(request.customTimeouts, kind) for kind in ("create", "update", "delete")}
    if any(timeouts.values()):
        options["customTimeouts"] = {kind: value for kind, value in timeouts.items() if value}
    if request.deleteBeforeReplaceDefined:
        options["deleteBeforeReplace"] = request.deleteBeforeReplace
    for name in ("replaceOnChanges", "additionalSecretOutputs", "aliasURNs"):
        if getattr(request, name):
            options[name] = list(getattr(request, name))
    if request.aliases:
        options["aliases"] = [MessageToDict(alias) for alias in request.aliases]
    for name in ("protect", "retainOnDelete", "importId"):
        if getattr(request, name):
            options[name] = getattr(request, name)
    if request.deletedWith:
        options["deletedWith"] = urn_of(request.deletedWith)
    if request.replace_with:
        options["replaceWith"] = [urn_of(urn) for urn in request.replace_with]
    if request.HasField("replacement_trigger"):
        options["replacementTrigger"] = MessageToDict(request.replacement_trigger)
    return options


def record(config: dict[str, Any], secrets: tuple[str, ...], stack: str) -> dict[str, Any]:
    """Run the program once; the golden document (JSON-ready: round-tripped, so it compares equal
    to a loaded file)."""
    requests: dict[tuple[str, str, str], Any] = {}

    class EveryOption(pulumi_harness.OptionsMonitor):
        """The harness' monitor, keeping the whole request (the harness keeps three options)."""

        def RegisterResource(self, request):
            requests[(request.type, request.name, request.parent)] = request
            return super().RegisterResource(request)

    with mock.patch.object(pulumi_harness, "OptionsMonitor", EveryOption):
        run = pulumi_harness.run_program(config, {key: CANARIES[key] for key in secrets}, stack=stack)
    real = _real_urns(run.resources)
    resources = {}
    for row in run.resources:
        inputs = row.inputs
        for path in row.secret_paths:
            inputs = _mask_path(inputs, path)
        resources[real[_mock_urn(row)]] = {
            "type": row.type,
            "options": _options(requests[(row.type, row.name, row.parent)], real),
            "inputs": _shortened(inputs),
        }
    outputs = {
        name: SECRET_MARK if name in run.secret_outputs else value for name, value in sorted(run.outputs.items())
    }
    document = {
        "stack": stack,
        "config": config,
        "secretConfig": sorted(secrets),
        "outputs": outputs,
        "secretOutputs": sorted(run.secret_outputs),
        "resources": resources,
    }
    return json.loads(render(document))


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def leaks(text: str) -> list[str]:
    return [marker for marker in LEAK_MARKERS if marker in text]


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    return json.loads(golden_path(name).read_text())


def rerun(golden: dict[str, Any]) -> dict[str, Any]:
    """The program run again on the config a golden file recorded."""
    return record(golden["config"], tuple(golden["secretConfig"]), golden["stack"])


# --- comparing ---------------------------------------------------------------------------------

ABSENT = "<absent>"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Difference:
    path: str  # e.g. inputs.metadata.labels["app.kubernetes.io/name"], inputs.spec.ports[0].port
    old: Any
    new: Any


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def differences(old: Any, new: Any, path: str = "") -> list[Difference]:
    """Every leaf that differs; a key or list element present on one side only is one difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(old.keys() | new.keys()):
            found += differences(old.get(key, ABSENT), new.get(key, ABSENT), join(path, key))
        return found
    if isinstance(old, list) and isinstance(new, list):
        found = []
        for index in range(max(len(old), len(new))):
            before = old[index] if index < len(old) else ABSENT
            after = new[index] if index < len(new) else ABSENT
            found += differences(before, after, join(path, index))
        return found
    same = type(old) is type(new) and old == new
    return [] if same else [Difference(path, old, new)]


def _shown(value: Any) -> str:
    text = value if value == ABSENT else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + f"… ({len(text)} chars)"


def describe(urn: str, found: list[Difference], limit: int = 20) -> str:
    """Readable lines: the path, then old and new (a multi-line text as a unified diff). Secret
    values are never here: both sides hold fingerprints only."""
    lines = [urn]
    for difference in found[:limit]:
        old, new = difference.old, difference.new
        if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
            changed = difflib.unified_diff(old.splitlines(), new.splitlines(), "old", "new", lineterm="", n=1)
            lines.append(f"  {difference.path}:")
            lines += [f"      {line}" for line in list(changed)[:40]]
        else:
            lines.append(f"  {difference.path}:\n      old: {_shown(old)}\n      new: {_shown(new)}")
    if len(found) > limit:
        lines.append(f"  … and {len(found) - limit} more")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def write(force: bool = False) -> int:
    """Write the golden file of every config; one that exists and would change only with `force`."""
    GOLDEN.mkdir(exist_ok=True)
    refused = []
    for config in CONFIGS:
        document = record(config.resolved(), config.secrets, config.stack)
        text = render(document)
        assert not leaks(text), f"{config.name}: a secret value reached the golden document"
        path = golden_path(config.name)
        if path.exists() and path.read_text() != text and not force:
            refused.append(config.name)
            continue
        path.write_text(text)
        print(f"{path.relative_to(pulumi_harness.ROOT)}: {len(document['resources'])} URNs")
    for name in refused:
        print(f"{name}: differs from its golden file, left as it is (see the docstring; --force overrides)")
    return 1 if refused else 0


def check() -> int:
    """Every difference, allowlisted or not: tests/test_no_replacement.py gives the verdict."""
    differing = 0
    for config in CONFIGS:
        golden = load(config.name)
        fresh = rerun(golden)
        for urn in sorted(golden["resources"].keys() ^ fresh["resources"].keys()):
            print(f"{config.name}: {'removed' if urn in golden['resources'] else 'added'} {urn}")
            differing += 1
        for urn in sorted(golden["resources"].keys() & fresh["resources"].keys()):
            found = differences(golden["resources"][urn], fresh["resources"][urn])
            if found:
                print(f"{config.name}: {describe(urn, found)}")
                differing += 1
        for found in differences(golden["outputs"], fresh["outputs"], "outputs"):
            print(f"{config.name}: {found.path}: {_shown(found.old)} → {_shown(found.new)}")
            differing += 1
    print("no differences" if not differing else f"{differing} differing resources or outputs")
    return 1 if differing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write tests/golden/*.json that are missing")
    action.add_argument("--check", action="store_true", help="rerun the recorded configs, list differences")
    parser.add_argument("--force", action="store_true", help="with --write: overwrite changed golden files too")
    arguments = parser.parse_args()
    return write(arguments.force) if arguments.write else check()


if __name__ == "__main__":
    sys.exit(main())

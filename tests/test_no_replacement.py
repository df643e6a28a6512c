"""Today's stacks keep working unchanged: the first `pulumi up` after an upgrade replaces nothing.

Each config of tests/golden_stacks.py is rerun under mocks and held against its golden file
(tests/golden/<config>.json): the same URNs, byte-identical inputs and options except the reviewed
ALLOWED_DIFFERENCES, and, with no allowlist at all, no difference in a field that makes the engine or
pulumi-kubernetes replace the object.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest

from tests import golden_stacks
from tests.golden_stacks import ABSENT, CONFIGS, Difference, describe, differences

# Differences an upgrade may bring to an existing stack's resource: (URN suffix, JSON path, why it
# is an in-place update that breaks no client). A path covers what lies under it. Starts empty;
# each entry is reviewed like code and must match a difference in some config (a stale one fails).
# Paths as the failures print them: 'inputs.data["new_plugin.py"]',
# 'inputs.spec.template.metadata.annotations["checksum/config"]', 'options.customTimeouts'.
# An entry never excuses a replacement: test_nothing_is_replaced has no allowlist.
ALLOWED_DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    (
        "pulumi:providers:kubernetes::kubernetes",
        "inputs.enableConfigMapMutable",
        "ConfigMaps are updated in place from now on (pulumi-kubernetes provider.go DiffConfig: not a "
        "provider replacement); before, any change of the gateway's code replaced its named ConfigMap, "
        "deleting it first",
    ),
    (
        "$kubernetes:core/v1:ConfigMap::litellm-config",
        "inputs.data",
        "the gateway's plugins ship in its ConfigMap (new code, the shared contract.py): with "
        "enableConfigMapMutable an in-place update; config.yaml itself is byte-identical",
    ),
    (
        "$kubernetes:apps/v1:Deployment::litellm-deployment",
        'inputs.spec.template.metadata.annotations["checksum/config"]',
        "follows the ConfigMap: the gateway pods roll onto the new code, one at a time (maxUnavailable 0)",
    ),
)

NAMES = [config.name for config in CONFIGS]


@functools.cache
def golden(name: str) -> dict[str, Any]:
    return golden_stacks.load(name)


@functools.cache
def fresh(name: str) -> dict[str, Any]:
    return golden_stacks.rerun(golden(name))


def _allowed(urn: str, path: str) -> bool:
    return any(urn.endswith(suffix) and _under(path, prefix) for suffix, prefix, _ in ALLOWED_DIFFERENCES)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def test_a_golden_file_per_config():
    on_disk = sorted(path.stem for path in golden_stacks.GOLDEN.glob("*.json"))
    assert on_disk == sorted(NAMES), "tests/golden/ and tests/golden_stacks.py CONFIGS differ"


@pytest.mark.parametrize("name", NAMES)
def test_same_urns(name):
    before, after = golden(name)["resources"].keys(), fresh(name)["resources"].keys()
    removed, added = sorted(before - after), sorted(after - before)
    assert not removed and not added, (
        f"{name}: the URN set changed (a removed URN is a delete, an added one a create; a renamed "
        "resource is both, unless it carries an alias)\n"
        + "".join(f"  removed: {urn}\n" for urn in removed)
        + "".join(f"  added:   {urn}\n" for urn in added)
    )


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_and_options(name):
    before, after = golden(name)["resources"], fresh(name)["resources"]
    reports = []
    for urn in sorted(before.keys() & after.keys()):
        if json.dumps(before[urn], sort_keys=True) == json.dumps(after[urn], sort_keys=True):
            continue  # byte-identical
        unexplained = [d for d in differences(before[urn], after[urn]) if not _allowed(urn, d.path)]
        if unexplained:
            reports.append(describe(urn, unexplained))
    assert not reports, (
        f"{name}: inputs or options differ from tests/golden/{name}.json. An in-place change goes in "
        "ALLOWED_DIFFERENCES with its reason; never regenerate the golden file for it.\n" + "\n".join(reports)
    )


@pytest.mark.parametrize("name", NAMES)
def test_same_outputs(name):
    found = differences(golden(name)["outputs"], fresh(name)["outputs"], "outputs")
    found += differences(golden(name)["secretOutputs"], fresh(name)["secretOutputs"], "secretOutputs")
    assert not found, f"{name}: stack outputs differ (clients read them)\n" + describe("outputs", found)


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_value_written(name):
    assert not golden_stacks.leaks(golden_stacks.golden_path(name).read_text()), f"{name}: golden file"
    assert not golden_stacks.leaks(golden_stacks.render(fresh(name))), f"{name}: a secret input is no longer secret"


def test_every_allowance_is_used():
    unused = []
    for suffix, prefix, reason in ALLOWED_DIFFERENCES:
        used = False
        for name in NAMES:
            before, after = golden(name)["resources"], fresh(name)["resources"]
            for urn in before.keys() & after.keys():
                if urn.endswith(suffix) and any(_under(d.path, prefix) for d in differences(before[urn], after[urn])):
                    used = True
        if not used:
            unused.append(f"  ({suffix!r}, {prefix!r}): {reason}")
    assert not unused, "allowlist entries that match no difference any more:\n" + "\n".join(unused)


# --- what replaces an object -----------------------------------------------------------------------
# pulumi-kubernetes (github.com/pulumi/pulumi-kubernetes, read at 94977969d, July 2026):
# - provider/pkg/provider/diff.go, `forceNew` and `forceNewProperties`: the fields below, plus
#   metadata.name and metadata.namespace of every object; a Secret's type/stringData/data unless the
#   provider sets enableSecretMutable (and the Secret is not `immutable`), a ConfigMap's
#   data/binaryData unless it sets enableConfigMapMutable (same condition);
# - provider/pkg/provider/provider.go, Diff: a `…Patch` resource replaces only on
#   metadata.name/namespace; a named object is replaced delete-before-replace (a moment without it);
# - provider/pkg/provider/provider.go, DiffConfig: the provider itself (and so everything it
#   manages) is replaced when clusterIdentifier, kubeconfig, context, cluster or
#   renderYamlToDirectory change.
# pulumi-random bridges terraform-provider-random: internal/provider/resource_password.go
# (passwordSchemaV3) marks every input RequiresReplace.
# The engine replaces a resource whose provider reference or replacementTrigger changes.
# Stricter than the provider, asked for on purpose: a Service's spec.type (its address and
# exposure) and a PersistentVolumeClaim's whole spec except resources.requests.storage (the API
# server rejects any other change to a bound claim, so `pulumi up` would fail instead).

_LABEL_SELECTOR = ("matchExpressions", "matchLabels")


def _selector(prefix: str) -> tuple[str, ...]:
    return (prefix, *(f"{prefix}.{field}" for field in _LABEL_SELECTOR))


_WORKLOAD = _selector("spec.selector")
_STATEFUL_SET = (
    *_WORKLOAD,
    "spec.podManagementPolicy",
    "spec.revisionHistoryLimit",
    "spec.serviceName",
    "spec.volumeClaimTemplates",
)
_JOB = (*_WORKLOAD, "spec.completions", "spec.parallelism", "spec.template")
_CORE = {
    "PersistentVolumeClaim": (
        "spec.accessModes",
        "spec.storageClassName",
        "spec.volumeName",
        *_selector("spec.selector"),
    ),
    "Secret": ("type",),
    "Service": ("spec.clusterIP",),
}
_APPS = {"DaemonSet": _WORKLOAD, "Deployment": _WORKLOAD, "StatefulSet": _STATEFUL_SET}
# (API group, version) → kind → replace-triggering fields: diff.go's `forceNew` table, less the
# kinds this program has never created (bare Pods, PersistentVolumes, ResourceQuotas, StorageClasses,
# RoleBindings): an object of a kind new to it is an added URN, which test_same_urns reports.
FORCE_NEW: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("apps", "v1beta1"): {"StatefulSet": _STATEFUL_SET},
    ("apps", "v1beta2"): _APPS,
    ("apps", "v1"): _APPS,
    ("", "v1"): _CORE,
    ("core", "v1"): _CORE,
    ("policy", "v1beta1"): {"PodDisruptionBudget": ("spec",)},
    **{("batch", version): {"Job": _JOB} for version in ("v1beta1", "v1", "v2alpha1")},
}
PROVIDER_REPLACING = ("clusterIdentifier", "kubeconfig", "context", "cluster", "renderYamlToDirectory")
ENGINE_REPLACING = ("provider", "replacementTrigger")


def values_at(document: Any, path: str) -> list[Any]:
    """The values at a dotted path; `name[*]` walks every element of a list."""
    found = [document]
    for step in path.split("."):
        each = step.endswith("[*]")
        key = step.removesuffix("[*]")
        found = [item.get(key, ABSENT) if isinstance(item, dict) else ABSENT for item in found]
        if each:
            found = [element for item in found for element in (item if isinstance(item, list) else [ABSENT])]
    return found


def _provider_flag(resources: dict[str, Any], resource: dict[str, Any], flag: str) -> bool:
    provider = resources.get(resource["options"].get("provider"), {})
    return provider.get("inputs", {}).get(flag) in (True, "true")


def replacing_fields(resources: dict[str, Any], resource: dict[str, Any]) -> tuple[str, ...]:
    """The input paths whose change replaces this resource, under the provider it is registered with
    in the new run (a provider flag such as enableConfigMapMutable takes effect in the same update)."""
    type_token, inputs = resource["type"], resource["inputs"]
    if type_token.startswith("random:"):
        return tuple(inputs)  # every RandomPassword input
    if type_token.startswith("pulumi:providers:kubernetes"):
        return PROVIDER_REPLACING
    if not type_token.startswith("kubernetes:"):
        return ()  # a component: no inputs of its own
    identity = ("metadata.name", "metadata.namespace")
    if type_token.endswith("Patch"):
        return identity
    group, _, version = str(inputs.get("apiVersion", "")).rpartition("/")
    kind = inputs.get("kind")
    fields = FORCE_NEW.get((group, version), {}).get(kind, ())
    immutable = inputs.get("immutable") is True
    if kind == "Secret" and (immutable or not _provider_flag(resources, resource, "enableSecretMutable")):
        fields = ("type", "stringData", "data")
    if kind == "ConfigMap" and (immutable or not _provider_flag(resources, resource, "enableConfigMapMutable")):
        fields = ("binaryData", "data")
    stricter = {"Service": ("spec.type",)}.get(kind, ())
    return (*identity, *fields, *stricter)


def _claim_spec(inputs: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(inputs.get("spec", {}))
    spec.get("resources", {}).get("requests", {}).pop("storage", None)
    return spec


def replacements(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every common URN's replace-triggering differences, as readable reports."""
    reports = []
    for urn in sorted(before.keys() & after.keys()):
        old, new = before[urn], after[urn]
        found: list[Difference] = []
        for field in sorted(replacing_fields(after, new)):  # a field before the fields under it
            if any(d.path == f"inputs.{field}" or d.path.startswith(f"inputs.{field}.") for d in found):
                continue  # spec.selector differs: spec.selector.matchLabels adds nothing
            before_values, after_values = values_at(old["inputs"], field), values_at(new["inputs"], field)
            if "[*]" not in field:
                before_values, after_values = before_values[0], after_values[0]
            found += differences(before_values, after_values, f"inputs.{field}")
        for option in ENGINE_REPLACING:
            found += differences(old["options"].get(option, ABSENT), new["options"].get(option, ABSENT), option)
        if new["inputs"].get("kind") == "PersistentVolumeClaim" and new["type"].startswith("kubernetes:"):
            found += differences(_claim_spec(old["inputs"]), _claim_spec(new["inputs"]), "inputs.spec")
        unique = list({(d.path, json.dumps(d.old), json.dumps(d.new)): d for d in found}.values())
        if unique:
            reports.append(describe(urn, unique))
    return reports


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_replaced(name):
    reports = replacements(golden(name)["resources"], fresh(name)["resources"])
    assert not reports, (
        f"{name}: the first `pulumi up` would REPLACE these (no allowlist applies; the rules are cited "
        "above replacing_fields)\n" + "\n".join(reports)
    )

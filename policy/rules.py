"""CrossGuard rules for llm-gateway: the invariants that matter, as Pulumi policies.

Kept apart from the PolicyPack (policy/__main__.py) so pytest can call them without the Pulumi
CLI: `PolicyPack(...)` starts a gRPC server and blocks. No import of the project's code: the pack
checks what the program *registers*, whatever code produced it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationArgs, ResourceValidationPolicy

ReportViolation = Callable[[str, str | None], None]

WORKLOADS = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
}
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
# What an API key looks like (OpenAI, LiteLLM, Anthropic, generic bearer tokens).
KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|Bearer\s+[A-Za-z0-9._\-]{16,})")
# A Service's DNS name is `<service>.<namespace>.svc.<cluster domain>` (Kubernetes' DNS
# specification); the domain is the one free part (`clusterDomain`, cluster.local by default), so
# no domain is written here: `svc` as the third label, followed by any domain or none.
IN_CLUSTER = re.compile(
    r"^https?://[a-z0-9-]+\.[a-z0-9-]+\.svc(\.[a-z0-9-]+)*\.?(:\d+)?(/|$)|^https?://(127\.|localhost)"
)
# The `model_info` marker the program puts on the tier whose calls leave the cluster. Either signal
# makes a tier the cloud: the address (the marker forgotten) or the marker (an egress proxy with
# a Service name in front of the cloud is still the cloud).
LEAVES_CLUSTER = "leaves_cluster"
# The `model_info` marker of the one group clients may call, and the plugin whose ASGI front door
# enforces it inside the proxy (LiteLLM itself serves any group by name).
CLIENT_FACING = "client_facing"
FRONT_DOOR_MODULE = "request_check"


def _litellm_config(args: ResourceValidationArgs) -> dict[str, Any] | None:
    """The LiteLLM config a ConfigMap renders, or None for any other resource."""
    if args.resource_type != CONFIG_MAP:
        return None
    text = (args.props.get("data") or {}).get("config.yaml")
    if not isinstance(text, str):
        return None
    config = yaml.safe_load(text)
    return config if isinstance(config, dict) and "model_list" in config else None


def _leaves_cluster(entry: dict[str, Any]) -> bool:
    base = (entry.get("litellm_params") or {}).get("api_base") or ""
    return not IN_CLUSTER.match(base) or bool((entry.get("model_info") or {}).get(LEAVES_CLUSTER))


def _cloud_groups(config: dict[str, Any]) -> set[str]:
    return {entry.get("model_name") for entry in config.get("model_list") or [] if _leaves_cluster(entry)}


def _fallback_lists(config: dict[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    for section in ("router_settings", "litellm_settings"):
        for kind in ("fallbacks", "default_fallbacks"):
            value = (config.get(section) or {}).get(kind) or []
            if kind == "default_fallbacks":
                yield section, "*", list(value)
                continue
            for item in value:
                for group, targets in (item or {}).items():
                    yield section, group, list(targets or [])


def _chains(config: dict[str, Any]) -> list[list[str]]:
    """Each chain's groups: from a head (a group no fallback list leads to), every group its
    fallbacks reach. A stack may declare several chains; each is checked on its own."""
    steps: dict[str, list[str]] = {}
    for _, group, targets in _fallback_lists(config):
        if group != "*":
            steps.setdefault(group, []).extend(targets)
    found = []
    for head in _chain_heads(config):
        chain = [head]
        for group in chain:  # every group reachable from the head, in the order they are reached
            chain += [target for target in steps.get(group, []) if target not in chain]
        found.append(chain)
    return found


def cloud_tier_last(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    config = _litellm_config(args)
    if config is None:
        return
    cloud = _cloud_groups(config)
    last_local = {}
    listed = [entry.get("model_name") for entry in config.get("model_list") or []]
    for chain in _chains(config):
        local = [group for group in chain if group not in cloud]
        in_list = [group for group in listed if group in chain]  # the chain's groups in model_list's order
        if any(group in cloud for group in in_list[: len(local)]):
            report_violation(f"the cloud tier must be last in its chain, found order {in_list}", None)
        if local:
            last_local.update(dict.fromkeys(chain, local[-1]))
    for section, group, targets in _fallback_lists(config):
        for index, target in enumerate(targets):
            if target in cloud and targets[index + 1 :]:
                report_violation(f"{section} fallbacks of {group!r} continue after the cloud tier: {targets}", None)
            if target in cloud and group == "*":
                report_violation(f"{section} default fallbacks send every group to the cloud: {targets}", None)
            if target in cloud and group in last_local and group != last_local[group]:
                report_violation(
                    f"{section}: {group!r} falls back straight to the cloud; only the last local tier "
                    f"({last_local[group]!r}) may",
                    None,
                )


def chain_serves_one_kind(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every group a chain's fallbacks reach serves what its head serves (`model_info.mode`: chat, or
    embedding): a chat answer, or another model's vectors, cannot stand in for an embedding."""
    config = _litellm_config(args)
    if config is None:
        return
    modes = {
        entry.get("model_name"): (entry.get("model_info") or {}).get("mode", "chat")
        for entry in config.get("model_list") or []
    }
    for _, group, targets in _fallback_lists(config):
        for target in targets:
            if group != "*" and modes.get(target) != modes.get(group):
                kinds = f"{group!r} ({modes.get(group)}) falls back to {target!r} ({modes.get(target)})"
                report_violation(f"{kinds}: a chain serves one kind", None)


def _chain_heads(config: dict[str, Any]) -> list[str]:
    """The groups chains start at: those no fallback list leads to."""
    targets = {target for _, _, targets in _fallback_lists(config) for target in targets}
    groups = [entry.get("model_name") for entry in config.get("model_list") or []]
    return [group for group in groups if group not in targets]


def _aliases(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for section in ("router_settings", "litellm_settings"):
        for alias, target in ((config.get(section) or {}).get("model_group_alias") or {}).items():
            yield alias, target if isinstance(target, str) else (target or {}).get("model")


def only_the_chain_is_client_callable(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """NFR68 for the names a client may send. The proxy serves any group by name, so what keeps a
    client from calling a later tier (the cloud) directly is the front door's list: the group marked
    client-facing and its aliases. Checked here, on the rendered config: that list is exactly the
    chain's head (in the cluster) and aliases of it, the front door is loaded (its module shipped,
    its handler a callback), and no setting lets a client choose endpoints or credentials."""
    config = _litellm_config(args)
    if config is None:
        return
    heads = _chain_heads(config)
    marked = [
        entry.get("model_name")
        for entry in config.get("model_list") or []
        if (entry.get("model_info") or {}).get(CLIENT_FACING)
    ]
    if set(marked) != set(heads) or set(heads) & _cloud_groups(config):
        report_violation(
            f"model_info.{CLIENT_FACING} must mark each chain's head {heads} only (in the cluster), found {marked}",
            None,
        )
    for alias, target in _aliases(config):
        if target not in marked:
            report_violation(f"model_group_alias {alias!r} points at {target!r}, not at a chain's head {heads}", None)
    callbacks = (config.get("litellm_settings") or {}).get("callbacks") or []
    if f"{FRONT_DOOR_MODULE}.handler" not in callbacks or f"{FRONT_DOOR_MODULE}.py" not in (
        args.props.get("data") or {}
    ):
        report_violation(
            f"the front door ({FRONT_DOOR_MODULE}.py, handler in litellm_settings.callbacks) must be loaded: "
            "without it clients can call every group by name",
            None,
        )
    if (config.get("general_settings") or {}).get("allow_client_side_credentials"):
        report_violation("general_settings.allow_client_side_credentials lets clients choose api_base and keys", None)
    for entry in config.get("model_list") or []:
        if (entry.get("litellm_params") or {}).get("configurable_clientside_auth_params"):
            report_violation(
                f"configurable_clientside_auth_params of {entry.get('model_name')!r} lets clients choose its api_base",
                None,
            )


def no_secret_in_config_map(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != CONFIG_MAP:
        return
    for name, value in (args.props.get("data") or {}).items():
        if isinstance(value, str) and KEY_PATTERN.search(value):
            report_violation(f"ConfigMap key {name!r} holds what looks like an API key; use a Secret", None)
    config = _litellm_config(args)
    if config is None:
        return
    # Values that carry a credential (a key, or a URL with a password in it).
    for section, name in (
        ("general_settings", "master_key"),
        ("general_settings", "database_url"),
        ("router_settings", "redis_url"),
        ("router_settings", "redis_password"),
    ):
        value = (config.get(section) or {}).get(name)
        if value is not None and not str(value).startswith("os.environ/"):
            report_violation(f"{section}.{name} must be os.environ/NAME, filled from a Secret", None)
    for entry in config.get("model_list") or []:
        params = entry.get("litellm_params") or {}
        key = params.get("api_key")
        if key is not None and _leaves_cluster(entry) and not str(key).startswith("os.environ/"):
            report_violation(f"api_key of {entry.get('model_name')!r} must be os.environ/NAME", None)


def _containers(props: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    pod = (((props.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for container in pod.get("initContainers") or []:
        yield "init", container
    for container in pod.get("containers") or []:
        yield "main", container


def containers_have_limits_and_probes(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in WORKLOADS:
        return
    for kind, container in _containers(args.props):
        name = container.get("name")
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        if not {"cpu", "memory"} <= limits.keys() or not {"cpu", "memory"} <= requests.keys():
            report_violation(f"container {name!r} needs cpu and memory requests and limits", None)
        if kind == "main" and not (container.get("readinessProbe") and container.get("livenessProbe")):
            report_violation(f"container {name!r} needs a readiness and a liveness probe", None)


def images_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in WORKLOADS:
        return
    for _, container in _containers(args.props):
        image = container.get("image") or ""
        if "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag in ("latest", "main", "stable", "nightly"):
            report_violation(
                f"image {image!r} of {container.get('name')!r} must be pinned by exact tag or digest", None
            )


# LiteLLM's admin UI is on unless DISABLE_ADMIN_UI is "True" (proxy/common_utils/admin_ui_utils.py).
# Without a database it cannot mint virtual keys, so every client holds the master key, which
# administers the gateway through the UI's routes: the UI only with a database, whose virtual keys
# clients get instead.
def admin_ui_only_with_a_database(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in WORKLOADS:
        return
    for _, container in _containers(args.props):
        env = {entry.get("name"): entry for entry in container.get("env") or [] if isinstance(entry, dict)}
        if "LITELLM_MASTER_KEY" not in env or "DATABASE_URL" in env:
            continue
        if str((env.get("DISABLE_ADMIN_UI") or {}).get("value", "")).strip().lower() != "true":
            report_violation(
                f"container {container.get('name')!r} serves LiteLLM's admin UI without a database: "
                "set DISABLE_ADMIN_UI=True (gateway.adminUi false) or give it DATABASE_URL (databaseUrl)",
                None,
            )


def _mandatory(name: str, description: str, validate) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
    )


POLICIES = [
    _mandatory(
        "cloud-tier-last",
        "The cloud tier is last in each chain and every fallback list; only a chain's last local tier reaches it.",
        cloud_tier_last,
    ),
    _mandatory(
        "only-the-chain-is-client-callable",
        "Clients may call each chain's head (and aliases of it) only, through the front door; never a later tier.",
        only_the_chain_is_client_callable,
    ),
    _mandatory(
        "chain-serves-one-kind",
        "Every tier a chain falls back to serves what its head serves: chat, or embeddings (of one model).",
        chain_serves_one_kind,
    ),
    _mandatory(
        "no-secret-in-config-map",
        "No API key or master key value in any ConfigMap; keys only as os.environ/NAME.",
        no_secret_in_config_map,
    ),
    _mandatory(
        "containers-have-limits-and-probes",
        "Every container has cpu/memory requests and limits; every main container has probes.",
        containers_have_limits_and_probes,
    ),
    _mandatory("images-pinned", "Every image is pinned by an exact tag or a digest.", images_pinned),
    _mandatory(
        "admin-ui-only-with-a-database",
        "LiteLLM's admin UI is off (DISABLE_ADMIN_UI) unless a database gives clients virtual keys.",
        admin_ui_only_with_a_database,
    ),
]

"""The table of what `pulumi up` creates, written from the program's own mock run.

    .venv/bin/python -m tests.created_resources          # rewrite the table in docs/deploying.md
    .venv/bin/python -m tests.created_resources --check  # exit 1 if it is out of date

It runs __main__.py under the tests' mocks (tests/pulumi_harness.py) twice: with the defaults, and
with every optional object turned on; the second table lists only what the first lacks. A
resource added to the program without regenerating fails tests/test_docs.py. It lives with the
tests because it runs the Pulumi program; core/reference.py, which writes the
configuration reference, stays pure.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from core.reference import replace_between
from core.stack_files import ROOT
from tests.pulumi_harness import ProgramRun, Registration, run_program

PAGE = ROOT / "docs" / "deploying.md"
MARKER = "created-resources"
KEY = {"openaiApiKey": "sk-docs"}
# Every object that is off by default: what the second table shows.
EVERYTHING_ON = {
    "gateway": {"serviceMonitor": True, "autoscaling": {"enabled": True}},
    "alerts": {"enabled": True, "dashboard": True},
    "ingress": {"enabled": True, "host": "llm.example.com"},
    "redis": {"mode": "deploy"},
}
EVERYTHING_ON_SECRETS = {**KEY, "databaseUrl": "postgresql://docs@db:5432/litellm"}


def _kind(registration: Registration) -> str:
    """`Deployment`, `DeploymentPatch`, or the token itself for a non-Kubernetes resource."""
    if registration.type.startswith("kubernetes:"):
        return registration.type.rsplit(":", 1)[1]
    return f"`{registration.type}`"


def _object(registration: Registration) -> str:
    metadata = registration.inputs.get("metadata")
    if not isinstance(metadata, dict):
        return f"{_kind(registration)} `{registration.name}`"
    name = metadata.get("name") or f"{registration.name}-<random>"  # auto-named by Pulumi
    if registration.type.endswith("Patch"):  # it changes an object of its own component
        return f"{_kind(registration)} `{registration.name}` (of `{name}`)"
    described = f"{_kind(registration)} `{name}`"
    if registration.type.endswith(":ConfigMap") and isinstance(registration.inputs.get("data"), dict):
        described += " (" + ", ".join(f"`{file}`" for file in sorted(registration.inputs["data"])) + ")"
    return described


def _component(registration: Registration) -> str:
    """The component resource a registration belongs to, e.g. `VllmBackend` `vllm`; '—' for the
    program's own top-level objects."""
    parent_type, _, parent_name = registration.parent.rpartition("::")
    parent_type = parent_type.rsplit("::", 1)[-1].rsplit("$", 1)[-1]
    if not parent_type.startswith("llm-gateway:"):
        return "—"
    return f"`{parent_type.rsplit(':', 1)[1]}` `{parent_name}`"


def _rows(run: ProgramRun, leave_out: set[tuple[str, str]] = frozenset()) -> list[tuple[str, str]]:
    by_component: dict[str, list[str]] = defaultdict(list)
    for registration in run.resources:
        if registration.type.startswith("llm-gateway:") or (registration.type, registration.name) in leave_out:
            continue  # the components are the table's first column
        by_component[_component(registration)].append(_object(registration))
    return [(component, ", ".join(objects)) for component, objects in sorted(by_component.items())]


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| Component | Objects |", "|---|---|"] + [f"| {c} | {o} |" for c, o in rows]
    return "\n".join(lines) + "\n"


def created_tables() -> str:
    default = run_program({}, KEY)
    everything = run_program(EVERYTHING_ON, EVERYTHING_ON_SECRETS)
    seen = {(r.type, r.name) for r in default.resources}
    return (
        "With the defaults:\n\n"
        + _table(_rows(default))
        + "\nAdded by the optional objects (`gateway.serviceMonitor`, `gateway.autoscaling`, `alerts`, "
        "`ingress`, `redis.mode: deploy`, `databaseUrl`):\n\n" + _table(_rows(everything, seen))
    )


def rendered() -> str:
    return replace_between(PAGE.read_text(), MARKER, created_tables())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the table is out of date")
    text = rendered()
    if parser.parse_args().check:
        stale = PAGE.read_text() != text
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run .venv/bin/python -m tests.created_resources")
        return 1 if stale else 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

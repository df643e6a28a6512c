"""What the settings declarations give users: the configuration reference (docs/configuration.md)
and the timeouts table (docs/failover.md), the JSON Schema of a stack file, and the `config:` block
of Pulumi.yaml; and from the alert rules, the alert table (docs/monitoring.md). Pure: no Pulumi
import.

    .venv/bin/python -m core.reference          # rewrite them from the declarations and rules
    .venv/bin/python -m core.reference --check  # exit 1 if any of them is out of date

tests/test_reference.py runs the check, so a setting changed in core/settings.py without
regenerating fails the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from core.chain import TIER_KINDS
from core.declarations import Flag, declared_fields, doc_rows, object_schema, plain
from core.names import PROJECT, config_key
from core.observability import alert_rules
from core.settings import SECRET_SETTINGS, Settings
from core.stack_files import ROOT

CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
FAILOVER_PAGE = ROOT / "docs" / "failover.md"
MONITORING_PAGE = ROOT / "docs" / "monitoring.md"
SCHEMA = ROOT / "schema" / "stack-config.schema.json"
PROJECT_FILE = ROOT / "Pulumi.yaml"
# The Timeouts section of docs/failover.md shows these rows of the same table.
TIMEOUT_KEYS = (
    "vllm.firstTokenTimeoutSeconds",
    "vllm.stallTimeoutSeconds",
    "vllm.maxQueueSeconds",
    "vllm.timeoutSeconds",
    "ollama.timeoutSeconds",
    "openai.timeoutSeconds",
    "gateway.healthCheckIntervalSeconds",
    "gateway.cooldownSeconds",
)


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Mapping | tuple | list) and not value:
        return "`{}`" if isinstance(value, Mapping) else "`[]`"
    return f"`{json.dumps(plain(value)) if not isinstance(value, str | int | float) else value}`"


def _rows() -> list[tuple[str, str, str, str]]:
    rows = [(key, _default_text(default), words, doc) for key, default, words, doc in doc_rows(Settings, Settings())]
    secret_rows = [(s.key, s.default, "a string, set with `--secret`", s.doc) for s in SECRET_SETTINGS]
    return secret_rows + rows


def setting_keys() -> list[str]:
    """Every stack-config key under `llm-gateway:`, secrets included (tests/test_docs.py checks
    the docs name no other)."""
    return [row[0] for row in _rows()]


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| Key | Default | Allowed | Meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {default} | {words} | {doc} |" for key, default, words, doc in rows]
    return "\n".join(lines) + "\n"


def config_table() -> str:
    return _table(_rows())


def timeouts_table() -> str:
    by_key = {row[0]: row for row in _rows()}
    return _table([by_key[key] for key in TIMEOUT_KEYS])


def _every_alert_on() -> Settings:
    """The defaults with the autoscaler on: the only alert the defaults leave out is the autoscaler's."""
    defaults = Settings()
    autoscaling = dataclasses.replace(defaults.gateway.autoscaling, enabled=True)
    return dataclasses.replace(defaults, gateway=dataclasses.replace(defaults.gateway, autoscaling=autoscaling))


def alerts_table() -> str:
    """Every rule the PrometheusRule can hold, as rendered with the defaults: a rule added to
    core/observability.py appears here, so the page cannot leave one out."""
    lines = ["| alert | severity, held for | fires when | what to check |", "|---|---|---|---|"]
    for rule in alert_rules(_every_alert_on()):
        held = f", {rule['for']}" if "for" in rule else ""
        notes = rule["annotations"]
        lines.append(
            f"| `{rule['alert']}` | {rule['labels']['severity']}{held} | {notes['summary']} | {notes['description']} |"
        )
    return "\n".join(lines) + "\n"


def stack_schema() -> dict[str, Any]:
    """JSON Schema of `Pulumi.<stack>.yaml`: every `llm-gateway:` key declared, nothing else under
    that prefix; other namespaces (e.g. `kubernetes:context`) are left to their owners."""
    settings = object_schema(Settings, Settings())["properties"]
    properties = {config_key(key): schema for key, schema in settings.items()}
    for secret in SECRET_SETTINGS:
        properties[config_key(secret.key)] = {
            "description": f"{secret.doc} Set it with `pulumi config set --secret`: only its ciphertext is here.",
            "type": "object",
            "properties": {"secure": {"type": "string"}},
            "required": ["secure"],
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{PROJECT} stack settings (Pulumi.<stack>.yaml)",
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": properties,
                "patternProperties": {f"^(?!{re.escape(PROJECT)}:)": {}},
                "additionalProperties": False,
            },
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
    }


def project_config() -> dict[str, Any]:
    """`config:` of Pulumi.yaml. Pulumi's project schema types only string, integer, boolean and
    array keys, and requires every declared key without a default to be set in each stack; so only
    top-level scalars with a default are declared (objects and the optional secrets cannot be)."""
    declared = {}
    for key, item in declared_fields(Settings):
        default, check = item.default, item.metadata["check"]
        if default is dataclasses.MISSING or not isinstance(default, str | bool | int):
            continue
        kind = "boolean" if isinstance(check, Flag) else "integer" if isinstance(default, int) else "string"
        declared[key] = {"type": kind, "description": item.metadata["doc"], "default": default}
    return declared


def replace_between(text: str, name: str, body: str) -> str:
    start, end = f"<!-- generated:{name} -->\n", f"<!-- /generated:{name} -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}{body}{end}{tail}"


def pulumi_yaml_keys() -> str:
    """The keys Pulumi.yaml declares, as the configuration page lists them."""
    return ", ".join(f"`{key}`" for key in project_config()) + ".\n"


def tier_kinds_table() -> str:
    """core/chain.py TIER_KINDS: each kind of tier, how it is reached, deployed and probed."""
    rows = ["| kind | protocol | deployed by | health |", "|---|---|---|---|"]
    for name, kind in TIER_KINDS.items():
        rows.append(f"| `{name}` | {kind.wire} | {kind.deployed_by or 'not deployed here'} | {kind.health_probe} |")
    return "\n".join(rows) + "\n"


def rendered() -> dict[Any, str]:
    configuration = replace_between(CONFIGURATION_PAGE.read_text(), "config-table", config_table())
    configuration = replace_between(configuration, "tier-kinds", tier_kinds_table())
    configuration = replace_between(configuration, "pulumi-yaml-keys", pulumi_yaml_keys())
    project = yaml.safe_load(PROJECT_FILE.read_text())
    project["config"] = project_config()
    return {
        CONFIGURATION_PAGE: configuration,
        FAILOVER_PAGE: replace_between(FAILOVER_PAGE.read_text(), "timeouts-table", timeouts_table()),
        MONITORING_PAGE: replace_between(MONITORING_PAGE.read_text(), "alerts-table", alerts_table()),
        SCHEMA: json.dumps(stack_schema(), indent=2, ensure_ascii=False) + "\n",
        PROJECT_FILE: yaml.safe_dump(project, sort_keys=False, allow_unicode=True, width=120),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args()
    stale = [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run .venv/bin/python -m core.reference")
        return 1 if stale else 0
    for path, text in rendered().items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

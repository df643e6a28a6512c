"""The repository's stack files (`Pulumi.<stack>.yaml`), read without the Pulumi CLI.

Pure: no Pulumi import. The tests feed these files to the program under mocks (mocks do not read
stack files), the drill and the demo run the gateway on a stack's settings, and the JSON Schema
test validates every one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.names import PROJECT, SECRET_CONFIG_KEYS
from core.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
CHAINS_EXAMPLE = ROOT / "examples" / "Pulumi.chains.yaml"  # a chat chain, an embeddings chain, an endpoint


def stack_files() -> list[Path]:
    return sorted(ROOT.glob("Pulumi.*.yaml"))


def stack_file(stack: str | Path) -> Path:
    """A stack's file: `dev` is Pulumi.dev.yaml here; a path (an example's) is itself."""
    return stack if isinstance(stack, Path) else ROOT / f"Pulumi.{stack}.yaml"


def stack_config(stack: str | Path) -> dict[str, Any]:
    """A stack file's `llm-gateway:` config with bare keys; other namespaces are left out."""
    config = yaml.safe_load(stack_file(stack).read_text()).get("config") or {}
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def stack_settings(stack: str | Path) -> Settings:
    """The stack's settings, with the cloud tier's key taken as set (as a user who has set it runs
    the stack). Secret values in the file are never read."""
    public = {key: value for key, value in stack_config(stack).items() if key not in SECRET_CONFIG_KEYS}
    return parse_settings(public, openai_key="secret")

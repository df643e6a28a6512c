"""Reads the stack configuration out of Pulumi and hands it to the pure settings parser.

The OpenAI key's value is never read here: only whether it is set, and set as a secret. The one
place that reads it is `openai_api_key`, through `Config.require_secret`.
"""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from core.declarations import ConfigError
from core.names import (
    DATABASE_URL_CONFIG,
    MASTER_KEY_CONFIG,
    OPENAI_KEY_CONFIG,
    PROJECT,
    REDIS_URL_CONFIG,
    SECRET_CONFIG_KEYS,
    config_key,
)
from core.settings import Settings, chain_secret_keys, parse_settings

SECRET_PLACEHOLDER = "(secret value, not shown)"


def _project_config() -> dict[str, str]:
    """Every `llm-gateway:*` key the stack sets, so a typo in a top-level key is caught too.

    Pulumi passes config in PULUMI_CONFIG (a `pulumi up`) or through `set_all_config` (tests);
    `Config.get` alone can only look up keys it already knows.
    """
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    found: dict[str, str] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue
        key = key.removeprefix("config:")  # the older `project:config:key` form
        # A value set with --secret never reaches the parser, so no error message can echo it
        # (a typo such as `openaiApikey` is still reported, by name).
        secret = key in SECRET_CONFIG_KEYS or runtime_config.is_config_secret(full_key)
        found[key] = SECRET_PLACEHOLDER if secret else value
    return found


def _secret_state(raw: dict[str, str], key: str) -> str:
    if key not in raw:
        return "missing"
    if runtime_config.is_config_secret(config_key(key)):
        return "secret"
    return "plaintext"


def load_settings() -> Settings:
    """Validated settings, or a clean Pulumi error (no traceback) naming the key and the fix."""
    raw = _project_config()
    try:
        return parse_settings(
            raw,
            openai_key=_secret_state(raw, OPENAI_KEY_CONFIG),
            database_url=_secret_state(raw, DATABASE_URL_CONFIG),
            redis_url=_secret_state(raw, REDIS_URL_CONFIG),
            master_key=_secret_state(raw, MASTER_KEY_CONFIG),
            secret_states={key: _secret_state(raw, key) for key in raw if key not in SECRET_CONFIG_KEYS},
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def openai_api_key(settings: Settings) -> pulumi.Output[str] | None:
    if not openai_key_needed(settings):
        return None
    return pulumi.Config(PROJECT).require_secret(OPENAI_KEY_CONFIG)


def tier_keys(settings: Settings) -> dict[str, pulumi.Output[str]]:
    """The secret keys the chains' tiers name (`apiKey`), by stack-config key; the OpenAI key is
    `openai_api_key`'s (one Secret, even when a chain's tier names it too)."""
    config = pulumi.Config(PROJECT)
    return {key: config.require_secret(key) for key in chain_secret_keys(settings) if key != OPENAI_KEY_CONFIG}


def openai_key_needed(settings: Settings) -> bool:
    return settings.openai.enabled or OPENAI_KEY_CONFIG in chain_secret_keys(settings)


def database_url(settings: Settings) -> pulumi.Output[str] | None:
    if not settings.database:
        return None
    return pulumi.Config(PROJECT).require_secret(DATABASE_URL_CONFIG)


def external_redis_url(settings: Settings) -> pulumi.Output[str] | None:
    """An existing Redis (`redis.mode: external`); None when the program deploys its own, or none."""
    if settings.redis.mode != "external":
        return None
    return pulumi.Config(PROJECT).require_secret(REDIS_URL_CONFIG)


def operator_master_key() -> pulumi.Output[str] | None:
    """The operator's own gateway key (checked to be a secret by `load_settings`); None: generated."""
    return pulumi.Config(PROJECT).get_secret(MASTER_KEY_CONFIG)

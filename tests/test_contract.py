"""gateway/contract.py: the one place the program and its plugins spell what they share.

The plugins import it, the program imports it: nothing compares two spellings any more. What is left
to check is that it loads where the plugins run (the ConfigMap's directory, by LiteLLM's own loader),
that it stays dependency-free, and, where the program still writes a shared key by hand, that it
writes the contract's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.gateway_pod import gateway_files
from core.litellm_config import spend_guard
from core.names import CONFIG_FILE_NAME, CONTRACT_FILE, GATEWAY_MODULES
from core.settings import parse_settings
from core.stack_files import ROOT
from gateway import contract
from gateway.contract import FAILURE_REASONS, SPEND_GUARD_KEYS, WHEN_REDIS_DOWN, WHEN_REDIS_DOWN_POLICIES

# LiteLLM's loader for `callbacks` and `custom_handler` entries, run on a copy of the ConfigMap's files
# in a fresh interpreter whose working directory is elsewhere: the directory is on no path of its own.
LOAD_AS_LITELLM_DOES = """
import json, sys
from litellm.proxy.types_utils.utils import get_instance_fn
config, stems = sys.argv[1], sys.argv[2:]
handlers = {stem: type(get_instance_fn(f"{stem}.handler", config)).__name__ for stem in stems}
print(json.dumps({"contract": sys.modules["contract"].__file__, "handlers": handlers}))
"""


def test_every_plugin_loads_the_contract_shipped_beside_it(tmp_path):
    directory = tmp_path / "config"
    directory.mkdir()
    for name, text in gateway_files(parse_settings({}, openai_key="secret")).items():
        (directory / name).write_text(text)
    stems = [module.stem for module in GATEWAY_MODULES if module != CONTRACT_FILE]
    script = [sys.executable, "-c", LOAD_AS_LITELLM_DOES, str(directory / CONFIG_FILE_NAME), *stems]
    done = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["contract"] == str(directory / CONTRACT_FILE.name)
    assert sorted(loaded["handlers"]) == sorted(stems)


def test_the_contract_needs_nothing_beyond_the_standard_library():
    """The pod's image and the program's venv both import it: no LiteLLM, no prometheus_client at import."""
    script = (
        "import json, sys; before = set(sys.modules); import gateway.contract\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in set(sys.modules) - before})))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert loaded - set(sys.stdlib_module_names) == {"gateway"}


@pytest.mark.parametrize("policy", WHEN_REDIS_DOWN_POLICIES)
def test_the_program_writes_the_spend_guard_keys_and_policies_the_guard_reads(policy):
    """core/litellm_config.py `spend_guard` writes the keys by hand (for now): every one is the contract's."""
    raw = {"openai": {"rpm": 1, "tpm": 2, "maxBudgetUsd": 3}, "redis": {"mode": "deploy", "cloudGuardWhenDown": policy}}
    limits = spend_guard(parse_settings(raw, openai_key="secret"))
    assert tuple(limits) == SPEND_GUARD_KEYS
    assert limits[WHEN_REDIS_DOWN] == policy


def test_every_reason_a_client_may_be_given_is_documented():
    docs = "".join(page.read_text() for page in (ROOT / "docs").glob("*.md"))
    assert not [reason for reason in FAILURE_REASONS if f"`{reason}`" not in docs and f"reason: {reason}" not in docs]


def test_no_two_names_of_the_contract_spell_the_same_fact():
    """Two names for one string (as `REDIS_DOWN_TAG` and `GUARD_STORE_DOWN` once were) drift apart."""
    spelled = [value for name, value in vars(contract).items() if name.isupper() and isinstance(value, str)]
    assert not {value for value in spelled if spelled.count(value) > 1}

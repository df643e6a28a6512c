"""Supply chain: exact pins everywhere, the drill's LiteLLM equals the deployed image's."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from core.settings import DEFAULT_LITELLM_IMAGE, LITELLM_VERSION, GatewaySettings

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT_FILES = ["requirements.txt", "requirements-dev.txt", "constraints.txt", "requirements-lock.txt"]
# Releases that shipped a credential stealer (2026-03). Never pin, never deploy.
COMPROMISED_LITELLM = {"1.82.7", "1.82.8"}


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_the_drill_runs_the_litellm_version_the_gateway_image_deploys():
    assert version("litellm") == LITELLM_VERSION
    assert GatewaySettings().image == DEFAULT_LITELLM_IMAGE
    assert DEFAULT_LITELLM_IMAGE.endswith(f":v{LITELLM_VERSION}")
    dev_pin = [line for line in requirement_lines("requirements-dev.txt") if line.startswith("litellm")]
    assert dev_pin == [f"litellm[proxy]=={LITELLM_VERSION}"]


@pytest.mark.parametrize("name", REQUIREMENT_FILES)
def test_every_requirement_is_pinned_exactly(name):
    for line in requirement_lines(name):
        if line.startswith("-r "):
            continue
        pin = r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[A-Za-z0-9_.\-+]+"
        if name == "requirements-lock.txt":
            pin += r" --hash=sha256:[0-9a-f]{64}"
        assert re.fullmatch(pin, line), f"{name}: {line!r}"


@pytest.mark.parametrize("name", REQUIREMENT_FILES)
def test_no_compromised_litellm_release_is_pinned(name):
    for line in requirement_lines(name):
        if re.match(r"litellm(\[[a-z,]+\])?==", line):
            assert line.split("==")[1] not in COMPROMISED_LITELLM, f"{name} pins a compromised LiteLLM: {line}"
    assert LITELLM_VERSION not in COMPROMISED_LITELLM


def test_runtime_requirements_match_the_lock():
    locked = {line.split("==")[0].lower().replace("_", "-"): line for line in requirement_lines("constraints.txt")}
    for line in requirement_lines("requirements.txt"):
        name = line.split("==")[0].lower().replace("_", "-")
        assert locked[name].split("==")[1] == line.split("==")[1], line


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in requirement_lines(name):
        if not line.startswith("-r "):
            package, version = line.split()[0].split("==")
            found[normalised(package.split("[")[0])] = version
    return found


def test_the_hash_lock_holds_exactly_the_constraints():
    # pip freeze leaves out the packaging tools themselves; the lock pins them too.
    lock = {name: pinned for name, pinned in pins("requirements-lock.txt").items() if name != "setuptools"}
    assert lock == pins("constraints.txt")
    for name, pinned in {**pins("requirements.txt"), **pins("requirements-dev.txt")}.items():
        assert lock[name] == pinned, name

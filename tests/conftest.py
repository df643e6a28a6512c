import os
import sys
from pathlib import Path

import pytest

# The program and its tests import `components` from the project root, as `pulumi up` does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Tests that import litellm must not try to download its model cost map (no internet here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="module")
def drill():
    """The real proxy on the dev stack's settings, with the cloud tier on (as a user with a key
    runs it), in front of loopback stand-ins: one per test module that asks for it."""
    from core.stack_files import stack_settings
    from drill.runner import Drill

    with Drill(stack_settings("dev")) as running:
        yield running


@pytest.fixture
def fresh(drill):
    """All tiers up, vLLM routed to again, counts zeroed."""
    drill.all_up()
    drill.wait_for_tier("vllm")
    drill.reset_counts()
    return drill

"""drill/profile.py gives each sample to the feature whose code ran it, not to the front door that
wraps the whole app."""

from __future__ import annotations

from drill.profile import LITELLM, feature_of, feature_rows, shares

FRONT_DOOR = "FrontDoor.__call__ (gateway/request_check.py:600)"
APP = "ServerErrorMiddleware.__call__ (starlette/middleware/errors.py:160)"
PROGRESS = "_WatchedLines._read (gateway/vllm_progress.py:470)"
AIOHTTP = "StreamReader.readline (aiohttp/streams.py:350)"


def test_the_deepest_feature_frame_takes_the_sample_and_the_front_doors_app_call_is_litellms():
    assert feature_of(["run", FRONT_DOOR, "FrontDoor._chat (gateway/request_check.py:640)"]).startswith("front door")
    assert feature_of(["run", FRONT_DOOR, APP, "Router.acompletion (litellm/router.py:1)"]) == LITELLM
    assert feature_of(["run", FRONT_DOOR, APP, "x (gateway/vllm_progress.py:1)", AIOHTTP]).startswith("progress")
    assert feature_of(
        ["run", "Logging.x (litellm_logging.py:1)", "P (litellm/integrations/prometheus.py:9)"]
    ).startswith("Prometheus")


def test_shares_weigh_samples_and_rows_add_up_to_the_whole():
    raw = f"run;{FRONT_DOOR};{APP};r (litellm/router.py:1) 3\nrun;{PROGRESS};{AIOHTTP} 1\n"
    fractions = shares(raw)
    assert fractions[LITELLM] == 0.75 and sum(fractions.values()) == 1.0
    rows = feature_rows(fractions, 20.0)
    assert f"| {LITELLM} | 15.00 ms |" in rows and rows[-1] == "| **the proxy in all** | **20.0 ms** |"

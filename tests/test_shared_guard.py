"""The spend guard's counts in a real Redis (Debian's redis-server, started and stopped by PID).

Two guard objects stand for two gateway replicas (each loads gateway/cloud_guard.py as LiteLLM
does); a third, made later, for a replica that replaced one in a rollout. The end-to-end version,
through two real LiteLLM proxies, is tests/test_fleet.py.
"""

import asyncio
import time

import litellm
import pytest

from core.names import HONEST_ERRORS_FILE
from drill.redis_server import DRILL_REDIS_PASSWORD, RedisServer
from drill.runner import free_port
from drill.slow_link import SlowLink
from gateway.contract import CLOUD_GUARD_UNAVAILABLE, REDIS_DOWN_TAG
from tests.test_cloud_guard import Response, load_guard_module
from tests.test_fallback import _gateway_module

TIMEOUT_SECONDS = 0.25


def limits(redis_server: RedisServer, **extra) -> dict:
    return {
        "redis_url_env": "TEST_GUARD_REDIS_URL",
        "redis_timeout_seconds": TIMEOUT_SECONDS,
        "key_prefix": "test",
        "when_redis_down": "closed",
        **extra,
    }


def cloud(spend_guard: dict) -> dict:
    return {"model_info": {"id": "openai", "spend_guard": spend_guard}, "litellm_params": {"model": "openai/x"}}


async def admitted(guard, deployment) -> bool:
    try:
        await guard.async_pre_call_check(deployment, None)
    except litellm.RateLimitError:
        return False
    return True


async def answered(guard, deployment, tokens: int, cost: float) -> None:
    kwargs = {"litellm_params": {"model_info": deployment["model_info"]}, "response_cost": cost}
    await guard.async_log_success_event(kwargs, Response(tokens), None, None)


@pytest.fixture
def redis_server(monkeypatch):
    with RedisServer(free_port()) as server:
        monkeypatch.setenv("TEST_GUARD_REDIS_URL", server.url)
        yield server


def replica():
    return load_guard_module().CloudGuard()


def test_two_replicas_admit_exactly_rpm_together(redis_server):
    first, second, deployment = replica(), replica(), cloud(limits(redis_server, rpm=3))

    async def race():
        checks = [admitted(guard, deployment) for _ in range(10) for guard in (first, second)]
        return await asyncio.gather(*checks)

    verdicts = asyncio.run(race())
    assert sum(verdicts) == 3, verdicts
    assert redis_server.command("ZCARD", "{test}:cloud-guard:requests") == "3"


def test_tokens_and_dollars_count_for_every_replica_and_survive_a_rollout(redis_server):
    spend_guard = limits(redis_server, tpm=1000, max_budget_usd=1.0, budget_period_seconds=86400)
    deployment = cloud(spend_guard)

    async def scenario():
        first, second = replica(), replica()
        assert await admitted(first, deployment)
        await answered(first, deployment, tokens=10, cost=0.6)
        assert await admitted(second, deployment)
        await answered(second, deployment, tokens=10, cost=0.4)
        # A replica started afterwards (a rollout replaced both) still sees $1.00 spent.
        successor = replica()
        refused = not await admitted(successor, deployment)
        return refused

    assert asyncio.run(scenario())
    assert redis_server.command("GET", "{test}:cloud-guard:spend-total") == "1000000"  # micro-dollars, exact


def test_the_budget_survives_a_redis_crash_through_the_append_only_file(redis_server):
    deployment = cloud(limits(redis_server, max_budget_usd=1.0, budget_period_seconds=86400))

    async def spend_all():
        guard = replica()
        assert await admitted(guard, deployment)
        await answered(guard, deployment, tokens=5, cost=1.0)

    asyncio.run(spend_all())
    time.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk
    redis_server.kill()
    redis_server.start()  # same data directory, as the pod's PVC
    assert not asyncio.run(admitted(replica(), deployment))


def test_redis_killed_closed_refuses_the_cloud_quickly_and_resumes(redis_server):
    deployment = cloud(limits(redis_server, rpm=5))
    guard = replica()
    assert asyncio.run(admitted(guard, deployment))
    redis_server.kill()
    started = time.monotonic()
    with pytest.raises(litellm.RateLimitError, match="guard-store-down"):
        asyncio.run(guard.async_pre_call_check(deployment, None))
    assert time.monotonic() - started < 1.0  # a refused connection: no wait, no retry
    redis_server.start()
    assert asyncio.run(admitted(guard, deployment))


def test_redis_frozen_closed_refusal_waits_at_most_the_timeout(redis_server):
    deployment = cloud(limits(redis_server, rpm=5))
    guard = replica()
    assert asyncio.run(admitted(guard, deployment))
    redis_server.freeze()  # connections stay open, nothing answers
    try:
        started = time.monotonic()
        with pytest.raises(litellm.RateLimitError, match="guard-store-down"):
            asyncio.run(guard.async_pre_call_check(deployment, None))
        waited = time.monotonic() - started
    finally:
        redis_server.thaw()
    print(f"frozen Redis: refused after {waited:.3f} s (timeout {TIMEOUT_SECONDS} s)")
    assert waited < 4 * TIMEOUT_SECONDS


def test_redis_away_open_counts_per_replica_and_writes_the_missed_spend_back(redis_server):
    deployment = cloud(limits(redis_server, rpm=3, when_redis_down="open", tpm=1_000_000))

    async def scenario():
        guard = replica()
        assert await admitted(guard, deployment)
        redis_server.kill()
        # Redis away: this replica counts on its own, still holding the limit of 3 per minute.
        verdicts = [await admitted(guard, deployment) for _ in range(4)]
        await answered(guard, deployment, tokens=42, cost=0.0)  # not written: kept for later
        return verdicts

    assert asyncio.run(scenario()) == [True, True, False, False]


def test_spend_counted_while_redis_was_away_is_written_when_it_returns(redis_server):
    deployment = cloud(limits(redis_server, tpm=1_000_000, when_redis_down="open"))

    async def scenario():
        guard = replica()
        assert await admitted(guard, deployment)
        redis_server.kill()
        await answered(guard, deployment, tokens=40, cost=0.25)
        await answered(guard, deployment, tokens=2, cost=0.0)
        assert not await admitted(guard, cloud(limits(redis_server, tpm=1_000_000)))  # closed: Redis still away
        redis_server.start()
        assert await admitted(guard, deployment)

    asyncio.run(scenario())
    assert redis_server.command("GET", "{test}:cloud-guard:tokens-total") == "42"
    assert redis_server.command("GET", "{test}:cloud-guard:spend-total") == "250000"


SPEND_TOTAL = "{test}:cloud-guard:spend-total"


@pytest.fixture
def slow_link(redis_server, monkeypatch):
    """The guard reaches Redis through a relay that can hold what it sends, or refuse new connections."""
    with SlowLink(redis_server.port) as link:
        monkeypatch.setenv("TEST_GUARD_REDIS_URL", f"redis://:{DRILL_REDIS_PASSWORD}@127.0.0.1:{link.port}/0")
        asyncio.run(answered(replica(), cloud(limits(redis_server)), tokens=1, cost=0.0))  # Redis knows the scripts
        yield link


def open_with_budget(redis_server) -> dict:
    return cloud(limits(redis_server, when_redis_down="open", max_budget_usd=100.0, budget_period_seconds=86400))


def test_concurrent_admits_write_the_spend_redis_missed_once(redis_server, slow_link):
    """Each admit used to write the same backlog: $5 missed and 8 concurrent admits wrote $40."""
    deployment, guard = open_with_budget(redis_server), replica()

    async def scenario():
        slow_link.refuse_new = True
        await answered(guard, deployment, tokens=5, cost=5.0)  # Redis away: kept
        slow_link.refuse_new, slow_link.delay = False, 0.05  # back, slow (within the timeout)
        return await asyncio.gather(*[admitted(guard, deployment) for _ in range(8)])

    assert all(asyncio.run(scenario()))
    assert redis_server.command("GET", SPEND_TOTAL) == "5000000"


def test_spend_that_fails_while_the_backlog_is_written_is_kept(redis_server, slow_link):
    """Resetting the backlog after its write used to erase a $2 answer that failed meanwhile."""
    deployment, guard = open_with_budget(redis_server), replica()

    async def scenario():
        slow_link.refuse_new = True
        await answered(guard, deployment, tokens=5, cost=5.0)
        slow_link.refuse_new, slow_link.delay = False, 0.05  # a new connection takes ~4 round trips: 0.2 s
        flush = asyncio.create_task(admitted(guard, deployment))  # writes the $5 on the one open connection
        await asyncio.sleep(0.1)
        slow_link.refuse_new = True  # a blip: no new connection; a second write could not be sent
        await answered(guard, deployment, tokens=2, cost=2.0)
        assert await flush
        slow_link.refuse_new, slow_link.delay = False, 0.0
        assert await admitted(guard, deployment)

    asyncio.run(scenario())
    assert redis_server.command("GET", SPEND_TOTAL) == "7000000"


def test_a_write_that_timed_out_yet_ran_is_counted_once(redis_server, slow_link):
    """Redis slower than the timeout runs the write after the guard gave up on it: the guard
    sends it again under the same batch id, and Redis does not count it twice."""
    deployment, guard = open_with_budget(redis_server), replica()

    async def scenario():
        assert await admitted(guard, deployment)
        slow_link.delay = 4 * TIMEOUT_SECONDS
        await asyncio.gather(answered(guard, deployment, tokens=2, cost=2.0), admitted(guard, deployment))
        deadline = time.monotonic() + 5
        while redis_server.command("GET", SPEND_TOTAL) != "2000000" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the held write reaches Redis late
        slow_link.delay = 0.0
        assert await admitted(guard, deployment)  # sends the batch again first

    asyncio.run(scenario())
    assert redis_server.command("GET", SPEND_TOTAL) == "2000000"


def test_honest_errors_tells_the_guards_redis_refusal_from_a_rate_limit():
    """The two plugins are loaded by path, apart, and share the tag through gateway/contract.py. It must
    sit within the 50 characters of the exception LiteLLM keeps with a cooldown."""
    guard, honest = load_guard_module(), _gateway_module(HONEST_ERRORS_FILE)
    refusal = guard.CloudGuard()._refuse(cloud({}), "redis_unavailable", f"{REDIS_DOWN_TAG}: Redis away")
    assert REDIS_DOWN_TAG in str(refusal)[:50]
    answer = asyncio.run(honest.handler.async_post_call_failure_hook({}, refusal, None))
    assert answer.status_code == 429 and answer.provider_specific_fields == {"reason": CLOUD_GUARD_UNAVAILABLE}

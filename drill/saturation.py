"""A saturated vLLM: many requests at once on a stand-in with few sequence slots and a queue.

Shared by the busy-GPU drill tests and the benchmark, so both measure the same thing.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from drill.client import Answer, chat
from drill.runner import Drill

SLOTS, ANSWER_SECONDS, CONCURRENT = 2, 3.0, 12


def saturate(drill: Drill, requests: int = CONCURRENT, stream: bool = False) -> list[Future[Answer]]:
    """Give vLLM `SLOTS` slots and `ANSWER_SECONDS` answers, then send `requests` chats at once."""
    drill.standins["vllm"].set_mode("slow", delay=ANSWER_SECONDS, slots=SLOTS)
    return send_at_once(drill.url, drill.settings.gateway.model_name, requests, stream)


def send_at_once(base_url: str, model: str, requests: int, stream: bool = False) -> list[Future[Answer]]:
    pool = ThreadPoolExecutor(requests)
    futures = [pool.submit(chat, base_url, model, f"busy {i}", stream, 90) for i in range(requests)]
    pool.shutdown(wait=False)
    return futures


def answers(futures: list[Future[Answer]]) -> list[Answer]:
    return [future.result() for future in futures]


def tokens_per_second(base_url: str, model: str, requests: int = CONCURRENT) -> tuple[float, list[Answer]]:
    """Words of answer delivered per second of wall time, for `requests` streams sent at once (the
    stand-ins send one word per token; chunk counts differ between vLLM and the gateway's re-chunking)."""
    started = time.monotonic()
    done = answers(send_at_once(base_url, model, requests, stream=True))
    tokens = sum(len(answer.content.split()) for answer in done)
    return tokens / (time.monotonic() - started), done


def freeze_under_load(drill: Drill) -> tuple[float, list[Answer]]:
    """Saturate, let the engine work for a round, freeze it; seconds until every request settled."""
    futures = saturate(drill)
    time.sleep(ANSWER_SECONDS + 1)  # some answers done, some running, the rest queued
    drill.standins["vllm"].set_mode("freeze")
    frozen_at = time.monotonic()
    done = answers(futures)
    return time.monotonic() - frozen_at, done

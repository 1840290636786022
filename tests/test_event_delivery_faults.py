"""Dropped pub/sub connections (a real fault, injected with CLIENT KILL): nothing is lost."""

from __future__ import annotations

import json
import time

import redis
import requests

from contracts import keys
from tests.helpers import ASYNC, TINY, user, wait_for


def drop_pubsub_connections(redis_url: str) -> int:
    return redis.Redis.from_url(redis_url).client_kill_filter(_type="pubsub")


def test_a_stream_survives_its_subscription_being_dropped(chat, redis_url):
    request = {"model": TINY, "messages": user("go"), "max_tokens": 3000, "temperature": 1.0, "seed": 9}
    whole = chat(request).json()["choices"][0]["message"]["content"]
    response = chat({**request, "stream": True}, stream=True)
    lines = response.iter_lines(decode_unicode=True)
    payloads = []
    for line in lines:
        if line.startswith("data: "):
            payloads.append(line[6:])
        if len(payloads) == 5:
            break
    assert drop_pubsub_connections(redis_url) >= 1
    payloads += [line[6:] for line in lines if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("choices" in c for c in chunks), chunks[-3:]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole


def cancel_listeners(redis_url: str) -> int:
    """Connections subscribed to the cancel channel (each worker's listener)."""
    return dict(redis.Redis.from_url(redis_url).pubsub_numsub(keys.CANCEL_CHANNEL)).get(keys.CANCEL_CHANNEL.encode(), 0)


def test_workers_still_hear_cancels_after_their_subscription_is_dropped(chat, api_url, redis_url):
    listening = cancel_listeners(redis_url)
    assert listening >= 1
    drop_pubsub_connections(redis_url)
    deadline = time.monotonic() + 30
    while cancel_listeners(redis_url) < listening:  # the listeners reconnect and subscribe again
        assert time.monotonic() < deadline, "the workers' cancel listeners did not subscribe again"
        time.sleep(0.05)
    job_id = chat({"model": TINY, "messages": user("hi"), "max_tokens": 8000}, headers=ASYNC).json()["id"]
    wait_for(api_url, job_id, {"running"})
    requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=10)
    assert wait_for(api_url, job_id, {"cancelled", "succeeded"}, timeout_s=10)["status"] == "cancelled"

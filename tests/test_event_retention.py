"""A finished job keeps its record and result for LADLE_JOB_TTL, its events only LADLE_EVENTS_TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import requests

from contracts import keys
from contracts.job_store import parse_event_id
from tests.helpers import sse_events, sse_frames, wait_for
from tests.stack import Fleet, start_fleet, stop_fleet

EVENTS_TTL_S = 3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, model_dir) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("retention"), model_dir, workers=1, events_ttl_s=EVENTS_TTL_S)
    yield fleet
    stop_fleet(fleet)


def events(fleet: Fleet, job_id: str, last_event_id: str | None = None) -> list[dict]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    url = f"{fleet.api_url}/v1/jobs/{job_id}/events"
    return sse_events(requests.get(url, headers=headers, stream=True, timeout=60))


def wait_until_gone(client: redis.Redis, key: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while client.exists(key):
        assert time.monotonic() < deadline, f"{key} never expired"
        time.sleep(0.2)


def test_after_the_events_window_the_record_stays_and_a_resume_gets_the_result(fleet):
    client = redis.Redis.from_url(fleet.settings.redis_url)
    job_id = fleet.submit(max_tokens=24, temperature=0)
    wait_for(fleet.api_url, job_id, {"succeeded"})
    frames = events(fleet, job_id)
    assert frames[0]["event"] == "started" and frames[-1]["event"] == "done"
    text = "".join(f["data"]["text"] for f in frames if f["event"] == "delta")

    events_key, record_key = keys.job_events_key(job_id), keys.job_key(job_id)
    assert 0 < client.ttl(events_key) <= EVENTS_TTL_S  # finished: kept only for resuming clients
    assert client.ttl(record_key) > EVENTS_TTL_S
    assert client.xlen(events_key) < len(frames)  # an entry holds several events

    wait_until_gone(client, events_key)
    assert {k.decode() for k in client.scan_iter(match=f"{record_key}*")} == {record_key}
    job = requests.get(f"{fleet.api_url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "succeeded"
    assert job["result"]["choices"][0]["message"]["content"] == text

    assert events(fleet, job_id, frames[2]["id"]) == [frames[-1]]  # the result, under its own ID
    assert events(fleet, job_id) == [frames[-1]]
    assert events(fleet, job_id, frames[-1]["id"]) == []  # nothing after the terminal event


def test_a_running_job_resumes_exactly_after_longer_than_the_events_window(fleet):
    job_id = fleet.submit(max_tokens=8000, n=4, temperature=0)  # ~32k tokens: runs well past the window
    url = f"{fleet.api_url}/v1/jobs/{job_id}/events"
    first = []
    with requests.get(url, stream=True, timeout=60) as response:
        for frame in sse_frames(response):
            first.append(frame)
            if len(first) == 10:
                break
    time.sleep(EVENTS_TTL_S + 1)
    assert requests.get(f"{fleet.api_url}/v1/jobs/{job_id}", timeout=10).json()["status"] == "running"
    rest = []
    with requests.get(url, headers={"Last-Event-ID": first[-1]["id"]}, stream=True, timeout=60) as response:
        for frame in sse_frames(response):
            rest.append(frame)
            if len(rest) == 10:
                requests.delete(f"{fleet.api_url}/v1/jobs/{job_id}", timeout=10)
    assert rest[-1]["event"] == "error" and rest[-1]["data"]["error"]["code"] == "cancelled"
    ids = [parse_event_id(f["id"]) for f in first + rest]
    assert ids == [(1, sequence) for sequence in range(1, len(ids) + 1)]  # every event once, in order


def test_a_last_event_id_that_is_not_an_event_id_is_a_400(fleet):
    job_id = fleet.submit(max_tokens=2)
    url = f"{fleet.api_url}/v1/jobs/{job_id}/events"
    response = requests.get(url, headers={"Last-Event-ID": "1732000000000"}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "Last-Event-ID" and error["code"] == "invalid_event_id"
    assert error["type"] == "invalid_request_error" and "1732000000000" in error["message"]

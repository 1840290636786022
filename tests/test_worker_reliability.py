"""Workers that die, jobs that outlive the visibility timeout, and jobs waiting in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers import sse_events, wait_for, wait_for_first_token
from tests.stack import Fleet, start_fleet, stop_fleet


@pytest.fixture
def fleet(tmp_path, model_dir) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path, model_dir, workers=2)
    yield fleet
    stop_fleet(fleet)


def test_a_killed_workers_job_is_delivered_again_and_completes(fleet):
    job_id = fleet.submit()
    first = wait_for_first_token(fleet.api_url, job_id)  # mid-generation
    fleet.worker_named(first).kill()
    job = wait_for(fleet.api_url, job_id, {"succeeded", "failed"}, timeout_s=60)
    assert job["status"] == "succeeded"
    assert job["worker"] != first
    assert fleet.deliveries(job_id) == 2
    frames = sse_events(requests.get(f"{fleet.api_url}/v1/jobs/{job_id}/events", stream=True, timeout=30))
    assert [f["data"]["worker"] for f in frames if f["event"] == "started"] == [first, job["worker"]]


def test_a_job_longer_than_the_visibility_timeout_runs_once(fleet):
    job_id = fleet.submit(max_tokens=8000)
    started = time.monotonic()
    job = wait_for(fleet.api_url, job_id, {"succeeded", "failed"}, timeout_s=60)
    assert time.monotonic() - started > fleet.settings.visibility_timeout_s  # outlived the timeout
    assert job["status"] == "succeeded"
    assert fleet.deliveries(job_id) == 1


def test_cancel_while_queued_never_runs(fleet):
    busy = [fleet.submit(max_tokens=8000, seed=i, temperature=1.0) for i in range(2)]
    for job_id in busy:
        wait_for(fleet.api_url, job_id, {"running"})
    queued = fleet.submit(max_tokens=5)
    cancelled = requests.delete(f"{fleet.api_url}/v1/jobs/{queued}", timeout=10).json()
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    for job_id in busy:
        requests.delete(f"{fleet.api_url}/v1/jobs/{job_id}", timeout=10)
    for job_id in busy:
        wait_for(fleet.api_url, job_id, {"cancelled"})
    time.sleep(1)  # the queued message has been taken by a worker by now; it must not run
    job = requests.get(f"{fleet.api_url}/v1/jobs/{queued}", timeout=10).json()
    assert job["status"] == "cancelled" and job["started_at"] is None and job["result"] is None


def test_a_job_that_keeps_killing_workers_fails_instead_of_looping(tmp_path, model_dir):
    fleet = start_fleet(tmp_path, model_dir, workers=2, max_deliveries=1)
    try:
        job_id = fleet.submit()
        running = wait_for(fleet.api_url, job_id, {"running"})
        fleet.worker_named(running["worker"]).kill()
        job = wait_for(fleet.api_url, job_id, {"succeeded", "failed"}, timeout_s=60)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "worker_lost"
    finally:
        stop_fleet(fleet)

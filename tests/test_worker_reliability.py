"""Workers that die, jobs that outlive the visibility timeout, and jobs waiting in Redis."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis
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
    started = [f["data"]["worker"] for f in frames if f["event"] == "started"]
    # Delivered to the other worker while this one was frozen; on a loaded machine a late lease
    # renewal can bring it back once more, so the newest delivery, whichever it is, owns the record.
    assert started[:1] == [first] and started[1] != first and len(started) == fleet.deliveries(job_id)
    assert job["worker"] == started[-1]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.1)


def test_a_frozen_worker_whose_job_went_elsewhere_warns_once_and_writes_nothing(fleet):
    """Frozen past the visibility timeout, a worker's job is delivered to the other one; thawed, it
    goes on generating, Redis refuses its writes (older Stream IDs, an older delivery's end), and it
    says so once, as a warning naming the job, instead of an error per write."""
    job_id = fleet.submit()
    first = wait_for_first_token(fleet.api_url, job_id)
    frozen = fleet.worker_named(first)
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: fleet.deliveries(job_id) == 2, "the job's second delivery")
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    warning = f"job {job_id} was delivered again to another worker"
    wait_until(lambda: warning in frozen.log_path.read_text(), "the thawed worker's warning")
    job = wait_for(fleet.api_url, job_id, {"succeeded", "failed"}, timeout_s=60)
    assert job["status"] == "succeeded"
    log = frozen.log_path.read_text()
    assert log.count(warning) == 1
    assert "WARNING" in log.split(warning)[0].splitlines()[-1]
    assert " ERROR " not in log, log
    frames = sse_events(requests.get(f"{fleet.api_url}/v1/jobs/{job_id}/events", stream=True, timeout=30))
    started = [f["data"]["worker"] for f in frames if f["event"] == "started"]
    # Delivered to the other worker while this one was frozen; on a loaded machine a late lease
    # renewal can bring it back once more, so the newest delivery, whichever it is, owns the record.
    assert started[:1] == [first] and started[1] != first and len(started) == fleet.deliveries(job_id)
    assert job["worker"] == started[-1]
    assert [f["event"] for f in frames].count("done") == 1


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
    # The queued job's message is taken by a worker, which must not run it, and acknowledged.
    client = redis.Redis.from_url(fleet.settings.redis_url)
    wait_until(
        lambda: not any(client.scan_iter("ladle.*")) and not client.hlen("unacked"),  # Celery's queues: empty
        "every queued message taken and acknowledged",
    )
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

"""A worker stopped with SIGTERM drains: running jobs finish within LADLE_DRAIN_S, the rest go back
to the queue at once, where another worker takes them without waiting for the visibility timeout."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from cli.embedded_redis import EmbeddedRedis
from contracts import keys
from contracts.settings import Settings
from tests.helpers import ASYNC, TINY, sse_events, user, wait_for
from tests.stack import ApiServer, WorkerProcess

# Far beyond every wait below: a job that only came back through the visibility timeout would
# fail these tests instead of passing slowly.
VISIBILITY_TIMEOUT_S = 300
# Bound on the hand-back and on a drained worker's exit; correctness, not speed (well under the above).
BOUND_S = 90


class DrainFleet:
    """A private Redis, the API and compute workers started on demand (each may get its own env)."""

    def __init__(self, tmp_path, model_dir, drain_s: float) -> None:
        self.tmp_path = tmp_path
        self.redis = EmbeddedRedis(tmp_path / "redis", persist=False)
        self.settings = Settings(
            redis_url=self.redis.start(),
            model_dir=model_dir,
            heartbeat_s=0.3,
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
            worker_concurrency=1,
            intra_op_threads=1,  # two workers share the two cores
            max_batch_rows=1,  # one decoding row per worker; a second admitted job waits in the engine
            sync_timeout_s=60,
            drain_s=drain_s,
        )
        self.workers: list[WorkerProcess] = []
        self.api = ApiServer(self.settings)
        self.client = redis.Redis.from_url(self.settings.redis_url)

    def add_worker(self, **env: str) -> WorkerProcess:
        worker = WorkerProcess(self.settings, self.tmp_path / f"worker{len(self.workers)}.log", env=env)
        self.workers.append(worker)
        return worker

    def worker_named(self, name: str) -> WorkerProcess:
        return next(w for w in self.workers if w.name == name)

    def submit(self, **body) -> str:
        body = {"model": TINY, "messages": user("hi"), **body}
        response = requests.post(f"{self.api.url}/v1/chat/completions", json=body, headers=ASYNC, timeout=30)
        assert response.status_code == 202
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.api.url}/v1/jobs/{job_id}", timeout=10).json()

    def cancel(self, job_id: str) -> None:
        assert requests.delete(f"{self.api.url}/v1/jobs/{job_id}", timeout=10).status_code == 200

    def deliveries(self, job_id: str) -> int:
        """Deliveries that count towards LADLE_MAX_DELIVERIES (a hand-back does not)."""
        record = self.client.hmget(keys.job_key(job_id), "deliveries", "handed_back")
        return int(record[0]) - int(record[1] or 0)

    def wait_for_decoding(self, job_id: str) -> str:
        """Block until the job has produced text (it is decoding); returns the worker running it."""
        stream = requests.get(f"{self.api.url}/v1/jobs/{job_id}/events", stream=True, timeout=BOUND_S)
        for line in stream.iter_lines(decode_unicode=True):
            if line == "event: delta":
                stream.close()
                return self.job(job_id)["worker"]
        raise AssertionError(f"job {job_id} ended without producing text")

    def started_on(self, job_id: str) -> list[str]:
        """The workers that started the job, in order (from its event stream)."""
        stream = requests.get(f"{self.api.url}/v1/jobs/{job_id}/events", stream=True, timeout=30)
        return [frame["data"]["worker"] for frame in sse_events(stream) if frame["event"] == "started"]

    def stop(self) -> None:
        self.api.stop()
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


@pytest.fixture
def fleet_factory(tmp_path, model_dir) -> Iterator:
    fleets: list[DrainFleet] = []

    def make(drain_s: float) -> DrainFleet:
        fleets.append(DrainFleet(tmp_path, model_dir, drain_s))
        return fleets[-1]

    yield make
    for fleet in fleets:
        fleet.stop()


def wait_for_exit(worker: WorkerProcess) -> int:
    return worker.process.wait(timeout=BOUND_S)


def test_a_short_drain_hands_a_long_job_to_another_worker(fleet_factory):
    fleet = fleet_factory(drain_s=0.5)
    fleet.add_worker(), fleet.add_worker()
    job_id = fleet.submit(max_tokens=8000)
    stopping = fleet.worker_named(fleet.wait_for_decoding(job_id))
    stopping.process.send_signal(signal.SIGTERM)

    job = wait_for(fleet.api.url, job_id, {"succeeded", "failed"}, timeout_s=BOUND_S)
    assert job["status"] == "succeeded", job
    assert job["worker"] != stopping.name
    assert fleet.started_on(job_id) == [stopping.name, job["worker"]]
    assert fleet.deliveries(job_id) == 1  # handing back is not a lost worker: not counted
    assert wait_for_exit(stopping) == 0


def test_a_long_drain_lets_the_running_job_finish_on_the_stopping_worker(fleet_factory):
    fleet = fleet_factory(drain_s=120)
    fleet.add_worker(), fleet.add_worker()
    job_id = fleet.submit(max_tokens=1500)
    stopping = fleet.worker_named(fleet.wait_for_decoding(job_id))
    stopping.process.send_signal(signal.SIGTERM)

    job = wait_for(fleet.api.url, job_id, {"succeeded", "failed"}, timeout_s=BOUND_S)
    assert job["status"] == "succeeded", job
    assert job["worker"] == stopping.name
    assert job["result"]["usage"]["completion_tokens"] == 1500
    assert fleet.started_on(job_id) == [stopping.name]
    assert fleet.deliveries(job_id) == 1
    assert wait_for_exit(stopping) == 0  # exits once its job is done, not at the end of the drain time


def test_a_job_waiting_in_the_engine_goes_back_at_once(fleet_factory):
    """Admitted but without a decode slot: handed back at SIGTERM although the drain time is long.

    Kept, it would have run on the stopping worker once the long job freed the slot.
    """
    fleet = fleet_factory(drain_s=120)
    first = fleet.add_worker(LADLE_WORKER_CONCURRENCY="2")
    # Two rows of 8000 tokens through one slot: decoding long after the second worker is up.
    long_id = fleet.submit(max_tokens=8000, n=2)
    fleet.wait_for_decoding(long_id)  # the long job holds the decode slot
    waiting_id = fleet.submit(max_tokens=50)
    assert wait_for(fleet.api.url, waiting_id, {"running"})["worker"] == first.name
    second = fleet.add_worker()
    assert fleet.job(long_id)["status"] == "running"
    first.process.send_signal(signal.SIGTERM)

    waiting = wait_for(fleet.api.url, waiting_id, {"succeeded", "failed"}, timeout_s=BOUND_S)
    assert waiting["status"] == "succeeded", waiting
    assert waiting["worker"] == second.name
    assert fleet.started_on(waiting_id) == [first.name, second.name]
    assert fleet.deliveries(waiting_id) == 1
    # The long job is still the stopping worker's (a running job finishing within the drain time is
    # test_a_long_drain_lets_the_running_job_finish_on_the_stopping_worker); cancelled, it lets it exit.
    assert fleet.job(long_id)["worker"] == first.name
    fleet.cancel(long_id)
    long_job = wait_for(fleet.api.url, long_id, {"succeeded", "failed", "cancelled"}, timeout_s=BOUND_S)
    assert long_job["status"] == "cancelled" and long_job["worker"] == first.name, long_job
    assert fleet.started_on(long_id) == [first.name]
    assert wait_for_exit(first) == 0


def test_a_job_delivered_twice_goes_back_to_the_queue_once(fleet_factory):
    """Its message delivered again while it runs (a lease ran out): both deliveries share the running
    request, and when the drain time is over both hand it back, yet one message goes back to the
    queue, so the job runs once more rather than twice side by side. (Both deliveries carry the
    message's delivery tag: kombu holds one unacknowledged entry for them, restored once.)"""
    fleet = fleet_factory(drain_s=0.5)
    stopping = fleet.add_worker(LADLE_WORKER_CONCURRENCY="2")
    job_id = fleet.submit(max_tokens=8000)
    fleet.wait_for_decoding(job_id)
    (entry,) = fleet.client.hvals("unacked")  # kombu's copy of the running message
    message, _, queue = json.loads(entry)
    fleet.client.lpush(queue, json.dumps(message))  # what a redelivery puts back on the queue
    deadline = time.monotonic() + BOUND_S
    while fleet.client.hget(keys.job_key(job_id), "deliveries") != b"2":  # the second delivery joined
        assert time.monotonic() < deadline, "the message delivered again never started"
        time.sleep(0.05)
    stopping.process.send_signal(signal.SIGTERM)
    assert wait_for_exit(stopping) == 0

    assert fleet.client.llen(queue) == 1 and fleet.client.hlen("unacked") == 0
    assert fleet.job(job_id)["status"] == "queued"
    assert fleet.deliveries(job_id) == 0  # both deliveries were handed back, neither counts
    second = fleet.add_worker()
    job = wait_for(fleet.api.url, job_id, {"running", "succeeded", "failed"}, timeout_s=BOUND_S)
    assert job["status"] == "running" and job["worker"] == second.name, job
    assert fleet.client.llen(queue) == 0 and fleet.deliveries(job_id) == 1  # taken once, by the second worker
    fleet.cancel(job_id)  # its 8000 tokens need not be decoded to show that
    # Started by both deliveries on the stopping worker, then once by the second worker.
    assert fleet.started_on(job_id) == [stopping.name, stopping.name, second.name]

"""Ladle on Redis Sentinel: the primary is SIGKILLed mid-run and a replica takes over.

Real processes throughout: a primary, a replica, three Sentinels (quorum 2), a worker and the API
all given the Sentinel URL. Jobs submitted before the failover end (succeeded, or failed with a
visible error), never stay queued or running; requests after it succeed; cancels still reach the
worker (its pub/sub listener subscribed again on the new master). Unreachable Sentinels are a
retryable 503, and after any change of server (here a restart) jobs whose message is gone fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from celery import Celery

from api.queue.client import new_job_id
from cli.embedded_redis import EmbeddedRedis, free_port
from contracts import keys
from contracts.celery_config import celery_config
from contracts.job_store import JobStore
from contracts.jobs import JobKind, JobStatus
from contracts.queues import GENERATE_TASK, queue_for_device
from contracts.redis_connection import redis_client
from contracts.settings import Settings
from tests.helpers import ASYNC, TINY, sse_events, user
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster
from tests.stack import ApiServer, WorkerProcess

TERMINAL = {"succeeded", "failed", "cancelled"}
# Jobs long enough (tiny model) to be mid-generation when the primary dies.
LONG_TOKENS = 3000


@dataclass
class SentinelStack:
    cluster: SentinelCluster
    settings: Settings
    worker: WorkerProcess
    api: ApiServer

    @property
    def api_url(self) -> str:
        return self.api.url

    def submit(self, max_tokens: int = LONG_TOKENS) -> str:
        body = {"model": TINY, "messages": user("hi"), "max_tokens": max_tokens}
        response = requests.post(f"{self.api_url}/v1/chat/completions", json=body, headers=ASYNC, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict | None:
        """The job as GET shows it; None while Redis is switching (then the API must say 503, retryable)."""
        response = requests.get(f"{self.api_url}/v1/jobs/{job_id}", timeout=30)
        if response.status_code == 503:
            assert response.headers["Retry-After"]
            assert response.json()["error"]["code"] == "queue_unavailable"
            return None
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_jobs(self, count: int, timeout_s: float = 60) -> None:
        """Until Redis holds `count` job records."""
        client, deadline = redis_client(self.settings), time.monotonic() + timeout_s
        while len(list(client.scan_iter(match=keys.job_key("*"), _type="hash"))) < count:
            assert time.monotonic() < deadline, f"fewer than {count} jobs recorded"
            time.sleep(0.05)

    def wait_until(self, job_id: str, statuses: set[str], timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        seen = None
        while time.monotonic() < deadline:
            seen = self.job(job_id) or seen
            if seen and seen["status"] in statuses:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never reached {statuses}; last seen: {seen}")


@pytest.fixture
def stack(tmp_path, model_dir) -> Iterator[SentinelStack]:
    cluster = SentinelCluster(tmp_path / "redis")
    try:
        settings = Settings(
            redis_url=cluster.start(),
            redis_sentinel_master=MASTER_NAME,
            model_dir=model_dir,
            data_dir=tmp_path / "data",
            heartbeat_s=0.5,
            # Longer than the failover, so leases are renewed on the new master before they lapse.
            visibility_timeout_s=30,
            intra_op_threads=1,
            worker_wait_s=10,
            sync_timeout_s=120,
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        try:
            api = ApiServer(settings)
            yield SentinelStack(cluster, settings, worker, api)
            api.stop()
        finally:
            worker.stop()
    finally:
        cluster.stop()


def test_jobs_survive_the_loss_of_the_primary(stack):
    before = [stack.submit() for _ in range(4)]
    stack.wait_until(before[0], {"running"}, timeout_s=60)
    waiting = ThreadPoolExecutor(1).submit(  # a synchronous request in flight through the failover
        requests.post,
        f"{stack.api_url}/v1/chat/completions",
        json={"model": TINY, "messages": user("through"), "max_tokens": LONG_TOKENS},
        timeout=180,
    )
    stack.wait_for_jobs(len(before) + 1)  # its job is recorded
    # What was accepted is on the replica (asynchronous replication could lose the last instant's
    # writes; README says what Ladle guarantees), then the primary dies without warning.
    assert stack.cluster.replicate_now() == 1
    stack.cluster.kill_primary()
    assert stack.cluster.wait_for_failover() == stack.cluster.replica_port

    for job_id in before:
        job = stack.wait_until(job_id, TERMINAL)
        assert job["status"] in {"succeeded", "failed"}
        if job["status"] == "failed":  # allowed, but never silently: a retryable error says what happened
            assert job["error"]["code"] in {"job_lost", "queue_unavailable"} and job["error"]["message"]
        frames = sse_events(requests.get(f"{stack.api_url}/v1/jobs/{job_id}/events", stream=True, timeout=60))
        ends = [frame for frame in frames if frame["event"] in {"done", "error"}]
        assert len(ends) == 1 and frames[-1] is ends[0]

    answer = waiting.result()
    if answer.status_code == 504:  # outlived LADLE_SYNC_TIMEOUT through the failover: polled to its end
        job = stack.wait_until(answer.headers["X-Request-Id"], TERMINAL)
        assert job["status"] == "succeeded" or job["error"]["code"] in {"job_lost", "queue_unavailable"}
    elif answer.status_code != 200:  # its job lost with the old primary: a retryable error, never a 500
        assert answer.status_code == 503 and answer.json()["error"]["code"] in {"job_lost", "queue_unavailable"}

    # New work after the failover: synchronous, streamed and async requests all succeed.
    sync = requests.post(
        f"{stack.api_url}/v1/chat/completions",
        json={"model": TINY, "messages": user("again"), "max_tokens": 8},
        timeout=120,
    )
    assert sync.status_code == 200, sync.text
    assert sync.json()["object"] == "chat.completion"
    streamed = requests.post(
        f"{stack.api_url}/v1/chat/completions",
        json={"model": TINY, "messages": user("again"), "max_tokens": 8, "stream": True},
        stream=True,
        timeout=120,
    )
    assert streamed.status_code == 200
    assert [line for line in streamed.iter_lines(decode_unicode=True) if line][-1] == "data: [DONE]"
    after = stack.submit(max_tokens=16)
    assert stack.wait_until(after, TERMINAL)["status"] == "succeeded"

    # A cancel reaches the decode loop: once tokens flow, only the worker's pub/sub subscription
    # (made again on the new master) can carry it there.
    cancelled = stack.submit(max_tokens=8000)
    events = requests.get(f"{stack.api_url}/v1/jobs/{cancelled}/events", stream=True, timeout=60)
    assert next(line for line in events.iter_lines(decode_unicode=True) if line == "event: delta")
    events.close()
    assert requests.delete(f"{stack.api_url}/v1/jobs/{cancelled}", timeout=30).status_code == 200
    assert stack.wait_until(cancelled, TERMINAL, timeout_s=60)["status"] == "cancelled"


def test_unreachable_sentinels_are_a_retryable_503(tmp_path, model_dir):
    nobody = ";".join(f"sentinel://127.0.0.1:{free_port()}" for _ in range(2))
    settings = Settings(redis_url=nobody, redis_sentinel_master=MASTER_NAME, model_dir=model_dir, worker_wait_s=1)
    api = ApiServer(settings)
    try:
        for response in (
            requests.get(f"{api.url}/v1/jobs/0123456789abcdef", timeout=60),
            requests.post(f"{api.url}/v1/chat/completions", json={"model": TINY, "messages": user("hi")}, timeout=60),
        ):
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            error = response.json()["error"]
            assert error["code"] == "queue_unavailable" and error["type"] == "service_unavailable"
    finally:
        api.stop()


def _a_lost_job_and_a_waiting_one(settings: Settings) -> tuple[JobStore, str, str]:
    """Two queued jobs: `lost` recorded with its message nowhere (never sent, or taken and gone),
    `waiting` with its message in a queue no worker consumes."""
    store = JobStore(redis_client(settings), settings.job_ttl_s)
    producer = Celery("test-producer")
    producer.conf.update(celery_config(settings))
    lost, waiting = new_job_id(), new_job_id()
    store.create([lost, waiting], JobKind.CHAT, TINY)
    payload = {"job_id": waiting, "model": TINY, "messages": user("hi")}
    producer.send_task(GENERATE_TASK, args=[payload], queue=queue_for_device("cuda:7"), task_id=waiting)
    return store, lost, waiting


def _assert_only_the_lost_one_fails(store: JobStore, lost: str, waiting: str) -> None:
    deadline = time.monotonic() + 60
    while (record := store.get(lost)).status != JobStatus.FAILED:
        assert time.monotonic() < deadline, f"the lost job was never failed: {record}"
        time.sleep(0.1)
    assert record.error["code"] == "job_lost" and record.error["status"] == 503
    assert store.get(waiting).status == JobStatus.QUEUED  # its message is in a queue: not lost


def test_after_the_server_changes_only_jobs_without_a_message_fail_as_lost(tmp_path, model_dir):
    server = EmbeddedRedis(tmp_path / "redis", persist=True)
    settings = Settings(redis_url=server.start(), model_dir=model_dir, heartbeat_s=0.3, intra_op_threads=1)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        store, lost, waiting = _a_lost_job_and_a_waiting_one(settings)
        server.stop()
        server.start()  # the same data (AOF), a new server: its run ID differs
        _assert_only_the_lost_one_fails(store, lost, waiting)
    finally:
        worker.stop()
        server.stop()


def test_a_job_queued_without_its_message_fails_as_lost_on_the_periodic_sweep(tmp_path, model_dir):
    """No server change: a consumer cut off after Redis answered its BRPOP loses the message with
    the connection. The periodic sweep (LADLE_LOST_JOB_SWEEP_S) finds the job queued past a period
    with its message nowhere and fails it, leaving a job whose message waits in a queue alone."""
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    settings = Settings(
        redis_url=server.start(), model_dir=model_dir, heartbeat_s=0.3, intra_op_threads=1, lost_job_sweep_s=1.0
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        store, lost, waiting = _a_lost_job_and_a_waiting_one(settings)
        _assert_only_the_lost_one_fails(store, lost, waiting)
        assert "failed jobs whose queue message was lost" in worker.log_path.read_text()
    finally:
        worker.stop()
        server.stop()

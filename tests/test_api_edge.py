"""The API as deployed (gunicorn + gevent, api/gunicorn_config.py): a thousand open streams on one
process while other requests still answer, the drain on SIGTERM, and the /health and /ready probes.

Streams are held the honest way: the compute worker is paused (SIGSTOP) while jobs queue, so
every stream really waits on a queued job; resumed (SIGCONT), the worker runs them all and each
stream receives its job's events to the end.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests

from cli.embedded_redis import EmbeddedRedis
from contracts import keys
from contracts.settings import Settings
from tests.held_streams import HeldStream, HeldStreams, get_request, post_request, raise_open_files_limit
from tests.helpers import MINILM, TINY, user
from tests.stack import GunicornApi, WorkerProcess

ASYNC = {"Prefer": "respond-async"}
# 100 queued async jobs with 9 followers each, plus 100 streamed chat requests: 1,000 streams.
ASYNC_JOBS = 100
FOLLOWERS_PER_JOB = 9
CHAT_STREAMS = 100


@pytest.fixture(scope="module")
def edge_settings(model_dir: Path, tmp_path_factory) -> Iterator[Settings]:
    """A private Redis: no other test's worker may take the jobs queued here."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("edge-redis"), persist=False)
    url = server.start()
    yield Settings(
        redis_url=url,
        catalog_dir=tmp_path_factory.mktemp("edge-catalog"),
        data_dir=tmp_path_factory.mktemp("edge-data"),
        model_dir=model_dir,
        worker_wait_s=2,
        sync_timeout_s=300,
        # The worker is paused while jobs queue: its last heartbeat must outlive the pause, and
        # the jobs it holds must not be handed out again meanwhile.
        heartbeat_s=20,
        visibility_timeout_s=600,
        drain_s=60,
    )
    server.stop()


@pytest.fixture(scope="module")
def edge_worker(edge_settings: Settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    process = WorkerProcess(edge_settings, tmp_path_factory.mktemp("edge-logs") / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def edge_api(edge_settings: Settings, edge_worker: WorkerProcess, tmp_path_factory) -> Iterator[GunicornApi]:
    api = GunicornApi(edge_settings, tmp_path_factory.mktemp("edge-logs") / "api.log")
    yield api
    api.stop()


@contextmanager
def paused(worker: WorkerProcess) -> Iterator[None]:
    """The worker stopped by SIGSTOP (it takes no job) until the block ends (SIGCONT)."""
    worker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        worker.process.send_signal(signal.SIGCONT)


def submit_async(session: requests.Session, url: str) -> str:
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 2}
    response = session.post(f"{url}/v1/chat/completions", json=body, headers=ASYNC, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def chat_stream_request() -> bytes:
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 2, "stream": True}
    return post_request("/v1/chat/completions", body)


def job_records(settings: Settings) -> int:
    """Job records in Redis (hashes `ladle:job:{id}`), queued or not."""
    client = redis.Redis.from_url(settings.redis_url)
    return sum(1 for _ in client.scan_iter(match="ladle:job:*", _type="HASH", count=1000))


def wait_for_records(settings: Settings, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while job_records(settings) < count:
        assert time.monotonic() < deadline, f"only {job_records(settings)} of {count} jobs were recorded"
        time.sleep(0.2)


def refuses_connections(port: int, timeout_s: float = 30) -> bool:
    """Whether connecting to the port is refused within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.1)
    return False


def event_types(stream: HeldStream) -> list[str]:
    return [frame["event"] for frame in stream.sse_frames()]


def assert_followed_to_done(stream: HeldStream) -> None:
    assert stream.status == 200
    kinds = event_types(stream)
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    assert set(kinds[1:-1]) <= {"delta"}


def assert_chat_stream_complete(stream: HeldStream) -> None:
    assert stream.status == 200
    data = [frame["data"] for frame in stream.sse_frames()]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_one_process_holds_a_thousand_streams_and_still_answers(edge_settings, edge_api, edge_worker):
    raise_open_files_limit(ASYNC_JOBS * FOLLOWERS_PER_JOB + CHAT_STREAMS + 512)
    session = requests.Session()
    crowd = HeldStreams("127.0.0.1", edge_api.port)
    records_before = job_records(edge_settings)
    try:
        with paused(edge_worker):
            job_ids = [submit_async(session, edge_api.url) for _ in range(ASYNC_JOBS)]
            followers = {
                job_id: [crowd.open(get_request(f"/v1/jobs/{job_id}/events")) for _ in range(FOLLOWERS_PER_JOB)]
                for job_id in job_ids
            }
            chats = [crowd.open(chat_stream_request()) for _ in range(CHAT_STREAMS)]
            # Every follower's stream is open (its headers came), every chat request waits on its
            # recorded job, and nothing has ended.
            every_follower = [stream for streams in followers.values() for stream in streams]
            assert crowd.pump(lambda: all(stream.has_headers for stream in every_follower), 120)
            wait_for_records(edge_settings, records_before + ASYNC_JOBS + CHAT_STREAMS)
            assert crowd.count(lambda stream: stream.closed) == 0
            assert len(crowd.streams) == ASYNC_JOBS * FOLLOWERS_PER_JOB + CHAT_STREAMS

            # With all of them open, the same process answers other requests.
            assert session.get(f"{edge_api.url}/health", timeout=30).json() == {"status": "ok"}
            models = session.get(f"{edge_api.url}/v1/models", timeout=30).json()
            assert TINY in {model["id"] for model in models["data"]}
            cancelled = job_ids[0]
            response = session.delete(f"{edge_api.url}/v1/jobs/{cancelled}", timeout=30)
            assert response.status_code == 200 and response.json()["status"] == "cancelled"
            # The cancelled job's followers receive its error and end; the others stay open.
            assert crowd.pump(lambda: all(stream.closed for stream in followers[cancelled]), 60)
            assert crowd.count(lambda stream: stream.closed) == FOLLOWERS_PER_JOB
        # The worker resumes: every held stream receives its job's events to the end.
        assert crowd.pump(lambda: all(stream.closed for stream in crowd.streams), 300)
    finally:
        crowd.close()
    for stream in followers[cancelled]:
        assert stream.status == 200 and event_types(stream) == ["error"]
        assert json.loads(stream.sse_frames()[0]["data"])["error"]["code"] == "cancelled"
    for job_id in job_ids[1:]:
        for stream in followers[job_id]:
            assert_followed_to_done(stream)
    for stream in chats:
        assert_chat_stream_complete(stream)


def test_sigterm_lets_open_streams_finish_and_refuses_new_connections(edge_settings, edge_api, edge_worker, tmp_path):
    draining = GunicornApi(edge_settings, tmp_path / "draining-api.log")
    crowd = HeldStreams("127.0.0.1", draining.port)
    try:
        with paused(edge_worker):
            records_before = job_records(edge_settings)
            job_id = submit_async(requests.Session(), edge_api.url)
            follower = crowd.open(get_request(f"/v1/jobs/{job_id}/events"))
            chat = crowd.open(chat_stream_request())
            assert crowd.pump(lambda: follower.has_headers, 60)
            wait_for_records(edge_settings, records_before + 2)

            draining.terminate()
            assert refuses_connections(draining.port)
            # Both streams wait on queued jobs, so the process is still draining.
            assert draining.process.poll() is None
            assert not follower.closed and not chat.closed
        assert crowd.pump(lambda: follower.closed and chat.closed, 120)
        assert draining.process.wait(timeout=60) == 0
    finally:
        crowd.close()
        draining.stop()
    assert_followed_to_done(follower)
    assert_chat_stream_complete(chat)


def test_streams_still_open_after_ladle_drain_s_are_closed(edge_settings, edge_api, edge_worker, tmp_path):
    short_drain = GunicornApi(edge_settings.with_overrides(drain_s=1.0), tmp_path / "short-drain-api.log")
    crowd = HeldStreams("127.0.0.1", short_drain.port)
    try:
        with paused(edge_worker):
            job_id = submit_async(requests.Session(), edge_api.url)
            follower = crowd.open(get_request(f"/v1/jobs/{job_id}/events"))
            assert crowd.pump(lambda: follower.has_headers, 60)
            short_drain.terminate()
            # Its job stays queued, so only the end of the drain can close the stream.
            assert crowd.pump(lambda: follower.closed, 60)
            assert short_drain.process.wait(timeout=60) == 0
    finally:
        crowd.close()
        short_drain.stop()
    assert follower.status == 200 and event_types(follower) == []


def test_embedding_requests_arriving_together_share_a_bundle_under_gevent(edge_settings, edge_worker, tmp_path):
    # The bundler's leader waits on a condition for others to join: under gevent that wait must
    # let the other requests' greenlets run, or every request would travel alone.
    gathering = GunicornApi(edge_settings.with_overrides(embedding_window_ms=300), tmp_path / "gathering-api.log")
    crowd = HeldStreams("127.0.0.1", gathering.port)
    try:
        requests_sent = [
            crowd.open(post_request("/v1/embeddings", {"model": MINILM, "input": f"text {i}"})) for i in range(16)
        ]
        assert crowd.pump(lambda: all(stream.closed for stream in requests_sent), 120)
    finally:
        crowd.close()
        gathering.stop()
    assert [stream.status for stream in requests_sent] == [200] * 16
    assert all(len(json.loads(stream.body)["data"][0]["embedding"]) == 384 for stream in requests_sent)
    client = redis.Redis.from_url(edge_settings.redis_url)
    job_ids = [stream.headers["x-request-id"] for stream in requests_sent]
    tasks = {client.hget(keys.job_key(job_id), "task") for job_id in job_ids}
    assert len(set(job_ids)) == 16 and len(tasks) < 16


def test_health_and_ready(model_dir: Path, tmp_path: Path):
    redis_server = EmbeddedRedis(tmp_path / "redis", persist=False)
    settings = Settings(
        redis_url=redis_server.start(),
        catalog_dir=tmp_path / "catalog",
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        heartbeat_s=0.5,
    )
    api = GunicornApi(settings, tmp_path / "api.log")
    worker = None
    try:
        health = requests.get(f"{api.url}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        not_ready = requests.get(f"{api.url}/ready", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "no_worker"
        assert not_ready.json()["error"]["type"] == "service_unavailable"
        assert "compute worker" in not_ready.json()["error"]["message"]

        worker = WorkerProcess(settings, tmp_path / "worker.log")
        ready = requests.get(f"{api.url}/ready", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ok"}

        redis_server.stop()
        no_redis = requests.get(f"{api.url}/ready", timeout=30)
        assert no_redis.status_code == 503
        assert no_redis.json()["error"]["code"] == "queue_unavailable"
        assert "Redis" in no_redis.json()["error"]["message"]
        # The process itself is up.
        assert requests.get(f"{api.url}/health", timeout=10).json() == {"status": "ok"}
    finally:
        if worker is not None:
            worker.kill()
            worker.log.close()
        api.stop()
        redis_server.stop()

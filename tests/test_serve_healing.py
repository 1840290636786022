"""`ladle serve` heals itself: a child killed with SIGKILL (as the OOM killer does) is started
again, its jobs are delivered again and succeed; SIGTERM stops everything and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cli.embedded_redis import free_port
from tests.helpers import ASYNC, TINY, sse_events, user, wait_for, wait_for_first_token
from tests.stack import ROOT

# Bound for a restart and for jobs to finish after one (correctness, not speed).
BOUND_S = 120


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class Serve:
    """`ladle serve` as a subprocess: private data dir and port, short heartbeats and leases."""

    def __init__(self, tmp_path: Path, model_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LADLE_REDIS_URL")}
        env.update(
            LADLE_PORT=str(self.port),
            LADLE_DATA_DIR=str(tmp_path / "data"),
            LADLE_MODEL_DIR=str(model_dir),
            LADLE_HEARTBEAT_S="0.3",
            LADLE_VISIBILITY_TIMEOUT="3",
            LADLE_INTRA_OP_THREADS="1",
            LADLE_WORKER_WAIT="60",  # requests sent while a worker restarts wait for it
            LADLE_DRAIN_S="5",
            PYTHONPATH=str(ROOT),
        )
        self.log = open(tmp_path / "serve.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.wait_until_answering()

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + BOUND_S
        while True:
            try:
                body = {"model": TINY, "messages": user("hi"), "max_tokens": 3}
                if requests.post(f"{self.url}/v1/chat/completions", json=body, timeout=30).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.process.poll() is None, "ladle serve exited"
            assert time.monotonic() < deadline, "ladle serve did not answer in time"
            time.sleep(0.5)

    def descendants(self) -> dict[int, str]:
        """Every process under `ladle serve` (pid -> command line)."""
        found, todo = {}, [self.process.pid]
        while todo:
            for child in _children(todo.pop()):
                found[child] = _cmdline(child)
                todo.append(child)
        return found

    def child_pid(self, marker: str) -> int:
        return next(pid for pid, command in self.descendants().items() if marker in command)

    def workers(self) -> list[dict]:
        return requests.get(f"{self.url}/openai/status", timeout=10).json()["Workers"]

    def compute_worker(self, other_than: int | None = None) -> dict:
        """The live compute worker (waits for one whose pid is not `other_than`)."""
        deadline = time.monotonic() + BOUND_S
        while True:
            found = [w for w in self.workers() if w["lane"] == "compute" and w["pid"] != other_than]
            if found:
                return found[0]
            assert time.monotonic() < deadline, "no compute worker came back"
            time.sleep(0.2)

    def submit(self, **body) -> str:
        request = {"model": TINY, "messages": user("hi"), **body}
        response = requests.post(f"{self.url}/v1/chat/completions", json=request, headers=ASYNC, timeout=30)
        assert response.status_code == 202
        return response.json()["id"]

    def stop(self) -> int:
        """SIGTERM, wait for the exit; returns its code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=BOUND_S)
        finally:
            self.log.close()


@pytest.fixture
def serve(tmp_path, model_dir) -> Iterator[Serve]:
    running = Serve(tmp_path, model_dir)
    yield running
    if running.process.poll() is None:  # the test failed before stopping it
        leftovers = running.descendants()
        running.process.kill()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_stops_cleanly(serve: Serve) -> None:
    children = serve.descendants()
    assert len(children) >= 5  # redis, compute, light and downloads workers, the API
    assert serve.stop() == 0
    still_running = {pid: command for pid, command in children.items() if _cmdline(pid) == command}
    assert still_running == {}


def test_a_killed_compute_worker_is_restarted_and_its_jobs_succeed(serve):
    worker = serve.compute_worker()
    job_ids = [serve.submit(max_tokens=1500, seed=i, temperature=1.0) for i in range(3)]
    for job_id in job_ids:
        # Its first token seen: the job's events (its "started" among them) are stored, not only
        # queued in the worker's publisher when the kill comes.
        assert wait_for_first_token(serve.url, job_id) == worker["name"]
    os.kill(worker["pid"], signal.SIGKILL)

    assert requests.get(f"{serve.url}/v1/jobs/{job_ids[0]}", timeout=10).status_code == 200  # the API answers
    restarted = serve.compute_worker(other_than=worker["pid"])  # a new heartbeat, a new process
    for job_id in job_ids:
        job = wait_for(serve.url, job_id, {"succeeded", "failed"}, timeout_s=BOUND_S)
        assert job["status"] == "succeeded", job
        assert job["worker"] == restarted["name"]
        frames = sse_events(requests.get(f"{serve.url}/v1/jobs/{job_id}/events", stream=True, timeout=30))
        assert [f["data"]["worker"] for f in frames if f["event"] == "started"] == [worker["name"], restarted["name"]]
    assert_stops_cleanly(serve)


def test_a_killed_embedded_redis_comes_back_with_the_job_records(serve):
    job_id = serve.submit(max_tokens=5)
    assert wait_for(serve.url, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    time.sleep(1.5)  # Redis writes its append-only file to disk every second
    redis_pid = serve.child_pid("redis-server")
    os.kill(redis_pid, signal.SIGKILL)

    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            response = requests.get(f"{serve.url}/v1/jobs/{job_id}", timeout=10)
            if response.status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the job record did not come back"
        time.sleep(0.5)
    job = response.json()
    assert job["status"] == "succeeded" and job["result"]["usage"]["completion_tokens"] == 5
    assert serve.child_pid("redis-server") != redis_pid
    # The workers reconnected: a new job runs.
    after = serve.submit(max_tokens=4)
    assert wait_for(serve.url, after, {"succeeded", "failed"}, timeout_s=BOUND_S)["status"] == "succeeded"
    assert_stops_cleanly(serve)

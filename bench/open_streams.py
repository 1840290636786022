"""Idle SSE streams one API process holds, and what they cost it, in steps of N open streams.

    python bench/open_streams.py                          # steps 250 500 1000 2000
    python bench/open_streams.py --steps 50 100 --peer-gthread 50

Starts a private Redis and the API the way `ladle serve` runs it: gunicorn with
api/gunicorn_config.py (one gevent worker process). The streams are `GET /v1/jobs/{id}/events`
of job records no worker takes (the records are written straight into Redis, so no worker is
needed): each stays open and quiet, the way a client following a queued job waits. At each step
it prints the streams held (headers received, still open), p50/p99 of two plain requests made
while they are open (`GET /health`, and `GET /v1/jobs/{id}`, which reads Redis through the same
pool the streams use), the API process's RSS per stream (RSS growth since no stream was open,
divided by N, from /proc), its CPU while idle, and the Redis connections it holds. Baseline: the
same plain requests before any stream is open (the ×p50 column). `--peer-gthread N` also runs the
previous deployment (gunicorn gthread, 128 threads) with N streams: how many it holds.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from ladle_process import ROOT, percentile

from cli.embedded_redis import EmbeddedRedis, free_port
from contracts.job_store import JobStore
from contracts.jobs import JobKind
from tests.held_streams import HeldStreams, get_request, raise_open_files_limit

GEVENT_COMMAND = ["-c", "python:api.gunicorn_config"]
GTHREAD_COMMAND = ["--worker-class", "gthread", "--threads", "128", "--timeout", "0"]
PLAIN_REQUESTS = 200
IDLE_CPU_WINDOW_S = 5.0


class ApiProcess:
    """gunicorn serving the API on a free port, with the given worker options."""

    def __init__(self, options: list[str], redis_url: str, model_dir: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "LADLE_REDIS_URL": redis_url, "LADLE_MODEL_DIR": str(model_dir), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{self.port}"]
        # A session of its own: `stop` can then end the worker too, should the arbiter die first.
        self.process = subprocess.Popen(
            [*command, "api.app:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(200):
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the API did not come up")

    def get(self, path: str, timeout_s: float = 30) -> tuple[int, float]:
        """Status and seconds of one GET on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status, time.perf_counter() - started
        finally:
            connection.close()

    @property
    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.worker_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.worker_pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # quick shutdown: open streams are not drained
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # gthread's worker waits for its busy threads (streams with no timeout) and outlives the
        # arbiter: end every process of the session.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def plain_latencies(api: ApiProcess, path: str) -> tuple[list[float], int]:
    """Seconds of PLAIN_REQUESTS GETs of `path`, and how many failed or timed out (it gives up after 5)."""
    seconds, failed = [], 0
    for _ in range(PLAIN_REQUESTS):
        if failed >= 5:
            break
        try:
            status, elapsed = api.get(path, timeout_s=5)
        except OSError:
            failed += 1
            continue
        if status == 200:
            seconds.append(elapsed)
        else:
            failed += 1
    return seconds, failed


def redis_connections(client: redis.Redis) -> int:
    return len(client.client_list()) - 1  # not this one


def run(name: str, options: list[str], steps: list[int], redis_url: str, model_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, 3600)
    job_ids = [os.urandom(16).hex() for _ in range(max(steps))]
    store.create(job_ids, JobKind.CHAT, "no-such-model")  # queued records nobody will run
    api = ApiProcess(options, redis_url, model_dir)
    crowd = HeldStreams("127.0.0.1", api.port)
    try:
        plain_path = f"/v1/jobs/{job_ids[0]}"
        for path in ("/health", plain_path, "/health", plain_path):  # warm up
            plain_latencies(api, path)
        health, _ = plain_latencies(api, "/health")
        record, _ = plain_latencies(api, plain_path)
        base = {"/health": percentile(health, 0.5), "jobs": percentile(record, 0.5)}
        rss0 = api.rss_kib()
        print(f"\n{name}: no stream open: /health p50 {base['/health'] * 1e3:.2f} ms, ", end="")
        print(f"GET /v1/jobs/{{id}} p50 {base['jobs'] * 1e3:.2f} ms, RSS {rss0 / 1024:.1f} MiB")
        header = f"{'streams':>8} {'held':>6} {'/health p50/p99 ms':>19} {'×p50':>6} {'jobs/{id} p50/p99 ms':>21}"
        print(header + f" {'×p50':>6} {'fail':>5} {'KiB/stream':>10} {'idle CPU':>8} {'redis conns':>11}")
        for n in steps:
            for job_id in job_ids[len(crowd.streams) : n]:
                crowd.open(get_request(f"/v1/jobs/{job_id}/events"))
            crowd.pump(lambda: all(s.has_headers or s.closed for s in crowd.streams), 30)
            held = crowd.count(lambda s: s.has_headers and not s.closed)
            cpu_before = api.cpu_s()
            time.sleep(IDLE_CPU_WINDOW_S)
            idle_cpu = (api.cpu_s() - cpu_before) / IDLE_CPU_WINDOW_S
            health, health_failed = plain_latencies(api, "/health")
            record, record_failed = plain_latencies(api, plain_path)
            per_stream = (api.rss_kib() - rss0) / n

            def cell(values: list[float], key: str) -> str:
                if not values:
                    return f"{'-':>19} {'-':>6}"
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                return f"{p50 * 1e3:>9.2f}/{p99 * 1e3:<9.2f} {p50 / base[key]:>6.2f}"

            failed, connections = health_failed + record_failed, redis_connections(client)
            print(
                f"{n:>8} {held:>6} {cell(health, '/health')} {cell(record, 'jobs'):>28} "
                f"{failed:>5} {per_stream:>10.1f} {idle_cpu:>7.0%} {connections:>11}"
            )
    finally:
        crowd.close()
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--peer-gthread", type=int, default=0, metavar="N", help="also run gthread with N streams")
    args = parser.parse_args()
    raise_open_files_limit(max([*args.steps, args.peer_gthread]) + 1024)
    with tempfile.TemporaryDirectory() as scratch:
        redis_server = EmbeddedRedis(Path(scratch) / "redis", persist=False)
        redis_url = redis_server.start()
        model_dir = Path(scratch) / "models"
        model_dir.mkdir()
        try:
            run("gunicorn + gevent (api/gunicorn_config.py)", GEVENT_COMMAND, args.steps, redis_url, model_dir)
            if args.peer_gthread:
                run("peer: gunicorn gthread, 128 threads", GTHREAD_COMMAND, [args.peer_gthread], redis_url, model_dir)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()

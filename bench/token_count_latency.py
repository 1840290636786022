"""Token-count job round trip through Ladle vs a raw Celery no-op task round trip, in one run.

    python bench/token_count_latency.py [--requests 300] [--rounds 5]

Ladle: POST /v1/chat/completions/tokenizer/encode/count (HTTP, job record, light-lane Celery
worker, tokenizer, pub/sub back). Baseline: `send_task(noop).get()` against the same Redis with
a Celery threads worker and Redis result backend — the floor any Celery round trip pays.

Ladle's client is a keep-alive `http.client` connection, the leanest HTTP client at hand (the
baseline's client is Celery's own); the same requests through `requests.Session` are timed too,
since that library alone adds 0.5-1.5 ms a call.

The sides take turns in rounds, each a block of sequential requests, so that the machine's drift
falls on all of them alike. Each side's CPU per round trip is printed too: this process (the
client: HTTP for Ladle, the Celery producer and result reader for the no-op) plus the servers
(`ladle serve` and its children, or the no-op worker) and Redis, less what the servers use idle.
On a machine shared with other work it moves far less than the latencies do.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
from celery import Celery
from ladle_process import ROOT, ladle_serve, percentile, tree_cpu_s

from cli.model_build import build_model
from contracts.settings import Settings

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many tokens is this?"}]


def noop_app(redis_url: str) -> Celery:
    app = Celery("bench-noop", broker=redis_url, backend=redis_url)
    app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

    @app.task(name="bench.noop")
    def noop() -> None:
        return None

    return app


def timed(call, count: int, server_pids: list[int], idle_s: float = 1.0) -> tuple[list[float], float]:
    """Each call's milliseconds, and the CPU ms per call of this process and `server_pids` (with their
    children), less what the servers use idle (heartbeats, polling: measured for `idle_s` first)."""
    idle_before = tree_cpu_s(server_pids)
    time.sleep(idle_s)
    idle_rate = (tree_cpu_s(server_pids) - idle_before) / idle_s
    times = []
    cpu_before, wall_before = time.process_time() + tree_cpu_s(server_pids), time.perf_counter()
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    busy = time.process_time() + tree_cpu_s(server_pids) - cpu_before - idle_rate * (time.perf_counter() - wall_before)
    return times, 1000 * busy / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    build_model(MODEL, args.model_dir)
    session = requests.Session()
    body = {"model": MODEL, "messages": MESSAGES}
    path = "/v1/chat/completions/tokenizer/encode/count"

    def ready(api_url: str) -> None:
        requests.post(f"{api_url}{path}", json=body, timeout=30).raise_for_status()

    def count() -> None:
        if connection.sock is None or idle_since[0] and time.monotonic() - idle_since[0] > 1:
            connection.close()  # the server closes keep-alive connections idle for seconds (other sides' turns)
        idle_since[0] = time.monotonic()
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"token count failed: HTTP {response.status}")

    def count_with_requests() -> None:
        session.post(f"{url}{path}", json=body, timeout=30).raise_for_status()

    idle_since = [0.0]  # when count() last ran
    pids: list[int] = []
    with ladle_serve(args.model_dir, ready, pids=pids) as (url, redis_url):
        address = urlparse(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                f"from token_count_latency import noop_app; noop_app({redis_url!r}).worker_main("
                "['worker', '--pool', 'threads', '--concurrency', '4', '--loglevel', 'WARNING', '--without-gossip', "
                "'--without-mingle', '--without-heartbeat'])",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        app = noop_app(redis_url)
        sides = {
            "Ladle token-count job (http.client)": (count, pids),
            "Ladle token-count job (requests)": (count_with_requests, pids),
            "raw Celery no-op task": (lambda: app.send_task("bench.noop").get(timeout=30), [worker.pid, pids[1]]),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        rounds: list[dict[str, float]] = []  # each round's p50 per side
        try:
            app.send_task("bench.noop").get(timeout=60)
            # Rounds take turns, so that the machine's drift (other tenants, clock speed) falls on
            # every side alike.
            for _ in range(args.rounds):
                medians = {}
                for name, (call, servers) in sides.items():
                    took, cpu_ms = timed(call, args.requests, servers)
                    times[name] += took
                    cpu[name].append(cpu_ms)
                    medians[name] = percentile(took, 0.5)
                rounds.append(medians)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    ladle, with_requests, celery = sides
    print(f"round trips, {args.rounds} rounds of {args.requests} sequential requests each, ms")
    print(f"{'':40}{'p50':>8}{'p99':>8}{'CPU ms':>8}")
    for name in sides:
        cpu_ms = statistics.median(cpu[name])
        print(f"{name:40}{percentile(times[name], 0.5):8.2f}{percentile(times[name], 0.99):8.2f}{cpu_ms:8.2f}")
    per_round = ", ".join(f"x{r[ladle] / r[celery]:.2f}" for r in rounds)
    print(f"Ladle/Celery p50 by round: {per_round}")
    print(
        f"Ladle/Celery p50: x{percentile(times[ladle], 0.5) / percentile(times[celery], 0.5):.2f}, "
        f"p99: x{percentile(times[ladle], 0.99) / percentile(times[celery], 0.99):.2f}, "
        f"CPU per round trip: x{statistics.median(cpu[ladle]) / statistics.median(cpu[celery]):.2f}; "
        f"with requests p50: x{percentile(times[with_requests], 0.5) / percentile(times[celery], 0.5):.2f}"
    )


if __name__ == "__main__":
    main()

"""How much of a fleet one Redis carries: Ladle's own Lua scripts against a private redis-server.

    python bench/redis_capacity.py [--jobs 400] [--tokens 200] [--clients 4] [--pipeline 32] [--no-aof]

Starts a private redis-server (AOF `everysec`, as `ladle serve` runs it; `--no-aof` for none) and:
1. Baseline: redis-benchmark's PING and a plain XADD, then EVALSHA of the job store's `_EMIT`
   (one token's delta event: XADD + EXPIRE + PUBLISH) and `_START`, all from redis-benchmark so
   the client is never the limit. Prints each script's ops/s and its ratio to PING and XADD.
2. Ladle's client path: `--clients` processes play workers, each running `--jobs` jobs through
   `contracts.job_store.JobStore` exactly as a worker does (create, start, `--tokens` delta
   events in pipelines of `--pipeline` like the event publisher, finish). Prints tokens/s, Redis
   commands per token (from INFO commandstats: round trips, and every command scripts run), and
   memory per job and per retained token (INFO used_memory; kept for LADLE_JOB_TTL).
Needs redis-server (and redis-benchmark for part 1) on PATH; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.embedded_redis import EmbeddedRedis  # noqa: E402
from contracts import keys  # noqa: E402
from contracts.job_store import _EMIT, _START, JobStore  # noqa: E402
from contracts.jobs import Choice, DeltaEvent, DoneEvent, GenerationResult, JobKind, JobStatus, Usage  # noqa: E402

DELTA = DeltaEvent(index=0, text=" the").model_dump_json()


def benchmark_ops(port: int, requests: int, *command: str) -> float:
    """redis-benchmark's requests/s for one command (8 connections, pipelines of 16, random keys)."""
    output = subprocess.run(
        [
            "redis-benchmark",
            "-p",
            str(port),
            "-n",
            str(requests),
            "-c",
            "8",
            "-P",
            "16",
            "-r",
            "100000",
            "-q",
            *command,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"([\d.]+) requests per second", output)
    return float(found[-1]) if found else float("nan")


def server_ceiling(port: int, requests: int) -> None:
    client = redis.Redis(port=port)
    emit_sha, start_sha = client.script_load(_EMIT), client.script_load(_START)
    job = "ladle:job:__rand_int__"
    ping = benchmark_ops(port, requests, "PING")
    xadd = benchmark_ops(port, requests, "XADD", "bench:stream:__rand_int__", "*", "event", DELTA)
    emit = benchmark_ops(
        port, requests, "EVALSHA", emit_sha, "3", job, f"{job}:events", f"{job}:live", DELTA, "86400", "0"
    )
    start = benchmark_ops(
        port, requests, "EVALSHA", start_sha, "2", job, f"{job}:deliveries", str(time.time()), "w", "3", "86400"
    )
    print("server ceiling (redis-benchmark, 8 connections, pipeline 16):")
    print(f"  PING           {ping:>12,.0f} ops/s")
    print(f"  XADD           {xadd:>12,.0f} ops/s")
    print(f"  _EMIT (delta)  {emit:>12,.0f} ops/s   {emit / ping:.2f} x PING, {emit / xadd:.2f} x XADD")
    print(f"  _START         {start:>12,.0f} ops/s   {start / ping:.2f} x PING")
    client.flushall()


def run_jobs(url: str, worker: int, jobs: int, tokens: int, pipeline: int) -> int:
    """One fake worker: `jobs` jobs of `tokens` delta events each, written as a worker writes them."""
    store = JobStore(redis.Redis.from_url(url), ttl_s=86400)
    usage = Usage(prompt_tokens=8, completion_tokens=tokens, total_tokens=8 + tokens)
    result = GenerationResult(choices=[Choice(index=0, text=" the" * tokens, finish_reason="length")], usage=usage)
    for n in range(jobs):
        job_id = f"bench-{worker}-{n}"
        store.create([job_id], JobKind.CHAT, "bench-model")
        store.start([job_id], f"bench-worker-{worker}", 3)
        for first in range(0, tokens, pipeline):
            pipe = store.client.pipeline(transaction=False)
            for _ in range(first, min(tokens, first + pipeline)):
                store.emit(job_id, DeltaEvent.model_validate_json(DELTA), client=pipe)
            pipe.execute()
        store.finish(job_id, DoneEvent(result=result), JobStatus.SUCCEEDED)
    return jobs * tokens


def commands(client: redis.Redis) -> tuple[int, int]:
    """(script calls, every command the server ran, those inside scripts included) since the reset."""
    stats = client.info("commandstats")
    scripts = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))
    return scripts, sum(v["calls"] for v in stats.values())


def job_bytes(client: redis.Redis, job_id: str) -> int:
    """Bytes the keys of one job take (MEMORY USAGE, exact: every element counted)."""
    names = [keys.job_key(job_id), keys.job_events_key(job_id), keys.job_deliveries_key(job_id)]
    return sum(client.memory_usage(name, samples=0) or 0 for name in names)


def client_path(url: str, args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(url)
    # A job without tokens: the fixed cost of a job (record, delivery counter, terminal event).
    run_jobs(url, 999, 1, 0, args.pipeline)
    per_job = job_bytes(client, "bench-999-0")
    client.config_resetstat()
    memory_before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    with multiprocessing.Pool(args.clients) as pool:
        work = [(url, w, args.jobs, args.tokens, args.pipeline) for w in range(args.clients)]
        total_tokens = sum(pool.starmap(run_jobs, work))
    elapsed = time.perf_counter() - started
    jobs = args.clients * args.jobs
    memory = client.info("memory")["used_memory"] - memory_before
    scripts, all_commands = commands(client)
    # The text is kept three times: one delta per token in the Stream, and the whole text in the
    # record's result and in the terminal event.
    per_token = (job_bytes(client, "bench-0-0") - per_job) / args.tokens
    shape = f"{args.clients} processes, {jobs} jobs of {args.tokens} tokens, pipeline {args.pipeline}"
    print(f"Ladle's client path ({shape}):")
    print(f"  tokens/s              {total_tokens / elapsed:>12,.0f}   (client-bound when the clients share the cores)")
    print(f"  script calls per token{scripts / total_tokens:>12.2f}   (EVALSHA of _EMIT/_START)")
    print(f"  commands per token    {all_commands / total_tokens:>12.2f}   (every command, those inside scripts too)")
    print(f"  memory per job        {per_job:>12,.0f} B   (record, delivery counter, terminal event; MEMORY USAGE)")
    print(f"  memory per token kept {per_token:>12,.0f} B   (delta event, and the text in result and done event)")
    print(f"  used_memory per token {memory / total_tokens:>12,.0f} B   (whole server, allocator overhead included)")
    print(f"  keys after the run    {client.dbsize():>12,}   ({keys.PREFIX}:job:* records, streams, counters)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs per client process")
    parser.add_argument("--tokens", type=int, default=200, help="delta events per job")
    parser.add_argument("--clients", type=int, default=4, help="client processes (fake workers)")
    parser.add_argument("--pipeline", type=int, default=32, help="events per pipeline (the publisher's batch)")
    parser.add_argument("--requests", type=int, default=200_000, help="requests per redis-benchmark run")
    parser.add_argument("--no-aof", action="store_true", help="no append-only file (default: everysec, as served)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder), persist=not args.no_aof)
        url = server.start()
        try:
            print(f"redis-server {redis.Redis.from_url(url).info('server')['redis_version']}, AOF {not args.no_aof}")
            if shutil.which("redis-benchmark"):
                server_ceiling(server.port, args.requests)
            else:
                print("redis-benchmark not on PATH (Debian: redis-tools); server ceiling skipped")
            client_path(url, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

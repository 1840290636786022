"""How much of a fleet one Redis carries: the job-event writes Ladle's workers send, against a private redis-server.

    python bench/redis_capacity.py [--jobs 96] [--tokens 200] [--rows 1 8] [--subscribers 1] [--requests 200000]
        [--memory-tokens 1000] [--no-aof]

Starts a private redis-server (AOF `everysec`, as `ladle serve` runs it; `--no-aof` for none) and:
1. Server ceiling, from redis-benchmark (so the client is never the limit): PING, a plain XADD,
   one engine step's PUBLISH on the job-events channel (1 and 8 rows' delta events in one
   message, `--subscribers` redis-cli processes subscribed to it as API processes are), and
   EVALSHA of the job store's `_FINISH` on a new job each time (the whole script: HSETNX, HSET,
   XADD, EXPIRE, PUBLISH).
2. The worker's write path, for each `--rows` (rows decoded together per engine step): `--jobs`
   jobs of `--tokens` delta events each, in groups of `rows`, written by the real `JobStore`
   (create, `start`) and `EventPublisher` (one write per engine step: one PUBLISH for all rows,
   the job's Stream chunks, then the terminal event through `_FINISH`). Steps are written back to
   back, so a chunk closes at CHUNK_EVENTS events or before the terminal event; an engine slower
   than one step per CHUNK_AGE_S / CHUNK_EVENTS adds one XADD per job per CHUNK_AGE_S. Prints
   tokens/s and step writes/s from this one client (round-trip bound), Redis commands per token
   (INFO commandstats: every command, those inside scripts too), and Redis's main-thread CPU time
   per token (INFO cpu: socket I/O and the append-only file included), whose inverse is the
   tokens/s one Redis core carries on this path.
   Then `_START` and `_FINISH` alone, pipelined as a worker sends them (EVAL): ops/s and µs each.
3. Memory (MEMORY USAGE of a job's keys, a `--memory-tokens` job against one without tokens; a
   Stream's first node takes a few KB whatever it holds, so a short job's cost is per job): per
   job and per token while the job's events are kept (LADLE_EVENTS_TTL after it ends), and after
   that window (the Stream expired: only the record, with the result, remains for LADLE_JOB_TTL).
Needs redis-server (and redis-benchmark for part 1) on PATH. Figures vary with load: run it on a
quiet machine for figures to plan with.
"""

from __future__ import annotations

import argparse
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
from contracts.events import Choice, DeltaEvent, DoneEvent, GenerationResult, StartedEvent, Usage
from contracts.job_store import _FINISH, JobStore, live_lines  # noqa: E402
from contracts.jobs import JobKind, JobStatus
from worker.runtime.event_publisher import EventPublisher, _Outgoing  # noqa: E402

TOKEN = " the"
DELTA = DeltaEvent(index=0, text=TOKEN).model_dump_json()
# How many scripts one pipelined round trip carries in the `_START` / `_FINISH` runs.
SCRIPT_PIPELINE = 64


def benchmark_ops(port: int, requests: int, *command: str) -> float:
    """redis-benchmark's requests/s for one command (8 connections, pipelines of 16, random keys)."""
    output = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-n", str(requests), "-c", "8", "-P", "16"]
        + ["-r", "100000000", "-q", *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"([\d.]+) requests per second", output)
    return float(found[-1]) if found else float("nan")


def step_message(rows: int) -> str:
    """One engine step's announcement: a delta event for each of `rows` jobs."""
    return live_lines([(f"bench-job-{row}", f"1-{100 + row}", DELTA) for row in range(rows)])


def server_ceiling(port: int, requests: int) -> None:
    client = redis.Redis(port=port)
    finish_sha = client.script_load(_FINISH)
    result = GenerationResult(choices=[Choice(index=0, text=TOKEN * 100, finish_reason="length")], usage=_usage(100))
    done = DoneEvent(result=result)
    job = f"{keys.PREFIX}:job:bench-__rand_int__"
    ping = benchmark_ops(port, requests, "PING")
    xadd = benchmark_ops(port, requests, "XADD", "bench:stream:__rand_int__", "*", "events", DELTA)
    publish_1 = benchmark_ops(port, requests, "PUBLISH", keys.JOB_EVENTS_CHANNEL, step_message(1))
    publish_8 = benchmark_ops(port, requests, "PUBLISH", keys.JOB_EVENTS_CHANNEL, step_message(8))
    finish_args = ["300", str(time.time()), keys.JOB_EVENTS_CHANNEL, done.model_dump_json(), "succeeded", "result"]
    finish_args += [result.model_dump_json(), "1-101", "bench-job", "", ""]
    finish = benchmark_ops(port, requests, "EVALSHA", finish_sha, "2", job, f"{job}:events", *finish_args)
    print("server ceiling (redis-benchmark, 8 connections, pipelines of 16):")
    print(f"  PING                     {ping:>12,.0f} ops/s")
    print(f"  XADD                     {xadd:>12,.0f} ops/s")
    print(f"  PUBLISH, step of 1 row   {publish_1:>12,.0f} ops/s   {publish_1 / ping:.2f} x PING")
    print(f"  PUBLISH, step of 8 rows  {publish_8:>12,.0f} ops/s   = {8 * publish_8:,.0f} tokens/s announced")
    # Redis drops a subscriber whose unread output passes client-output-buffer-limit (pubsub).
    subscribed = client.pubsub_numsub(keys.JOB_EVENTS_CHANNEL)[0][1]
    print(f"  subscribers left         {subscribed:>12}   (a slow one is dropped past its output buffer limit)")
    print(f"  EVALSHA _FINISH          {finish:>12,.0f} ops/s   {finish / xadd:.2f} x XADD (100-token result)")
    client.flushall()  # a private server


def _usage(tokens: int) -> Usage:
    return Usage(prompt_tokens=8, completion_tokens=tokens, total_tokens=8 + tokens)


def main_thread_cpu(client: redis.Redis) -> float:
    """CPU seconds (user + system) Redis's main thread, the one running commands, has used."""
    cpu = client.info("cpu")
    return cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """(calls, µs) of each command since the last reset, those run inside scripts included."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for name, v in stats.items()}


def run_group(store: JobStore, publisher: EventPublisher, group: list[str], tokens: int) -> tuple[int, float]:
    """Run `group`'s jobs as one batch, a delta event per row per step; (steps written, seconds in step writes)."""
    store.create(group, JobKind.CHAT, "bench-model")  # the API's write
    deliveries = [start.deliveries for start in store.start(group, "bench-worker", 3)]
    # One `_write` per engine step, as the publisher's thread does when steps come slower than a
    # round trip (driven directly: its thread would merge steps queued faster than that).
    publisher._write([_Outgoing(job_id, delivery=count) for job_id, count in zip(group, deliveries, strict=True)])
    publisher._write([_Outgoing(job_id, StartedEvent(worker="bench-worker")) for job_id in group])
    delta = DeltaEvent.model_validate_json(DELTA)
    in_steps = 0.0
    for _ in range(tokens):
        started = time.perf_counter()
        publisher._write([_Outgoing(job_id, delta) for job_id in group])
        in_steps += time.perf_counter() - started
    result = GenerationResult(
        choices=[Choice(index=0, text=TOKEN * tokens, finish_reason="length")],
        usage=_usage(tokens),
        batch_size=len(group),
    )
    publisher._write([_Outgoing(job_id, DoneEvent(result=result), JobStatus.SUCCEEDED) for job_id in group])
    return tokens, in_steps


def write_path(client: redis.Redis, rows: int, args: argparse.Namespace) -> None:
    store = JobStore(client, ttl_s=86400, events_ttl_s=300)
    publisher = EventPublisher(store)
    groups = max(1, args.jobs // rows)
    client.config_resetstat()
    cpu_before = main_thread_cpu(client)
    started = time.perf_counter()
    steps, in_steps = 0, 0.0
    for g in range(groups):
        group = [f"bench-r{rows}-{g}-{row}" for row in range(rows)]
        group_steps, group_time = run_group(store, publisher, group, args.tokens)
        steps, in_steps = steps + group_steps, in_steps + group_time
    elapsed = time.perf_counter() - started
    publisher.close()
    cpu = main_thread_cpu(client) - cpu_before
    stats = command_stats(client)
    tokens = groups * rows * args.tokens
    commands = sum(calls for calls, _ in stats.values())
    scripts = stats.get("eval", (0, 0))[0] + stats.get("evalsha", (0, 0))[0]
    usec = stats.get("eval", (0, 0))[1] + stats.get("evalsha", (0, 0))[1]
    usec += sum(u for name, (_, u) in stats.items() if name not in ("eval", "evalsha", "config|resetstat", "info"))
    print(f"worker write path, {rows} row(s) per step ({groups * rows} jobs of {args.tokens} tokens, one client):")
    print(f"  tokens/s                 {tokens / elapsed:>12,.0f}   (client-bound: one round trip per step)")
    print(f"  step writes/s            {steps / in_steps:>12,.0f}   (PUBLISH of the step, chunk XADDs when due)")
    print(f"  commands per token       {commands / tokens:>12.3f}   (every command, those inside scripts too)")
    print(f"  scripts per token        {scripts / tokens:>12.3f}   (_START and _FINISH, once per job)")
    print(f"  Redis µs per token       {usec / tokens:>12.2f}   (commandstats: in commands only)")
    print(f"  Redis CPU µs per token   {cpu * 1e6 / tokens:>12.2f}   (main thread: I/O and AOF included)")
    print(f"  tokens/s one Redis core  {tokens / cpu:>12,.0f}   (its inverse: the ceiling of this path)")
    top = sorted(((calls, name) for name, (calls, _) in stats.items() if name != "info"), reverse=True)
    print("  commands                 " + ", ".join(f"{name} {calls / tokens:.3f}" for calls, name in top[:8]))


def scripts_alone(client: redis.Redis, jobs: int) -> None:
    """`_START` then `_FINISH` over `jobs` new jobs, pipelined as a worker sends them."""
    store = JobStore(client, ttl_s=86400, events_ttl_s=300)
    ids = [f"bench-script-{n}" for n in range(jobs)]
    for first in range(0, jobs, SCRIPT_PIPELINE):
        store.create(ids[first : first + SCRIPT_PIPELINE], JobKind.CHAT, "bench-model")
    result = GenerationResult(choices=[Choice(index=0, text=TOKEN * 100, finish_reason="length")], usage=_usage(100))
    done = DoneEvent(result=result)
    print(f"scripts alone (pipelines of {SCRIPT_PIPELINE}, EVAL, one client, {jobs} jobs):")
    for name in ("_START", "_FINISH"):
        client.config_resetstat()
        started = time.perf_counter()
        for first in range(0, jobs, SCRIPT_PIPELINE):
            chunk = ids[first : first + SCRIPT_PIPELINE]
            if name == "_START":
                store.start(chunk, "bench-worker", 3)
            else:
                pipe = client.pipeline(transaction=False)
                for job_id in chunk:
                    store.finish(job_id, done, JobStatus.SUCCEEDED, client=pipe, event_id="1-101")
                pipe.execute()
        elapsed = time.perf_counter() - started
        calls, usec = command_stats(client).get("eval", (0, 0))
        print(
            f"  {name:<8}  {jobs / elapsed:>10,.0f} ops/s from this client"
            f"   {usec / max(calls, 1):>6.1f} µs in Redis each"
        )


def job_bytes(client: redis.Redis, job_id: str) -> tuple[int, int]:
    """(record bytes, event Stream bytes) of one job (MEMORY USAGE, every element counted)."""
    record = client.memory_usage(keys.job_key(job_id), samples=0) or 0
    return record, client.memory_usage(keys.job_events_key(job_id), samples=0) or 0


def memory(client: redis.Redis, args: argparse.Namespace) -> None:
    store = JobStore(client, ttl_s=86400, events_ttl_s=300)
    publisher = EventPublisher(store)
    run_group(store, publisher, ["bench-mem-empty"], 0)
    run_group(store, publisher, ["bench-mem-full"], args.memory_tokens)
    publisher.close()
    empty_record, empty_stream = job_bytes(client, "bench-mem-empty")
    full_record, full_stream = job_bytes(client, "bench-mem-full")
    during = (full_record + full_stream - empty_record - empty_stream) / args.memory_tokens
    after = (full_record - empty_record) / args.memory_tokens
    print(f"memory (MEMORY USAGE of a job's keys; {args.memory_tokens}-token job against a job without tokens):")
    print(
        f"  per job, events window   {empty_record + empty_stream:>12,} B"
        "   (record + Stream with started and done events)"
    )
    print(
        f"  per token, events window {during:>12.0f} B   (delta events in Stream chunks, text in result and done event)"
    )
    print(f"  per job, after it        {empty_record:>12,} B   (the record only, 1 key)")
    print(f"  per token, after it      {after:>12.0f} B   (the result's text in the record)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=96, help="jobs per rows-per-step value")
    parser.add_argument("--tokens", type=int, default=200, help="delta events per job")
    # A Stream's first node holds a few KB whatever it holds: a short job's slope would be ~0.
    parser.add_argument("--memory-tokens", type=int, default=1000, help="delta events of the job measured for memory")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8], help="rows decoded together per engine step")
    parser.add_argument("--subscribers", type=int, default=1, help="subscribers to the job-events channel")
    parser.add_argument("--requests", type=int, default=200_000, help="requests per redis-benchmark run")
    parser.add_argument("--no-aof", action="store_true", help="no append-only file (default: everysec, as served)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder), persist=not args.no_aof)
        url = server.start()
        subscribers = []
        try:
            client = redis.Redis.from_url(url)
            # Each API process holds one subscription to the job-events channel; Redis writes every
            # step's message to each of them.
            for _ in range(args.subscribers if shutil.which("redis-cli") else 0):
                command = ["redis-cli", "-p", str(server.port), "SUBSCRIBE", keys.JOB_EVENTS_CHANNEL]
                subscribers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            print(f"subscribers to {keys.JOB_EVENTS_CHANNEL}: {len(subscribers)}")
            print(f"redis-server {client.info('server')['redis_version']}, AOF {not args.no_aof}")
            if shutil.which("redis-benchmark"):
                server_ceiling(server.port, args.requests)
            else:
                print("redis-benchmark not on PATH (Debian: redis-tools); server ceiling skipped")
            for rows in args.rows:
                write_path(client, rows, args)
            scripts_alone(client, max(args.jobs, SCRIPT_PIPELINE))
            memory(client, args)
        finally:
            for subscriber in subscribers:
                subscriber.terminate()
                subscriber.wait()
            server.stop()


if __name__ == "__main__":
    main()

"""The faults, one scenario each: inject while the workload runs, hold, heal.

Each scenario's `run(fleet, rng)` blocks from injection to heal and returns what it did (target,
timings, measurements). Every wait here is bounded.
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from bench.chaos.fleet import CLOCK_WORKER, COMPUTE_WORKERS, PROXIED_WORKER, REDIS_HOSTS, REDIS_PORT, Fleet
from bench.chaos.workload import chat_body

log = logging.getLogger(__name__)

VISIBILITY_S = 6  # fleet_settings' visibility timeout
FAILOVER_TIMEOUT_S = 30
DEMOTION_TIMEOUT_S = 30
# Commands that change data: the ones an old primary must not run once it has lost its role.
# Commands that change data, as counted by INFO commandstats. Scripts (eval, evalsha, fcall) are
# not: their calls count even when they only read or their writes are refused (NOREPLICAS), and
# the commands a script runs are counted under their own names.
WRITE_COMMANDS = frozenset(
    "set setex psetex del unlink hset hsetnx hmset hdel hincrby incr incrby decr expire pexpire pexpireat "
    "xadd xtrim xdel lpush rpush lpop rpop lrem lmove blmove brpop blpop rpoplpush brpoplpush "
    "zadd zrem zincrby zremrangebyscore zremrangebyrank sadd srem".split()
)


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    run: Callable[[Fleet, random.Random], dict]
    # No worker is lost for longer than the visibility timeout: no job may be delivered twice.
    single_delivery: bool = False


def _busy_worker(fleet: Fleet, rng: random.Random, names: list[str], timeout_s: float = 10.0) -> str:
    """One of `names` that runs jobs now (so the fault hits work in flight), else any of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = [name for name in names if fleet.active_jobs(name) > 0]
        if busy or time.monotonic() > deadline:
            return rng.choice(busy or names)
        time.sleep(0.1)


def _baseline(fleet: Fleet, rng: random.Random) -> dict:
    return {"fault": "none"}


def _partition_worker(hold_s: float) -> Callable[[Fleet, random.Random], dict]:
    def run(fleet: Fleet, rng: random.Random) -> dict:
        name = _busy_worker(fleet, rng, [w for w in COMPUTE_WORKERS if w != PROXIED_WORKER])
        host = fleet.host(name)
        fleet.network.isolate(host)
        time.sleep(hold_s)
        fleet.network.rejoin(host)
        return {"fault": "link down", "target": name, "worker": fleet.parts[name].worker_name, "held_s": hold_s}

    return run


def _slow_link(fleet: Fleet, rng: random.Random) -> dict:
    hold_s = 20.0
    fleet.proxy.set(delay_s=0.2, loss=0.05)
    chunks, lost = fleet.proxy.chunks, fleet.proxy.lost
    time.sleep(hold_s)
    fleet.proxy.set()
    return {
        "fault": "fault proxy: +200 ms towards Redis, 5% of chunks wait a retransmission timeout",
        "target": PROXIED_WORKER,
        "held_s": hold_s,
        "chunks": fleet.proxy.chunks - chunks,
        "chunks_lost": fleet.proxy.lost - lost,
    }


def _partition_api(fleet: Fleet, rng: random.Random) -> dict:
    hold_s = 10.0
    name = rng.choice(["api-0", "api-1"])
    redis_hosts = [fleet.host(n) for n in (*REDIS_HOSTS, "sent-0", "sent-1", "sent-2")]
    url = next(u for u in fleet.api_urls() if fleet.host(name).address in u)
    fleet.network.cut(fleet.host(name), redis_hosts)  # clients still reach it; it no longer reaches Redis
    cut_at = time.monotonic()
    # New requests to the cut-off host while it is cut off: what do they get, and when?
    with ThreadPoolExecutor(2) as pool:
        asking = [
            pool.submit(_ask, f"{url}/v1/chat/completions", chat_body("cut-off", 2), cut_at, hold_s + 60),
            pool.submit(_ask, f"{url}/v1/jobs/0123456789abcdef", None, cut_at, hold_s + 60),
        ]
        time.sleep(max(0.0, hold_s - (time.monotonic() - cut_at)))
        fleet.network.mend(fleet.host(name), redis_hosts)
        asked = [future.result() for future in asking]
    return {
        "fault": "blackhole routes between the API host and every Redis host",
        "target": name,
        "held_s": hold_s,
        "requests_while_cut_off": asked,
    }


def _ask(url: str, body: dict | None, cut_at: float, timeout_s: float) -> dict:
    """One request (GET, or POST of `body`): its status, error code, and how long it took."""
    began = time.monotonic()
    try:
        if body is None:
            response = requests.get(url, timeout=timeout_s)
        else:
            response = requests.post(url, json=body, timeout=timeout_s)
        answer = {"status": response.status_code, "code": (response.json().get("error") or {}).get("code")}
    except (requests.RequestException, ValueError, AttributeError) as error:
        answer = {"status": None, "code": repr(error)[:200]}
    elapsed = round(time.monotonic() - began, 2)
    return {"url": url, **answer, "asked_at_s": round(began - cut_at, 2), "answered_after_s": elapsed}


def _redis_cli(fleet: Fleet, host_name: str, *command: str) -> str:
    """redis-cli inside the host (its loopback: reachable while the host is cut off)."""
    prefix = fleet.host(host_name).exec_prefix()
    done = subprocess.run(
        [*prefix, "redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), *command],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout


def _writes(fleet: Fleet, host_name: str) -> tuple[str, Counter]:
    """The server's role and how many data-changing commands it has run, by command."""
    role = "unknown"
    for line in _redis_cli(fleet, host_name, "info", "replication").splitlines():
        if line.startswith("role:"):
            role = line.split(":", 1)[1].strip()
    calls: Counter = Counter()
    for line in _redis_cli(fleet, host_name, "info", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_") :].partition(":")
            if name.split("|")[0] in WRITE_COMMANDS:
                calls[name] = int(dict(p.split("=") for p in stats.split(","))["calls"])
    return role, calls


def _partition_primary(fleet: Fleet, rng: random.Random) -> dict:
    hold_after_failover_s = 5.0
    address = fleet.master_address()
    name = fleet.redis_host(address).name
    fleet.network.isolate(fleet.host(name))
    isolated_at = time.monotonic()
    _, writes_before = _writes(fleet, name)
    promoted, failover_s = None, None
    while time.monotonic() - isolated_at < FAILOVER_TIMEOUT_S:
        current = fleet.master_address()
        if current and current != address:
            promoted, failover_s = current, time.monotonic() - isolated_at
            break
        time.sleep(0.2)
    time.sleep(hold_after_failover_s)
    _, writes_isolated = _writes(fleet, name)
    fleet.network.rejoin(fleet.host(name))
    healed_at = time.monotonic()
    role, writes_as_master, demoted_s = "master", writes_isolated, None
    while time.monotonic() - healed_at < DEMOTION_TIMEOUT_S:
        role, writes = _writes(fleet, name)
        if role != "master":
            demoted_s = time.monotonic() - healed_at
            break
        writes_as_master = writes
        time.sleep(0.05)
    return {
        "fault": "link down on the primary's host",
        "target": name,
        "failover_s": failover_s,
        "promoted": promoted,
        "old_primary_demoted_s": demoted_s,
        "old_primary_role": role,
        # Writes the old primary ran after it was cut off (while isolated, then after the heal
        # until the Sentinels demoted it): each one lost when it resynchronised from the new master.
        "old_primary_writes_while_isolated": (writes_isolated - writes_before).total(),
        "old_primary_writes_after_heal": (writes_as_master - writes_isolated).total(),
        "checks": [
            (
                "the old primary took no writes once cut off",
                not (writes_as_master - writes_before) and demoted_s is not None,
                [f"{count} {name}" for name, count in (writes_as_master - writes_before).items()],
            )
        ],
    }


def _freeze_worker(fleet: Fleet, rng: random.Random) -> dict:
    hold_s = VISIBILITY_S + 4.0
    name = _busy_worker(fleet, rng, list(COMPUTE_WORKERS))
    part = fleet.parts[name]
    part.signal(signal.SIGSTOP)
    try:
        time.sleep(hold_s)
    finally:
        part.signal(signal.SIGCONT)
    return {"fault": "SIGSTOP, then SIGCONT", "target": name, "worker": part.worker_name, "held_s": hold_s}


def _clock_step(fleet: Fleet, rng: random.Random) -> dict:
    step_s = 5 * VISIBILITY_S
    hold_s = 15.0
    fleet.clock_file.write_text(f"{step_s}\n")
    time.sleep(hold_s)
    fleet.clock_file.write_text("0\n")
    return {
        "fault": f"wall clock stepped +{step_s} s, stepped back after {hold_s} s (monotonic clock untouched)",
        "mechanism": "time.time replaced in the worker process (bench/chaos/stepped_clock/sitecustomize.py)",
        "target": CLOCK_WORKER,
        "worker": fleet.parts[CLOCK_WORKER].worker_name,
        "held_s": hold_s,
    }


SCENARIOS = [
    Scenario("baseline", "no fault: the reference answers", _baseline, single_delivery=True),
    Scenario(
        "worker-partition-long",
        "a worker cut off from Redis for twice the visibility timeout",
        _partition_worker(2 * VISIBILITY_S),
    ),
    Scenario(
        "worker-partition-short",
        "a worker cut off from Redis for half the visibility timeout",
        _partition_worker(VISIBILITY_S / 2),
        single_delivery=True,
    ),
    Scenario(
        "worker-slow-link",
        "200 ms delay and 5% loss on a worker's path to Redis",
        _slow_link,
        single_delivery=True,
    ),
    Scenario("api-partition", "an API host cut off from Redis while it holds streams", _partition_api),
    Scenario("primary-partition", "the Redis primary cut off from everyone (failover), then back", _partition_primary),
    Scenario("worker-freeze", "a worker frozen (SIGSTOP) past the visibility timeout, then thawed", _freeze_worker),
    Scenario(
        "clock-step",
        "one worker's clock stepped forward past the visibility timeout",
        _clock_step,
        single_delivery=True,
    ),
]

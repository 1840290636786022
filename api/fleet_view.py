"""What the fleet looks like now, read from Redis: workers, queue depths, recent jobs, downloads,
batches, models; and how it looked over the last minutes (samples the status page charts).

The status page streams it (`GET /v1/fleet/events`) and the metrics collector reads the same
figures at scrape time, so both always agree.

Every API process runs a sampler that, every SAMPLE_S seconds, records a sample in Redis (one
process per interval: the first to claim it), so every process serves the same history and a page
opened now shows the past at once. A sample holds gauges read then (queue depths, jobs running)
and rates computed from the fleet's counters (contracts/fleet_metrics.py) over the last
RATE_WINDOW_S: tokens generated per second, jobs ended per minute, time-to-first-token percentiles.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

from api.queue.client import JobClient
from contracts import fleet_metrics, keys
from contracts.batches import BatchRecord, BatchStore
from contracts.job_store import JobRecord, JobStore
from contracts.jobs import JobKind
from contracts.model_directory import ModelDirectory
from contracts.workers import WorkerInfo

log = logging.getLogger(__name__)

# How long a worker whose heartbeat stopped is still shown (as down) before it is forgotten.
DOWN_SHOWN_S = 600.0
# Batches a snapshot lists (the viewer's newest), found among at most the newest BATCHES_SCANNED:
# the index keeps expired and other keys' batches too, and a snapshot is read every second.
RECENT_BATCHES = 10
BATCHES_SCANNED = 200

# One sample every SAMPLE_S seconds, kept HISTORY_S: a bounded list (MAX_SAMPLES) that expires
# when no process samples any more.
SAMPLE_S = 2.0
HISTORY_S = 900.0
MAX_SAMPLES = int(HISTORY_S / SAMPLE_S)
# Counters move only when jobs end (and workers write them once per heartbeat): over one sample
# interval they are mostly zeros and spikes, so rates and percentiles are read over this window.
RATE_WINDOW_S = 30.0
# The counters at each recent sample: enough to reach back one window.
COUNTERS_KEPT = int(RATE_WINDOW_S / SAMPLE_S) + 2
HISTORY_KEY = f"{keys.PREFIX}:fleet:history"
COUNTERS_KEY = f"{keys.PREFIX}:fleet:history:counters"
QUANTILES = {"p50": 0.5, "p95": 0.95}


def queue_depths(client: redis.Redis, workers: list[WorkerInfo]) -> dict[str, int]:
    """Messages waiting in each queue a live worker consumes (one round trip)."""
    queues = sorted({queue for w in workers for queue in w.queues})
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    return dict(zip(queues, pipe.execute(), strict=True))


def down_workers(client: redis.Redis, live: list[WorkerInfo]) -> list[str]:
    """Workers that sent a heartbeat in the last DOWN_SHOWN_S seconds but are no longer alive."""
    recent = client.zrangebyscore(keys.WORKERS_INDEX, time.time() - DOWN_SHOWN_S, "+inf")
    alive = {w.name for w in live}
    return sorted(name.decode() for name in recent if name.decode() not in alive)


def job_summary(record: JobRecord) -> dict:
    """A job as the status page lists it (no result: it can be large)."""
    return {
        "id": record.job_id,
        "kind": record.kind,
        "model": record.model,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker": record.worker,
        "error": record.error.get("message") if record.error else None,
        "progress": record.progress,
    }


def recent_batches(batches: BatchStore, viewer: str | None, limit: int = RECENT_BATCHES) -> list[dict]:
    """The newest batches `viewer` may see (all without API keys), as OpenAI's Batch objects."""
    found: list[BatchRecord] = []
    for start in range(0, BATCHES_SCANNED, 2 * limit):
        found_ids = batches.client.zrevrange(keys.BATCHES_INDEX, start, start + 2 * limit - 1)
        ids = [i.decode() if isinstance(i, bytes) else i for i in found_ids]
        found += [r for r in batches.get_many(ids) if r is not None and r.visible_to(viewer)]
        if len(found) >= limit or len(ids) < 2 * limit:
            break
    return [r.to_object() for r in found[:limit]]


def model_kinds(models: ModelDirectory) -> list[dict]:
    """The usable models and their kind (generation or embedding): the chat box offers only the first."""
    return [{"id": name, "kind": kind} for name, kind in models.kinds().items()]


def snapshot(
    jobs: JobClient,
    store: JobStore,
    models: ModelDirectory,
    batches: BatchStore,
    recent: int = 50,
    viewer: str | None = None,
) -> dict:
    """Workers (live and recently down), queue depths, the newest jobs, unfinished downloads, the
    newest batches and the models; with a `viewer` (an API key's ID), only the jobs and batches that
    key may see: its own and shared ones."""
    workers = jobs.live_workers()
    records = [r for r in store.recent(recent) if viewer is None or r.owner in (None, viewer)]
    listed = [job_summary(record) for record in records]
    return {
        "time": time.time(),
        "workers": [w.model_dump(exclude_none=True) for w in sorted(workers, key=lambda w: w.name)],
        "down_workers": down_workers(store.client, workers),
        "queues": queue_depths(store.client, workers),
        "jobs": listed,
        "downloads": [job for job in listed if job["kind"] == JobKind.DOWNLOAD.value],
        "batches": recent_batches(batches, viewer),
        "models": model_kinds(models),
    }


def counters(client: redis.Redis, now: float) -> dict:
    """The fleet's cumulative counters now: tokens generated per model, jobs ended per status, and
    time-to-first-token bucket counts per model."""
    found = fleet_metrics.read(client)
    ended: dict[str, float] = {}
    for (_model, _kind, status), series in found.get(fleet_metrics.JOBS.name, {}).items():
        ended[status] = ended.get(status, 0) + series.sum
    return {
        "time": now,
        "tokens": {labels[0]: s.sum for labels, s in found.get(fleet_metrics.GENERATION_TOKENS.name, {}).items()},
        "ended": ended,
        "ttft": {labels[0]: s.buckets for labels, s in found.get(fleet_metrics.TIME_TO_FIRST_TOKEN.name, {}).items()},
    }


def _increase(now: float, then: float | None) -> float:
    """How much a counter grew; a counter lower than before was reset (Redis emptied): all of it is new."""
    return now if then is None or now < then else now - then


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The `q` quantile of a histogram's per-bucket counts (+Inf last), interpolated within its
    bucket as Prometheus' histogram_quantile does; None without observations."""
    total = sum(counts)
    if total == 0:
        return None
    rank, below = q * total, 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index == len(bounds):  # the +Inf bucket: its lower bound is all that is known
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - below) / count
        below += count
    return bounds[-1]


def build_sample(workers: list[WorkerInfo], depths: dict[str, int], now: dict, base: dict | None) -> dict:
    """A history sample: gauges now, and rates over the counters' growth since `base` (none without one)."""
    taken: dict = {
        "time": now["time"],
        "queues": depths,
        "jobs": {"queued": sum(depths.values()), "running": sum(w.active_jobs for w in workers)},
        "tokens_per_s": {},
        "ended_per_min": {},
        "ttft": {},
    }
    span = now["time"] - base["time"] if base else 0.0
    if base is None or span <= 0:
        return taken
    taken["tokens_per_s"] = {
        model: round(_increase(total, base["tokens"].get(model)) / span, 3) for model, total in now["tokens"].items()
    }
    taken["ended_per_min"] = {
        status: round(60 * _increase(total, base["ended"].get(status)) / span, 3)
        for status, total in now["ended"].items()
    }
    bounds = fleet_metrics.TIME_TO_FIRST_TOKEN.buckets
    for model, buckets in now["ttft"].items():
        before = base["ttft"].get(model)
        reset = (
            before is None or len(before) != len(buckets) or any(b < a for a, b in zip(before, buckets, strict=True))
        )
        grown = buckets if reset else [b - a for a, b in zip(before, buckets, strict=True)]
        if sum(grown):
            found = {name: quantile(bounds, grown, q) for name, q in QUANTILES.items()}
            taken["ttft"][model] = {**{k: round(v, 4) for k, v in found.items()}, "count": sum(grown)}
    return taken


def take_sample(jobs: JobClient, client: redis.Redis, now: float | None = None) -> dict | None:
    """Record the fleet's sample of this interval, unless another API process has: the sample, or None."""
    now = time.time() if now is None else now
    slot_key = f"{HISTORY_KEY}:slot:{int(now // SAMPLE_S)}"
    if not client.set(slot_key, 1, nx=True, px=int(SAMPLE_S * 4000)):
        return None
    kept = [json.loads(entry) for entry in client.lrange(COUNTERS_KEY, 0, -1)]
    # Processes whose clocks differ may claim neighbouring slots for the same moment: one sample is enough.
    if kept and now - kept[-1]["time"] < SAMPLE_S / 2:
        return None
    workers = jobs.live_workers()
    current = counters(client, now)
    # The oldest counters within the window (after a pause in sampling: none, so no rates yet).
    base = next((c for c in kept if c["time"] >= now - RATE_WINDOW_S - SAMPLE_S / 2), None)
    taken = build_sample(workers, queue_depths(client, workers), current, base)
    pipe = client.pipeline(transaction=False)
    for key, entry, limit in ((HISTORY_KEY, taken, MAX_SAMPLES), (COUNTERS_KEY, current, COUNTERS_KEPT)):
        pipe.rpush(key, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(key, -limit, -1)
        pipe.expire(key, int(HISTORY_S))
    pipe.execute()
    return taken


def history(client: redis.Redis, since: float | None = None) -> list[dict]:
    """The samples of the last HISTORY_S seconds (only those after `since`, if given), oldest first."""
    after = max(time.time() - HISTORY_S, since or 0.0)
    samples = (json.loads(entry) for entry in client.lrange(HISTORY_KEY, 0, -1))
    return [s for s in samples if s["time"] > after]


def latest_sample(client: redis.Redis) -> dict | None:
    """The newest sample (None before the first)."""
    entry = client.lindex(HISTORY_KEY, -1)
    return json.loads(entry) if entry else None


class FleetSampler:
    """Takes the fleet's samples in the background of an API process (see the module's docstring)."""

    def __init__(self, jobs: JobClient, client: redis.Redis) -> None:
        self.jobs = jobs
        self.client = client
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start sampling unless it runs: lazily, so each process a server forks starts its own."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        failing = False
        while True:
            # Just after each interval starts: every process tries the same one, and one wins it.
            time.sleep(SAMPLE_S - time.time() % SAMPLE_S + 0.05)
            try:
                take_sample(self.jobs, self.client)
                failing = False
            except Exception:  # Redis down, or a bad entry: sampling must go on once it is fixed
                if not failing:  # once per outage, not every interval
                    log.warning("sampling the fleet failed; retrying", exc_info=True)
                failing = True

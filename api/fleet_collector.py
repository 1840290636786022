"""A prometheus-client collector that reads the fleet's figures from Redis at scrape time.

Per worker (from its heartbeat): up, loaded models, rows and key/value cache in use, prefix-cache
hits, bytes downloaded. Per queue: depth. Per model (recorded by workers as jobs end, see
contracts/fleet_metrics.py): queue time, time to first token, time per output token, end to
end, tokens and jobs by final status. Every API process serves the same figures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.fleet_view import down_workers, queue_depths
from api.queue.client import JobClient
from contracts import fleet_metrics
from contracts.queues import DOWNLOADS_LANE

log = logging.getLogger(__name__)

_WORKER = ["worker"]
_WORKER_MODEL = ["worker", "model"]
_UP = ["worker", "device", "lane"]
# Heartbeat fields of each loaded model -> (metric, help, kind).
_MODEL_FIGURES = {
    "rows_in_use": ("ladle_worker_batch_rows_in_use", "Sequences the model is decoding now.", "gauge"),
    "kv_slots": ("ladle_worker_kv_cache_slots", "Key/value cache slots (one per sequence).", "gauge"),
    "kv_slots_in_use": ("ladle_worker_kv_cache_slots_in_use", "Key/value cache slots holding a sequence.", "gauge"),
    "kv_bytes": ("ladle_worker_kv_cache_bytes", "Bytes the key/value cache has allocated.", "gauge"),
    "kv_capacity_tokens": (
        "ladle_worker_kv_cache_capacity_tokens",
        "Tokens one sequence's key/value cache holds under the model's memory plan.",
        "gauge",
    ),
    "prefix_cache_hits": ("ladle_prefix_cache_hits", "Prompts that reused a cached prefix.", "counter"),
    "prefix_cache_hit_tokens": ("ladle_prefix_cache_hit_tokens", "Prompt positions copied from the cache.", "counter"),
}


class FleetCollector(Collector):
    """Yields the fleet's metric families; on a Redis error, only `ladle_fleet_scrape_ok 0`."""

    def __init__(self, jobs: JobClient, client: redis.Redis) -> None:
        self.jobs = jobs
        self.client = client

    def collect(self) -> Iterator[Metric]:
        ok = GaugeMetricFamily("ladle_fleet_scrape_ok", "1 if the fleet's figures could be read from Redis.")
        try:
            families = [*self._workers(), *self._recorded()]
        except redis.RedisError:
            log.warning("reading fleet metrics failed", exc_info=True)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        yield from families

    def _workers(self) -> list[Metric]:
        workers = self.jobs.live_workers()
        up = GaugeMetricFamily("ladle_worker_up", "1 for a live worker, 0 for one whose heartbeat stopped.", labels=_UP)
        active = GaugeMetricFamily("ladle_worker_active_jobs", "Jobs the worker is running.", labels=_WORKER)
        capacity = GaugeMetricFamily("ladle_worker_capacity_jobs", "Jobs the worker admits at once.", labels=_WORKER)
        rows = GaugeMetricFamily("ladle_worker_batch_rows", "Sequences one model may decode together.", labels=_WORKER)
        loaded = GaugeMetricFamily(
            "ladle_worker_model_loaded", "1 for each model loaded on a worker.", labels=_WORKER_MODEL
        )
        downloaded = CounterMetricFamily(
            "ladle_download_bytes", "Bytes downloaded by the worker since it started.", labels=_WORKER
        )
        downloads = GaugeMetricFamily("ladle_downloads_active", "Downloads running now.")
        figures = {
            field: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=_WORKER_MODEL)
            for field, (name, text, kind) in _MODEL_FIGURES.items()
        }
        running_downloads = 0
        for worker in workers:
            name = worker.name
            up.add_metric([name, worker.device, worker.lane], 1)
            active.add_metric([name], worker.active_jobs)
            capacity.add_metric([name], worker.capacity)
            rows.add_metric([name], worker.batch_rows)
            if worker.lane == DOWNLOADS_LANE:
                running_downloads += worker.active_jobs
                downloaded.add_metric([name], worker.downloaded_bytes)
            for model in worker.loaded_models:
                loaded.add_metric([name, model.name], 1)
                for field, family in figures.items():
                    value = getattr(model, field)
                    if value is not None:
                        family.add_metric([name, model.name], value)
        for name in down_workers(self.client, workers):
            up.add_metric([name, "", ""], 0)
        downloads.add_metric([], running_downloads)
        depth = GaugeMetricFamily("ladle_queue_depth", "Jobs waiting in a queue.", labels=["queue"])
        for queue, waiting in queue_depths(self.client, workers).items():
            depth.add_metric([queue], waiting)
        return [up, active, capacity, rows, loaded, *figures.values(), downloaded, downloads, depth]

    def _recorded(self) -> list[Metric]:
        found = fleet_metrics.read(self.client)
        families: list[Metric] = []
        for metric in fleet_metrics.ALL:
            series = found.get(metric.name, {})
            if metric.is_histogram:
                family = HistogramMetricFamily(metric.name, metric.help, labels=list(metric.labels))
                for labels, one in sorted(series.items()):
                    family.add_metric(list(labels), _cumulative(metric.buckets, one.buckets), one.sum)
            else:
                name = metric.name.removesuffix("_total")  # prometheus-client appends it
                family = CounterMetricFamily(name, metric.help, labels=list(metric.labels))
                for labels, one in sorted(series.items()):
                    family.add_metric(list(labels), one.sum)
            families.append(family)
        return families


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Prometheus' cumulative `le` buckets from per-bucket counts (the last one is +Inf)."""
    total, buckets = 0, []
    for bound, count in zip([*(str(b) for b in bounds), "+Inf"], counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets

"""`GET /metrics` in Prometheus' text format: this API process's requests, and the fleet's figures.

Request counters, latency histograms and open streams are kept by prometheus-client in the
process that served the request. Under gunicorn with several worker processes, set
PROMETHEUS_MULTIPROC_DIR (`ladle serve` does) and prometheus-client's multiprocess mode sums
them over the processes of this host. The fleet's figures (workers, queues, per-model
latencies and tokens) are read from Redis at scrape time by FleetCollector.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from api.fleet_collector import FleetCollector
from api.services import Services

REQUESTS = Counter(
    "ladle_http_requests", "HTTP requests the API answered, by route and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "ladle_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream's last byte).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
OPEN_STREAMS = Gauge(
    "ladle_http_open_streams", "Streamed responses (SSE) open now.", ["route"], multiprocess_mode="livesum"
)

bp = Blueprint("metrics", __name__)


def install(app: Flask, ladle: Services) -> None:
    """Count the app's requests and serve /metrics (nothing when LADLE_METRICS=0)."""
    if not ladle.settings.metrics:
        return
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetCollector(ladle.jobs, ladle.store.client))
    app.extensions["ladle_fleet_registry"] = fleet
    app.before_request(_start_timer)
    app.after_request(_count)
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics() -> Response:
    body = generate_latest(_process_registry()) + generate_latest(current_app.extensions["ladle_fleet_registry"])
    # The classic text format (0.0.4): what every Prometheus version reads.
    return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _process_registry():
    """This host's API processes' own metrics: summed over processes in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count(response: Response) -> Response:
    started = g.get("metrics_started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method, status = request.method, str(response.status_code)

    def done() -> None:
        REQUESTS.labels(method, route, status).inc()
        LATENCY.labels(method, route).observe(time.perf_counter() - started)

    if not response.is_streamed:
        done()
        return response
    streams = OPEN_STREAMS.labels(route)
    streams.inc()
    open_ = [True]

    def closed() -> None:  # once, even if the server closes the response more than once
        if open_:
            open_.clear()
            streams.dec()
            done()

    response.call_on_close(closed)
    return response

"""The status page (`GET /`, `/ui`), the fleet snapshots it shows (`GET /v1/fleet`, SSE
`/v1/fleet/events`) and the fleet's recent history it charts (`GET /v1/fleet/history`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.batches.stores import install as install_batch_stores
from api.batches.stores import stores
from api.errors import bad_request
from api.fleet_view import HISTORY_S, RATE_WINDOW_S, SAMPLE_S, FleetSampler, history, latest_sample, snapshot
from api.openapi import documented
from api.services import query_args, services
from api.sse import KEEPALIVE_FRAME, sse_frame, sse_response

bp = Blueprint("status_page", __name__, static_folder="static", static_url_path="/ui/static")

# How often the event stream looks for changes, and the longest silence (a comment keeps
# proxies from closing an idle stream).
POLL_S = 1.0
KEEPALIVE_S = 15.0
SAMPLER = "ladle-fleet-sampler"


def _install(app: Flask) -> None:
    """The process's fleet sampler; snapshots list batches, so their store too."""
    install_batch_stores(app)
    ladle = app.extensions["ladle"]
    app.extensions.setdefault(SAMPLER, FleetSampler(ladle.jobs, ladle.store.client))


bp.record_once(lambda state: _install(state.app))


@bp.before_app_request
def _sample_the_fleet() -> None:
    """Start the sampler with the process's first request of any kind, so history is recorded
    whether or not a page is open (and a page opened later shows it)."""
    current_app.extensions[SAMPLER].ensure_running()


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    since: float | None = Field(None, ge=0, allow_inf_nan=False, description="Only samples taken after this time.")


class TtftPercentiles(BaseModel):
    """Time to first token (seconds) of the jobs that ended in the rate window."""

    p50: float
    p95: float
    count: int


class FleetSample(BaseModel):
    """The fleet at one moment: queue depths and jobs now; rates over the `rate_window_s` before."""

    time: float
    queues: dict[str, int]
    jobs: dict[str, int]
    tokens_per_s: dict[str, float]
    ended_per_min: dict[str, float]
    ttft: dict[str, TtftPercentiles]


class FleetHistory(BaseModel):
    interval_s: float
    window_s: float
    rate_window_s: float
    samples: list[FleetSample]


@bp.get("/")
@bp.get("/ui")
def page():
    """The page itself: plain HTML, CSS and JavaScript shipped in the package."""
    response = bp.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _snapshot(viewer: str | None) -> dict:
    ladle = services()
    return snapshot(ladle.jobs, ladle.store, ladle.models, stores().batches, viewer=viewer)


@bp.get("/v1/fleet")
def fleet():
    """The fleet now: workers, queue depths, recent jobs, downloads, batches, models."""
    return jsonify(_snapshot(g.get("api_key_id")))


@bp.get("/v1/fleet/history")
@documented(query=HistoryQuery, response=FleetHistory)
def fleet_history():
    """The fleet's samples of the last 15 minutes, oldest first (what the status page charts)."""
    query = query_args(HistoryQuery)
    samples = history(services().store.client, query.since)
    return jsonify({"interval_s": SAMPLE_S, "window_s": HISTORY_S, "rate_window_s": RATE_WINDOW_S, "samples": samples})


@bp.get("/v1/fleet/events")
def fleet_events():
    """SSE: a `snapshot` event at once and whenever the fleet changes (checked every second), and a
    `sample` event with each new history sample."""
    client = services().store.client
    poll_s = _interval(request.args.get("interval"))
    viewer = g.get("api_key_id")

    def frames() -> Iterator[str]:
        last, last_sent, sampled = None, 0.0, 0.0
        while True:
            current = _snapshot(viewer)
            stamp = current.pop("time")
            # Heartbeats move `seen_at` every beat; a change is anything else.
            text = json.dumps({**current, "workers": [_steady(w) for w in current["workers"]]}, sort_keys=True)
            if text != last:
                last, last_sent = text, time.monotonic()
                yield sse_frame(json.dumps({**current, "time": stamp}), event="snapshot")
            newest = latest_sample(client)
            if newest is not None and newest["time"] > sampled:
                sampled, last_sent = newest["time"], time.monotonic()
                yield sse_frame(json.dumps(newest), event="sample")
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                last_sent = time.monotonic()
                yield KEEPALIVE_FRAME
            time.sleep(poll_s)

    return sse_response(frames())


def _interval(text: str | None) -> float:
    """`?interval=` seconds between checks for changes: 0.2 to 10 (default 1)."""
    if text is None:
        return POLL_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0.2 <= seconds <= 10:
        raise bad_request(f"interval must be a number of seconds from 0.2 to 10, not {text!r}.", "interval")
    return seconds


def _steady(worker: dict) -> dict:
    return {k: v for k, v in worker.items() if k != "seen_at"}

"""The status page (`GET /`, `/ui`) and the fleet snapshots it shows (`GET /v1/fleet`, SSE `/v1/fleet/events`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, g, jsonify, request

from api.errors import bad_request
from api.fleet_view import snapshot
from api.services import services
from api.sse import KEEPALIVE_FRAME, sse_frame, sse_response

bp = Blueprint("status_page", __name__, static_folder="static", static_url_path="/ui/static")

# How often the event stream looks for changes, and the longest silence (a comment keeps
# proxies from closing an idle stream).
POLL_S = 1.0
KEEPALIVE_S = 15.0


@bp.get("/")
@bp.get("/ui")
def page():
    """The page itself: plain HTML, CSS and JavaScript shipped in the package."""
    response = bp.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/v1/fleet")
def fleet():
    """The fleet now: workers, queue depths, recent jobs, downloads."""
    ladle = services()
    return jsonify(snapshot(ladle.jobs, ladle.store, viewer=g.get("api_key_id")))


@bp.get("/v1/fleet/events")
def fleet_events():
    """SSE: a `snapshot` event at once and whenever the fleet changes (checked every second)."""
    ladle = services()
    poll_s = _interval(request.args.get("interval"))
    viewer = g.get("api_key_id")

    def frames() -> Iterator[str]:
        last, last_sent = None, 0.0
        while True:
            current = snapshot(ladle.jobs, ladle.store, viewer=viewer)
            stamp = current.pop("time")
            # Heartbeats move `seen_at` every beat; a change is anything else.
            text = json.dumps({**current, "workers": [_steady(w) for w in current["workers"]]}, sort_keys=True)
            if text != last:
                last, last_sent = text, time.monotonic()
                yield sse_frame(json.dumps({**current, "time": stamp}), event="snapshot")
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
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

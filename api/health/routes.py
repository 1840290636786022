"""Probes: /health (the process answers) and /ready (Redis answers and a compute worker is live)."""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify

from api.errors import ApiError
from api.services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """200 when jobs can run: Redis answers PING and a live compute worker exists; else 503 saying which."""
    jobs = services().jobs
    try:
        jobs.store.client.ping()
        worker_alive = jobs.compute_worker_alive()
    except redis.RedisError:
        raise ApiError(
            503,
            "Not ready: the job queue (Redis) does not answer.",
            type="service_unavailable",
            code="queue_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    if not worker_alive:
        raise ApiError(
            503,
            "Not ready: no compute worker is alive (start one with `ladle worker --device cpu`).",
            type="service_unavailable",
            code="no_worker",
            headers={"Retry-After": "5"},
        )
    return jsonify({"status": "ok"})

"""Foundry Local's model management: status, load/unload with TTL, loaded models, GPU device.

Served at both generations of Foundry's paths (/openai/... and /models/..., /status).
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, g, jsonify, request

from api.catalog.catalog import load_catalog
from api.devices import device_for_provider, gpu_ids, preferred_gpu
from api.errors import ApiError, bad_request, model_not_found
from api.job_client import new_job_id
from api.job_responses import wait_for_result
from api.services import services
from contracts import keys
from contracts.jobs import LOAD_TASK, JobKind, LoadJob
from contracts.workers import WorkerInfo

bp = Blueprint("foundry", __name__)


def loaded_model_names(workers: list[WorkerInfo]) -> list[str]:
    return sorted({name for w in workers for name in w.loaded_model_names})


@bp.get("/foundry/list")
def catalog():
    """Every catalog entry, in Foundry's shape."""
    return jsonify([entry.model_dump() for entry in load_catalog(services().settings.user_catalog_dir)])


@bp.get("/openai/status")
@bp.get("/status")
def status():
    ctx = services()
    workers = ctx.jobs.live_workers()
    queues = sorted({queue for w in workers for queue in w.queues})
    depths = dict(zip(queues, (ctx.store.client.llen(q) for q in queues), strict=True))
    return jsonify(
        {
            "Endpoints": [request.host_url.rstrip("/")],
            "ModelDirPath": str(ctx.settings.model_dir),
            "PipeName": "inference_agent",
            "Workers": [w.model_dump() for w in workers],
            "QueueDepths": depths,
        }
    )


@bp.get("/openai/loadedmodels")
@bp.get("/models/loaded")
def loaded_models():
    return jsonify(loaded_model_names(services().jobs.live_workers()))


@bp.get("/openai/load/<name>")
@bp.get("/models/load/<name>")
def load_model(name: str):
    ctx = services()
    name = _local_model(name)
    ttl_s = _ttl(request.args.get("ttl"), _flag("unload", default=True), ctx.settings.model_ttl_s)
    device = device_for_provider(request.args.get("ep"), ctx.jobs.live_workers(), preferred_gpu())
    g.request_id = job_id = new_job_id()
    payload = LoadJob(job_id=job_id, model=name, ttl_s=ttl_s).model_dump()
    feed = ctx.jobs.submit(LOAD_TASK, JobKind.LOAD, name, payload, device, True)
    result = wait_for_result(feed, time.monotonic() + ctx.settings.sync_timeout_s)
    return jsonify({"name": name, "loaded": True, "worker": result.worker, "device": device, "ttl": ttl_s})


@bp.get("/openai/unload/<name>")
@bp.get("/models/unload/<name>")
def unload_model(name: str):
    name = _local_model(name)
    force = _flag("force", default=False)
    still_loaded = _command_workers({"command": "unload", "model": name, "force": force}, name)
    if still_loaded:
        raise ApiError(409, f"The model '{name}' is in use; retry later or pass force=true.", code="model_in_use")
    return jsonify({"name": name, "unloaded": True})


@bp.get("/openai/unloadall")
def unload_all():
    still_loaded = _command_workers({"command": "unload_all", "force": _flag("force", default=False)}, None)
    return jsonify({"unloaded": not still_loaded, "stillLoaded": still_loaded})


@bp.get("/openai/getgpudevice")
def get_gpu_device():
    return jsonify(preferred_gpu() or 0)


@bp.get("/openai/setgpudevice/<device_id>")
def set_gpu_device(device_id: str):
    available = gpu_ids(services().jobs.live_workers())
    if not device_id.isdigit() or int(device_id) not in available:
        raise bad_request(f"Unknown GPU device '{device_id}'; live workers have: {available or 'no GPUs'}.", "deviceId")
    services().store.client.set(keys.GPU_DEVICE_KEY, int(device_id))
    return jsonify({"gpuDevice": int(device_id)})


def _command_workers(command: dict, name: str | None, wait_s: float = 5.0) -> list[str]:
    """Send a command to every worker; returns the models (or `name`) still loaded afterwards.

    Workers send a heartbeat right after handling a command, so the answer is read once every
    live worker has beaten since the command was sent (or after `wait_s`).
    """
    ctx = services()
    sent_at = time.time()
    ctx.store.client.publish(keys.CONTROL_CHANNEL, json.dumps(command))
    deadline = time.monotonic() + wait_s
    while True:
        workers = ctx.jobs.live_workers()
        if all(w.seen_at > sent_at for w in workers) or time.monotonic() >= deadline:
            return [m for m in loaded_model_names(workers) if name is None or m == name]
        time.sleep(0.05)


def _local_model(name: str) -> str:
    """The model folder `name` (or its alias) resolves to; 404 if there is none."""
    resolved = services().resolve_model(name)
    if not services().models.exists(resolved):
        raise model_not_found(resolved)
    return resolved


def _flag(name: str, default: bool) -> bool:
    value = request.args.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false", "1", "0"):
        raise bad_request(f"'{name}' must be true or false, not '{value}'.", name)
    return value.lower() in ("true", "1")


def _ttl(raw: str | None, unload: bool, default_s: float) -> float | None:
    """Foundry's rules: a ttl > 0 wins; else unload=false keeps the model; else the default TTL."""
    if raw is not None:
        if not raw.isdigit():
            raise bad_request(f"'ttl' must be a whole number of seconds, not '{raw}'.", "ttl")
        if int(raw) > 0:
            return float(raw)
    return default_s if unload else None

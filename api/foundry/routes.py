"""Foundry Local's model management: status, load/unload with TTL, loaded models, GPU device.

Served at both generations of Foundry's paths (/openai/... and /models/..., /status).
"""

from __future__ import annotations

import json
import re
import time

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.catalog.catalog import CatalogEntry, dump_entry, load_catalog
from api.errors import ApiError, bad_request, model_not_found
from api.openapi import documented
from api.queue.devices import device_for_provider, gpu_ids, preferred_gpu
from api.queue.responses import wait_for_result
from api.services import new_request_job_id, query_args, services
from contracts import keys
from contracts.jobs import JobKind, LoadJob
from contracts.queues import LOAD_TASK
from contracts.workers import WorkerInfo

bp = Blueprint("foundry", __name__)

# Longest TTL a load may ask for (a year); more is a 400, not a float overflow later.
MAX_TTL_S = 365 * 24 * 3600


class LoadOptions(BaseModel):
    """Foundry's load query: `ttl` > 0 wins, else `unload=false` keeps the model, else the default TTL."""

    model_config = ConfigDict(extra="ignore")

    ttl: int | None = Field(None, ge=0, le=MAX_TTL_S)
    unload: bool = True
    ep: str | None = None


class UnloadOptions(BaseModel):
    """`force=true` unloads a model even while jobs use it (cancelling them)."""

    model_config = ConfigDict(extra="ignore")

    force: bool = False


def loaded_model_names(workers: list[WorkerInfo]) -> list[str]:
    return sorted({name for w in workers for name in w.loaded_model_names})


@bp.get("/foundry/list")
@documented(response=list[CatalogEntry])
def catalog():
    """Every catalog entry, in Foundry's shape."""
    return jsonify([dump_entry(entry) for entry in load_catalog(services().settings.user_catalog_dir)])


@bp.get("/openai/status")
@bp.get("/status")
def status():
    """Foundry's service status plus live workers and queue depths."""
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
@documented(response=list[str])
def loaded_models():
    """Names of models loaded on any live worker."""
    return jsonify(loaded_model_names(services().jobs.live_workers()))


@bp.get("/openai/load/<name>")
@bp.get("/models/load/<name>")
@documented(query=LoadOptions)
def load_model(name: str):
    """Load a model on a worker serving `ep`, with Foundry's TTL rules."""
    ctx = services()
    options = query_args(LoadOptions)
    name = _local_model(name)
    ttl_s = _ttl(options, ctx.settings.model_ttl_s)
    device = device_for_provider(options.ep, ctx.jobs.live_workers(), preferred_gpu(ctx.store.client))
    job_id = new_request_job_id()
    payload = LoadJob(job_id=job_id, model=name, ttl_s=ttl_s).model_dump()
    feed = ctx.jobs.submit(LOAD_TASK, JobKind.LOAD, name, payload, device, True)
    result = wait_for_result(feed, ctx.settings.sync_timeout_s)
    return jsonify({"name": name, "loaded": True, "worker": result.worker, "device": device, "ttl": ttl_s})


@bp.get("/openai/unload/<name>")
@bp.get("/models/unload/<name>")
@documented(query=UnloadOptions)
def unload_model(name: str):
    """Unload a model from every worker."""
    force = query_args(UnloadOptions).force
    name = _local_model(name)
    still_loaded = _command_workers({"command": "unload", "model": name, "force": force}, name)
    if still_loaded:
        raise ApiError(409, f"The model '{name}' is in use; retry later or pass force=true.", code="model_in_use")
    return jsonify({"name": name, "unloaded": True})


@bp.get("/openai/unloadall")
@documented(query=UnloadOptions)
def unload_all():
    """Unload every model from every worker."""
    still_loaded = _command_workers({"command": "unload_all", "force": query_args(UnloadOptions).force}, None)
    return jsonify({"unloaded": not still_loaded, "stillLoaded": still_loaded})


@bp.get("/openai/getgpudevice")
@documented(response=int)
def get_gpu_device():
    """The GPU device new CUDA loads prefer."""
    return jsonify(preferred_gpu(services().store.client) or 0)


@bp.get("/openai/setgpudevice/<device_id>")
def set_gpu_device(device_id: str):
    """Set the GPU device new CUDA loads prefer."""
    available = gpu_ids(services().jobs.live_workers())
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not re.fullmatch(r"[0-9]{1,9}", device_id) or int(device_id) not in available:
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


def _ttl(options: LoadOptions, default_s: float) -> float | None:
    """Foundry's rules: a ttl > 0 wins; else unload=false keeps the model; else the default TTL."""
    if options.ttl:
        return float(options.ttl)
    return default_s if options.unload else None

"""Which device's queue a request goes to, from Foundry's execution provider (`ep`)."""

from __future__ import annotations

import redis

from api.errors import ApiError, bad_request
from api.queue.client import JobClient
from contracts import keys
from contracts.queues import COMPUTE_LANE, DEFAULT_DEVICE
from contracts.workers import WorkerInfo

EXECUTION_PROVIDERS = ("cpu", "cuda", "dml", "qnn", "webgpu")


def compute_workers(workers: list[WorkerInfo]) -> list[WorkerInfo]:
    return [w for w in workers if w.lane == COMPUTE_LANE]


def gpu_ids(workers: list[WorkerInfo]) -> list[int]:
    """GPU device ids that live workers are bound to."""
    return sorted({int(w.device.partition(":")[2]) for w in compute_workers(workers) if w.device.startswith("cuda:")})


def preferred_gpu(client: redis.Redis) -> int | None:
    """The GPU device new loads use (set by Foundry's setgpudevice)."""
    value = client.get(keys.GPU_DEVICE_KEY)
    return int(value) if value is not None else None


def device_for_request(ep: str | None, jobs: JobClient) -> str:
    """The device for a request naming `ep`; plain CPU requests cost no Redis reads."""
    if ep is None or ep == "cpu":
        return DEFAULT_DEVICE
    return device_for_provider(ep, jobs.live_workers(), preferred_gpu(jobs.store.client))


def device_for_provider(ep: str | None, workers: list[WorkerInfo], preferred_gpu: int | None) -> str:
    """The device whose workers serve `ep` (the preferred GPU first); 503 naming `ep` if none is alive."""
    if ep is None or ep == "cpu":
        return DEFAULT_DEVICE
    if ep not in EXECUTION_PROVIDERS:
        raise bad_request(f"Unknown execution provider '{ep}'; known: {', '.join(EXECUTION_PROVIDERS)}.", "ep")
    devices = sorted({w.device for w in compute_workers(workers) if ep in w.execution_providers})
    if not devices:
        raise ApiError(
            503,
            f"No live worker serves execution provider '{ep}'.",
            type="service_unavailable",
            param="ep",
            code="no_worker_for_provider",
            headers={"Retry-After": "10"},
        )
    preferred = f"cuda:{preferred_gpu}"
    return preferred if preferred in devices else devices[0]

"""Celery task names, a device's lanes, and the queue names workers consume."""

from __future__ import annotations

GENERATE_TASK = "ladle.generate"
# Its argument is a list of embedding job payloads (a bundle): the API gathers requests that
# arrive together into one task, so a burst of small requests costs one queue message.
EMBED_TASK = "ladle.embed"
COUNT_TOKENS_TASK = "ladle.count_tokens"
LOAD_TASK = "ladle.load_model"
DOWNLOAD_TASK = "ladle.download_model"
DEFAULT_DEVICE = "cpu"
# Lanes of a device: "compute" runs models; "light" runs cheap jobs (token counts) in a worker
# of its own, so they never wait behind long generations.
COMPUTE_LANE = "compute"
LIGHT_LANE = "light"
# Downloads are I/O, never on a compute worker; one queue for the whole fleet, since every host
# of a deployment shares the model directory.
DOWNLOADS_LANE = "downloads"
DOWNLOADS_QUEUE = "ladle.downloads"


def queue_for_device(device: str, lane: str = COMPUTE_LANE) -> str:
    """The Celery queue consumed by workers bound to `device` ("cpu", "cuda:0", ...) and lane."""
    if lane == DOWNLOADS_LANE:
        return DOWNLOADS_QUEUE
    return f"ladle.device.{device}" if lane == COMPUTE_LANE else f"ladle.device.{device}.{lane}"


def queue_for_worker(worker_name: str) -> str:
    """A compute worker's own queue: jobs for a model it has loaded (model affinity)."""
    return f"ladle.worker.{worker_name}"

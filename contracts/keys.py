"""Every Redis key and channel name Ladle uses, each from one function."""

PREFIX = "ladle"

# Pub/sub channel on which the API asks workers to stop a running job.
CANCEL_CHANNEL = f"{PREFIX}:cancel"


# Pub/sub channel of commands to every worker (JSON: {"command": "unload"|"unload_all", ...}).
CONTROL_CHANNEL = f"{PREFIX}:control"
# The GPU device new loads use (Foundry's get/setgpudevice).
GPU_DEVICE_KEY = f"{PREFIX}:gpu_device"


def job_key(job_id: str) -> str:
    """Hash holding a job's record (status, timestamps, worker, result or error)."""
    return f"{PREFIX}:job:{job_id}"


def job_events_key(job_id: str) -> str:
    """Stream of a job's events (several per entry), kept a short while for Last-Event-ID resume."""
    return f"{PREFIX}:job:{job_id}:events"


# Pub/sub channel on which every job's events are announced as they happen: one message per
# worker write carries the events of all its jobs, one line each ("job_id event_id json").
JOB_EVENTS_CHANNEL = f"{PREFIX}:job-events"


def job_cancel_key(job_id: str) -> str:
    """Flag set when a client asked to cancel the job."""
    return f"{PREFIX}:job:{job_id}:cancel"


def worker_key(worker_name: str) -> str:
    """Expiring heartbeat of one live worker (JSON: device, queues, loaded models)."""
    return f"{PREFIX}:worker:{worker_name}"


# Sorted set of worker names scored by their last heartbeat (found without scanning keys).
WORKERS_INDEX = f"{PREFIX}:workers"
# Hash: compute worker name -> its device queue, where jobs left in a dead worker's own queue go.
WORKER_HOMES = f"{PREFIX}:worker_homes"


def download_key(target: str) -> str:
    """The ID of the download job filling model folder `target` (two requests share one job)."""
    return f"{PREFIX}:download:{target}"


# Claimed, for LADLE_LOST_JOB_SWEEP_S, by the one worker that makes the periodic look for lost jobs.
LOST_JOB_SWEEP_PERIODIC_KEY = f"{PREFIX}:lost_job_sweep:periodic"


def lost_job_sweep_key(server_run_id: str) -> str:
    """Claimed by the one worker that looks for lost jobs after the Redis server changed to this one."""
    return f"{PREFIX}:lost_job_sweep:{server_run_id}"


# Sorted set of recent job IDs scored by creation time, capped (the status page lists it).
RECENT_JOBS = f"{PREFIX}:jobs:recent"
RECENT_JOBS_LIMIT = 200


def metric_key(name: str) -> str:
    """Hash holding a fleet-wide metric's values recorded by workers (fields: labels and bucket)."""
    return f"{PREFIX}:metrics:{name}"


def file_key(file_id: str) -> str:
    """Hash holding a stored file's metadata (its bytes are in the file store on disk)."""
    return f"{PREFIX}:file:{file_id}"


# Sorted set of file IDs scored by creation time (GET /v1/files pages through it).
FILES_INDEX = f"{PREFIX}:files"


def batch_key(batch_id: str) -> str:
    """Hash holding a batch's record (status, timestamps, counts, usage, file IDs)."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_lease_key(batch_id: str) -> str:
    """Held (expiring) by the worker driving the batch: feeding its lines and collecting results."""
    return f"{PREFIX}:batch:{batch_id}:lease"


# Sorted set of batch IDs scored by creation time (GET /v1/batches pages through it).
BATCHES_INDEX = f"{PREFIX}:batches"
# Sorted set of the batches not finished yet (their drivers' work list).
ACTIVE_BATCHES = f"{PREFIX}:batches:active"


def batch_jobs_key(batch_id: str) -> str:
    """Sorted set of a batch's line job IDs, scored by line (GET /v1/jobs?batch= pages through it)."""
    return f"{PREFIX}:batch:{batch_id}:jobs"

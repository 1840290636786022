"""The worker's Celery app: one device, its queue, and the resources built once per process."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

from celery import Celery, signals

from contracts import keys
from contracts.celery_config import celery_config
from contracts.events import DoneEvent, LoadResult
from contracts.job_store import JobStore
from contracts.jobs import DownloadJob, EmbeddingJob, GenerationJob, JobStatus, LoadJob, TokenCountJob
from contracts.queues import (
    COMPUTE_LANE,
    COUNT_TOKENS_TASK,
    DOWNLOAD_TASK,
    EMBED_TASK,
    GENERATE_TASK,
    LOAD_TASK,
    queue_for_device,
    queue_for_worker,
)
from contracts.redis_connection import redis_client
from contracts.settings import Settings
from contracts.token_seal import TokenSeal
from contracts.workers import register_home
from worker.handlers.batch_driver import BatchDriver
from worker.handlers.download_runner import DownloadRunner
from worker.handlers.generation_runner import GenerationRunner
from worker.handlers.light_work import count_tokens, embed
from worker.models.model_registry import ModelRegistry, execution_providers
from worker.models.token_counter import TokenCounter
from worker.runtime.channel_listener import ChannelListener
from worker.runtime.event_publisher import EventPublisher
from worker.runtime.fleet_clock import use_for_kombu
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.job_metrics import JobMetrics
from worker.runtime.job_runner import JobRunner, Outcome
from worker.runtime.lost_jobs import LostJobSweeper
from worker.runtime.orphaned_jobs import requeue_orphaned_jobs
from worker.runtime.redis_transport import broker_transport

log = logging.getLogger(__name__)


class WorkerRuntime:
    """Everything a worker process keeps between jobs; built when the worker is ready."""

    def __init__(self, settings: Settings, device: str, lane: str, name: str, celery: Celery | None = None) -> None:
        self.settings = settings
        self.device = device
        self.lane = lane
        self.name = name
        client = redis_client(settings)
        self.store = JobStore(client, settings.job_ttl_s, settings.events_ttl_s)
        self.registry = ModelRegistry(settings, device)
        self.publisher = EventPublisher(self.store)
        self.metrics = JobMetrics(client, settings.metrics)
        self.jobs = JobRunner(settings, self.store, self.publisher, name, self.metrics)
        self.generation = GenerationRunner(self.registry, self.publisher, name, self.store, self.metrics)
        self.token_counter = TokenCounter(self.registry.directory)
        self.downloads = DownloadRunner(self.store, self.publisher, TokenSeal.from_settings(settings))
        use_for_kombu()  # deliveries stamped and swept by Redis's clock, as leases are renewed
        self.heartbeat = Heartbeat(client, name, settings.heartbeat_s, self.describe, self.on_beat)
        self.lost_jobs = LostJobSweeper(self.store, settings.lost_job_sweep_s)
        if lane == COMPUTE_LANE:
            register_home(client, name, queue_for_device(device, lane))
        self.commands = ChannelListener(
            client, {keys.CANCEL_CHANNEL: self.generation.cancel, keys.CONTROL_CHANNEL: self.on_control}
        )
        self.heartbeat.start()
        # Compute workers drive batches (each batch by one of them at a time).
        self.batch_driver = None
        if lane == COMPUTE_LANE and celery is not None:
            self.batch_driver = BatchDriver(settings, self.store, _sender(celery), name, device)
            self.batch_driver.start()

    def describe(self) -> dict:
        """This worker's fields of its WorkerInfo (the heartbeat adds name, pid and time)."""
        return {
            "device": self.device,
            "lane": self.lane,
            "queues": worker_queues(self.device, self.lane, self.name),
            "execution_providers": execution_providers(self.device),
            "loaded_models": self.registry.describe(),
            "capacity": self.settings.worker_concurrency,
            "active_jobs": self.jobs.active,
            "batch_rows": self.settings.max_batch_rows,
            "downloaded_bytes": self.downloads.bytes_fetched,
        }

    def on_beat(self) -> None:
        self.metrics.flush()
        self.registry.unload_expired()
        if self.lane == COMPUTE_LANE:  # only compute workers have own queues, and their device's queue
            forget_after_s = max(600.0, 2 * self.settings.visibility_timeout_s)
            requeue_orphaned_jobs(self.store.client, forget_after_s)
        self.lost_jobs.check()

    def on_control(self, message: str) -> None:
        """A command to every worker: unload one model, or all (idle ones unless forced)."""
        command = json.loads(message)
        if command["command"] == "unload":
            self.registry.unload(command["model"], command.get("force", False))
        elif command["command"] == "unload_all":
            self.registry.unload_all(command.get("force", False))
        self.heartbeat.beat()  # show the change at once

    def drain(self) -> None:
        """The worker is stopping: take no more jobs, hand back those not decoding yet, and the
        ones still running after LADLE_DRAIN_S (Celery's warm shutdown waits for them to return)."""
        if self.jobs.draining:
            return  # a second signal: already draining
        log.info("draining", extra={"worker": self.name, "drain_s": self.settings.drain_s})
        self.jobs.draining = True
        self.heartbeat.withdraw()
        if self.batch_driver is not None:
            self.batch_driver.stop()
        self.generation.drain()
        timer = threading.Timer(self.settings.drain_s, self._drain_time_over)
        timer.daemon = True  # the process exits as soon as its jobs are done, not at the deadline
        timer.start()

    def _drain_time_over(self) -> None:
        handed_back = self.generation.hand_back_running()
        if handed_back:
            log.info("drain time over; handing back running jobs", extra={"job_ids": handed_back})

    def load(self, job: LoadJob) -> Outcome:
        self.registry.load(job.model, job.ttl_s)
        self.heartbeat.beat()
        return DoneEvent(result=LoadResult(loaded_model=job.model, worker=self.name)), JobStatus.SUCCEEDED

    def close(self) -> None:
        if self.batch_driver is not None:
            self.batch_driver.stop()
        self.commands.stop()
        self.heartbeat.stop()
        self.metrics.flush()  # what ended since the last beat
        self.registry.close()
        self.publisher.close()


def _sender(celery: Celery):
    """Sends a task (name, argument, queue, task ID), as the batch driver feeds lines."""

    def send(task: str, argument: object, queue: str, task_id: str) -> None:
        celery.send_task(task, args=[argument], queue=queue, task_id=task_id, argsrepr=f"jobs {task_id}")

    return send


def worker_queues(device: str, lane: str, name: str) -> list[str]:
    """The device's queue for the lane; compute workers also take jobs routed to them by name."""
    own = [queue_for_worker(name)] if lane == COMPUTE_LANE else []
    return [queue_for_device(device, lane), *own]


def make_celery(settings: Settings, device: str, lane: str = COMPUTE_LANE) -> Celery:
    """A Celery app whose worker serves `device` (one lane); the runtime starts with the worker."""
    app = Celery("ladle-worker")
    app.conf.update(celery_config(settings))
    app.conf.broker_transport = broker_transport(settings.redis_url)
    lane_part = "" if lane == COMPUTE_LANE else f"-{lane}"
    name = f"ladle-{device.replace(':', '')}{lane_part}-{os.getpid()}@{socket.gethostname()}"
    holder: dict[str, WorkerRuntime] = {}

    @app.task(name=GENERATE_TASK)
    def generate(payload: dict) -> None:
        runtime = holder["runtime"]
        runtime.jobs.run(payload, GenerationJob, runtime.generation.generate)

    @app.task(name=EMBED_TASK)
    def embed_texts(payloads: list[dict]) -> None:
        runtime = holder["runtime"]
        runtime.jobs.run_many(payloads, EmbeddingJob, lambda jobs: embed(runtime.registry, jobs), events=False)

    @app.task(name=COUNT_TOKENS_TASK)
    def count_prompt_tokens(payload: dict) -> None:
        runtime = holder["runtime"]
        runtime.jobs.run(payload, TokenCountJob, lambda job: count_tokens(runtime.token_counter, job), events=False)

    @app.task(name=LOAD_TASK)
    def load_model(payload: dict) -> None:
        runtime = holder["runtime"]
        runtime.jobs.run(payload, LoadJob, runtime.load)

    @app.task(name=DOWNLOAD_TASK)
    def download_model(payload: dict) -> None:
        runtime = holder["runtime"]
        runtime.jobs.run(payload, DownloadJob, runtime.downloads.download)

    @signals.worker_init.connect(weak=False)
    def start_runtime(**_: object) -> None:
        holder["runtime"] = WorkerRuntime(settings, device, lane, name, app)

    @signals.worker_shutting_down.connect(weak=False)
    def drain_runtime(**_: object) -> None:
        # Sent from the SIGTERM/SIGINT handler (warm shutdown: Celery stops consuming and waits
        # for the running tasks); the drain makes that wait end within LADLE_DRAIN_S.
        if "runtime" in holder:
            threading.Thread(target=holder["runtime"].drain, name="drain", daemon=True).start()

    @signals.worker_shutdown.connect(weak=False)
    def stop_runtime(**_: object) -> None:
        if "runtime" in holder:
            holder["runtime"].close()

    app.conf.worker_name = name
    return app


def run_worker(settings: Settings, device: str, lane: str = COMPUTE_LANE, log_level: str = "INFO") -> None:
    """Start a Celery worker bound to `device` and one lane (blocks until it stops)."""
    if not execution_providers(device):
        raise SystemExit(
            f"device {device!r}: this onnxruntime-genai build has no CUDA (pip install onnxruntime-genai-cuda)"
        )
    app = make_celery(settings, device, lane)
    app.worker_main(
        [
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(settings.worker_concurrency),
            "--queues",
            ",".join(worker_queues(device, lane, app.conf.worker_name)),
            "--hostname",
            app.conf.worker_name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            log_level,
        ]
    )

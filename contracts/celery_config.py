"""Celery settings shared by the API (producer) and the workers (consumers)."""

from __future__ import annotations

from contracts.queues import DEFAULT_DEVICE, queue_for_device
from contracts.redis_connection import broker_transport_options
from contracts.settings import Settings

# kombu's Redis transport keeps unacknowledged deliveries in this sorted set, scored by the
# time of delivery; a delivery older than the visibility timeout is handed out again.
UNACKED_INDEX_KEY = "unacked_index"


def celery_config(settings: Settings) -> dict:
    """Reliability-first configuration: late acks, one prefetch, our own job records."""
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            **broker_transport_options(settings),
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for deliveries of dead workers often enough for the timeout to mean something
            # (kombu's default sweep runs every 10 x 10 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 2)),
            "unacked_restore_throttle": 1,
            # The sweep holds a Redis mutex; a worker killed while holding it would block every
            # other worker's sweep for kombu's default 300 s.
            "unacked_mutex_expire": max(5, settings.visibility_timeout_s),
        },
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": queue_for_device(DEFAULT_DEVICE),
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Ladle has its own control channel; Celery's remote control would hold a pub/sub
        # connection whose loss makes the consumer reconnect and hand running jobs out again.
        "worker_enable_remote_control": False,
    }

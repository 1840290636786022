"""Celery task messages written by the API itself, so a task goes out with its jobs' records.

`celery.send_task` costs a Redis round trip of its own and, for a small request, more CPU than
the request's other work (producer pool, retry wrappers, routing, signals). Here Celery still
builds the message (`create_task_message`: protocol 2 headers and body); what kombu's Redis
transport then does for a task sent to a queue by name (the anonymous direct exchange, priority
0) is done here: serialise, wrap in kombu's envelope, LPUSH on the queue's list. The caller adds
that LPUSH to the pipeline recording the jobs, so recording and enqueueing take one round trip
and, in a MULTI, no worker can see the task before its jobs' records exist.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass

from celery import Celery
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps


@dataclass(frozen=True)
class TaskMessage:
    """A task message ready for Redis: LPUSH `payload` on the list `queue`."""

    queue: str
    payload: str


class TaskMessages:
    """Builds the messages `celery.send_task(name, args=[argument], queue=queue)` would send."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        self.serializer = celery.conf.task_serializer
        self.delivery_mode = maybe_delivery_mode(celery.conf.task_default_delivery_mode)

    def build(self, task: str, argument: object, queue: str, task_id: str, argsrepr: str) -> TaskMessage:
        headers, properties, body, _ = self.celery.amqp.create_task_message(
            task_id, task, [argument], {}, reply_to=self.celery.thread_oid, argsrepr=argsrepr, ignore_result=None
        )
        content_type, content_encoding, data = dumps(body, serializer=self.serializer)
        properties.update(
            argsrepr=argsrepr,  # send_task passes its options on as message properties too
            delivery_mode=self.delivery_mode,
            priority=0,
            delivery_info={"exchange": "", "routing_key": queue},
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        envelope = {
            "body": base64.b64encode(data.encode() if isinstance(data, str) else data).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": properties,
        }
        return TaskMessage(queue, json.dumps(envelope))

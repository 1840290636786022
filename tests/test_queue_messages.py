"""The API's own task messages are the ones Celery would send (the workers running them are
exercised by every HTTP test)."""

from __future__ import annotations

import json

import redis
from celery import Celery

from api.queue.messages import TaskMessages
from contracts.celery_config import celery_config
from contracts.settings import Settings

PAYLOAD = [{"job_id": "j1", "inputs": ["héllo", "wörld"]}, {"job_id": "j2", "inputs": ["x"]}]


def test_message_equals_what_send_task_pushes(settings: Settings) -> None:
    producer = Celery("ladle-api")
    producer.conf.update(celery_config(settings))
    queue = "ladle.test.messages"
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(queue)
    producer.send_task("ladle.embed", args=[PAYLOAD], queue=queue, task_id="t1", argsrepr="jobs j1 j2")
    sent_by_celery = json.loads(client.rpop(queue))
    message = TaskMessages(producer).build("ladle.embed", PAYLOAD, queue, "t1", "jobs j1 j2")
    ours = json.loads(message.payload)
    assert message.queue == queue
    # Only the delivery tag (a fresh UUID per publish) may differ.
    assert sent_by_celery["properties"].pop("delivery_tag") != ours["properties"].pop("delivery_tag")
    assert ours == sent_by_celery

"""Routing compute jobs across two CPU workers: model affinity, no piling, no job left behind."""

from __future__ import annotations

import time

import pytest
import redis
import requests
from celery import Celery

from contracts.celery_config import celery_config
from contracts.job_store import JobStore
from contracts.jobs import GenerationJob, JobKind
from contracts.queues import GENERATE_TASK, queue_for_worker
from tests.helpers import ASYNC, TINY, user, wait_for
from tests.stack import start_fleet, stop_fleet


@pytest.fixture
def fleet(tmp_path, model_dir):
    fleet = start_fleet(tmp_path, model_dir, workers=2, worker_concurrency=16)
    yield fleet
    stop_fleet(fleet)


def holders(url: str, model: str) -> set[str]:
    workers = requests.get(f"{url}/openai/status", timeout=10).json()["Workers"]
    return {w["name"] for w in workers if w["lane"] == "compute" and model in {m["name"] for m in w["loaded_models"]}}


def chat_worker(url: str, **body) -> str:
    request = {"model": TINY, "messages": user("hi"), "max_tokens": 3, **body}
    response = requests.post(f"{url}/v1/chat/completions", json=request, timeout=60)
    assert response.status_code == 200
    return requests.get(f"{url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()["worker"]


def test_jobs_go_to_the_worker_that_has_the_model_loaded(fleet):
    url = fleet.api_url
    loaded_on = requests.get(f"{url}/openai/load/{TINY}", timeout=60).json()["worker"]
    time.sleep(2 * fleet.settings.heartbeat_s)  # the heartbeat shows the model
    assert {chat_worker(url) for _ in range(6)} == {loaded_on}
    assert holders(url, TINY) == {loaded_on}  # the other worker never loaded a copy


def test_jobs_do_not_pile_onto_a_busy_holder_while_a_peer_idles(fleet):
    url = fleet.api_url
    requests.get(f"{url}/openai/load/{TINY}", timeout=60)
    time.sleep(2 * fleet.settings.heartbeat_s)
    body = {"model": TINY, "messages": user("go"), "max_tokens": 400}
    ids = [
        requests.post(f"{url}/v1/chat/completions", json=body, headers=ASYNC, timeout=30).json()["id"]
        for _ in range(12)
    ]
    ran_on = {wait_for(url, job_id, {"succeeded"})["worker"] for job_id in ids}
    assert ran_on == {w.name for w in fleet.workers}


def test_a_job_routed_to_a_worker_that_died_runs_on_another(fleet):
    url = fleet.api_url
    dead, survivor = fleet.workers
    dead.kill()
    client = redis.Redis.from_url(fleet.settings.redis_url)
    store = JobStore(client, fleet.settings.job_ttl_s)
    producer = Celery("test-producer")
    producer.conf.update(celery_config(fleet.settings))
    job = GenerationJob(job_id="routed-to-the-dead", model=TINY, messages=user("hi"), max_tokens=3)
    store.create([job.job_id], JobKind.CHAT, TINY)
    # As the API would if it routed by a heartbeat seen just before the worker died.
    producer.send_task(GENERATE_TASK, args=[job.model_dump()], queue=queue_for_worker(dead.name), task_id=job.job_id)
    finished = wait_for(url, job.job_id, {"succeeded", "failed"}, timeout_s=30)
    assert finished["status"] == "succeeded" and finished["worker"] == survivor.name

"""A job's start returns what its record says of it, so ending it reads nothing back for metrics."""

from __future__ import annotations

import redis

from cli.embedded_redis import EmbeddedRedis
from contracts import fleet_metrics, keys
from contracts.job_store import JobStore
from contracts.jobs import DoneEvent, JobKind, JobStatus, TokenCountJob, TokenCountResult
from contracts.settings import Settings
from tests.test_event_batching import command_counts, commands_since
from worker.runtime.event_publisher import EventPublisher
from worker.runtime.job_metrics import JobMetrics
from worker.runtime.job_runner import JobRunner


def test_start_returns_the_delivery_with_the_records_kind_model_and_times(tmp_path):
    server = EmbeddedRedis(tmp_path, persist=False)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=600)
    try:
        store.create(["a", "b"], JobKind.EMBEDDING, "minilm")
        created = float(store.client.hget(keys.job_key("a"), "created_at"))
        first, second = store.start(["a", "b"], "w", max_deliveries=1)
        assert (first.deliveries, first.kind, first.model, first.created_at) == (1, "embedding", "minilm", created)
        assert first.started_at == store.get("a").started_at
        assert second.deliveries == 1 and second.model == "minilm"
        again = store.start(["a"], "w", max_deliveries=1)[0]  # delivered once too often
        assert (again.deliveries, again.kind, again.started_at) == (-2, "embedding", None)
        assert store.start(["no-such-job"], "w", max_deliveries=1)[0].deliveries == 0
    finally:
        server.stop()


def test_a_job_ends_with_its_metrics_and_no_read_of_its_record(tmp_path):
    server = EmbeddedRedis(tmp_path, persist=False)
    url = server.start()
    store = JobStore(redis.Redis.from_url(url), ttl_s=600)
    publisher = EventPublisher(store)
    metrics = JobMetrics(store.client)
    runner = JobRunner(Settings.from_env({}), store, publisher, "w", metrics)
    client = redis.Redis.from_url(url)
    try:
        store.create(["j1"], JobKind.TOKEN_COUNT, "smol")
        before = command_counts(client)
        done = DoneEvent(result=TokenCountResult(token_count=7))
        job = TokenCountJob(job_id="j1", model="smol", messages=[]).model_dump()
        runner.run(job, TokenCountJob, lambda _: (done, JobStatus.SUCCEEDED))
        spent = commands_since(client, before)
        assert spent.get("hmget") == 1  # the start script's own read; none after the work
        assert "hgetall" not in spent and "hget" not in spent
        assert store.get("j1").status == JobStatus.SUCCEEDED
        metrics.flush()
        figures = fleet_metrics.read(client)
        assert figures["ladle_jobs_total"][("smol", "token_count", "succeeded")].sum == 1
        assert figures["ladle_job_queue_seconds"][("smol", "token_count")].count == 1
        assert figures["ladle_job_duration_seconds"][("smol", "token_count")].count == 1
    finally:
        publisher.close()
        server.stop()

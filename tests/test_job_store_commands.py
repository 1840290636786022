"""The job store's writes in few commands: creating and sending jobs in one, starting a job returns
what its record says of it (so ending it reads nothing back for metrics)."""

from __future__ import annotations

import redis

from cli.embedded_redis import EmbeddedRedis
from contracts import fleet_metrics, keys
from contracts.errors import ErrorInfo
from contracts.events import DeltaEvent, DoneEvent, ErrorEvent, TokenCountResult
from contracts.job_store import RECENT_TRIM_EVERY, Ending, JobStore, parse_live_lines
from contracts.jobs import JobKind, JobStatus, TokenCountJob
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


def test_an_older_delivery_cannot_finish_a_job_delivered_again(tmp_path):
    """A worker that froze while its job went to another finishes nothing: the newer delivery does."""
    server = EmbeddedRedis(tmp_path, persist=False)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=600)
    try:
        store.create(["j"], JobKind.TOKEN_COUNT, "smol")
        store.start(["j"], "frozen", max_deliveries=3)
        store.start(["j"], "other", max_deliveries=3)  # delivered again: delivery 2 owns it
        late = DoneEvent(result=TokenCountResult(token_count=1))
        owner = DoneEvent(result=TokenCountResult(token_count=2))
        assert store.finish("j", late, JobStatus.SUCCEEDED, event_id="1-4") is None
        assert store.get("j").status == JobStatus.RUNNING
        assert store.finish("j", owner, JobStatus.SUCCEEDED, event_id="2-2") == "2-2"
        assert store.get("j").result == {"token_count": 2}
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
        assert spent.get("hmget") == 1  # the start script's own read; none after the work but
        assert spent.get("hget") == 1  # the finish script's, that this delivery is still the job's latest
        assert "hgetall" not in spent
        assert store.get("j1").status == JobStatus.SUCCEEDED
        metrics.flush()
        figures = fleet_metrics.read(client)
        assert figures["ladle_jobs_total"][("smol", "token_count", "succeeded")].sum == 1
        assert figures["ladle_job_queue_seconds"][("smol", "token_count")].count == 1
        assert figures["ladle_job_duration_seconds"][("smol", "token_count")].count == 1
    finally:
        publisher.close()
        server.stop()


def test_create_records_the_jobs_and_sends_their_task_in_one_command(tmp_path):
    server = EmbeddedRedis(tmp_path, persist=False)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=600)
    client = store.client
    try:
        store.create(["warm-up"], JobKind.CHAT, "smol")  # the first call also loads the script
        before = command_counts(client)
        store.create(["a", "b"], JobKind.EMBEDDING, "minilm", task_id="t1", message=("queue:x", "the message"))
        spent = commands_since(client, before)
        assert spent.pop("evalsha") == 1  # one command from the client
        assert "multi" not in spent and "exec" not in spent
        assert client.lrange("queue:x", 0, -1) == [b"the message"]
        for job_id in ("a", "b"):
            record = store.get(job_id)
            assert (record.kind, record.model, record.status.value) == ("embedding", "minilm", "queued")
            assert client.hget(keys.job_key(job_id), "task") == b"t1"
            assert 0 < client.ttl(keys.job_key(job_id)) <= 600
        assert {r.job_id for r in store.recent(10)} == {"warm-up", "a", "b"}

        store.create(["solo"], JobKind.CHAT, "smol")  # no message: nothing sent; the task is the job
        assert client.llen("queue:x") == 1
        assert client.hget(keys.job_key("solo"), "task") == b"solo"
        assert client.hget(keys.job_key("solo"), "owner") is None
        store.create(["keyed"], JobKind.CHAT, "smol", owner="key-1")  # the API key that submitted it
        assert store.get("keyed").owner == "key-1"
    finally:
        server.stop()


def test_the_recent_jobs_index_is_trimmed_every_few_creates(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "RECENT_JOBS_LIMIT", 5)
    server = EmbeddedRedis(tmp_path, persist=False)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=600)
    try:
        for i in range(RECENT_TRIM_EVERY - 1):
            store.create([f"j{i}"], JobKind.CHAT, "smol")
        assert store.client.zcard(keys.RECENT_JOBS) == RECENT_TRIM_EVERY - 1  # not trimmed yet
        store.create(["last"], JobKind.CHAT, "smol")
        assert store.client.zcard(keys.RECENT_JOBS) == 5
        assert "last" in {r.job_id for r in store.recent(5)}
    finally:
        server.stop()


def test_jobs_ending_together_finish_in_one_command_and_one_announcement(tmp_path):
    server = EmbeddedRedis(tmp_path, persist=False)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=600, events_ttl_s=60)
    client = store.client
    subscriber = client.pubsub()
    try:
        store.create(["a", "b", "c"], JobKind.TOKEN_COUNT, "smol")
        store.start(["a", "b", "c"], "w", max_deliveries=3)
        failed = ErrorEvent(error=ErrorInfo(status=400, type="invalid_request_error", message="no"))
        assert store.finish("b", failed, JobStatus.FAILED) == "2-0"  # another writer ended b first
        subscriber.subscribe(keys.JOB_EVENTS_CHANNEL)
        assert subscriber.get_message(timeout=5)["type"] == "subscribe"
        done = DoneEvent(result=TokenCountResult(token_count=3))
        pending = DeltaEvent(index=0, text="x").model_dump_json()
        before = command_counts(client)
        written = store.finish_many(
            [Ending("a", done, JobStatus.SUCCEEDED, "1-2", [pending]), Ending("b", done, JobStatus.SUCCEEDED, "1-1")]
            + [Ending("c", done, JobStatus.SUCCEEDED, "1-1")]
        )
        assert written == ["1-2", None, "1-1"]
        spent = commands_since(client, before)
        assert spent["publish"] == 1 and spent["evalsha"] == 1
        message = subscriber.get_message(timeout=5)
        assert [(j, i) for j, i, _ in parse_live_lines(message["data"].decode())] == [("a", "1-2"), ("c", "1-1")]
        assert store.get("b").status == JobStatus.FAILED
        assert store.replay("a", None).events == [("1-1", pending), ("1-2", done.model_dump_json())]
        assert [e for e, _ in store.replay("c", None).events] == ["1-1"]
    finally:
        subscriber.close()
        server.stop()

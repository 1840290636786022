"""Jobs: async submit (Prefer: respond-async), polling, event replay, Last-Event-ID, cancel."""

from __future__ import annotations

import requests

from tests.helpers import TINY, sse_events, submit_async, user, wait_for
from tests.stack import ApiServer


def test_async_submit_then_poll_to_the_result(chat, api_url):
    job_id = submit_async(chat)
    job = wait_for(api_url, job_id, {"succeeded"})
    assert job["object"] == "job" and job["kind"] == "chat" and job["model"] == TINY
    assert job["worker"].startswith("ladle-cpu-")
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["result"]["object"] == "chat.completion"
    assert job["result"]["usage"]["completion_tokens"] == 5
    assert job["error"] is None


def test_events_replay_everything_after_the_job_finished(chat, api_url):
    job_id = submit_async(chat, max_tokens=4)
    wait_for(api_url, job_id, {"succeeded"})
    frames = sse_events(requests.get(f"{api_url}/v1/jobs/{job_id}/events", stream=True, timeout=30))
    kinds = [f["event"] for f in frames]
    assert kinds[0] == "started" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"delta"}
    deltas = "".join(f["data"]["text"] for f in frames if f["event"] == "delta")
    assert deltas == frames[-1]["data"]["result"]["choices"][0]["text"]
    assert len({f["id"] for f in frames}) == len(frames)


def test_last_event_id_resumes_after_that_event(chat, api_url):
    job_id = submit_async(chat, max_tokens=6)
    wait_for(api_url, job_id, {"succeeded"})
    url = f"{api_url}/v1/jobs/{job_id}/events"
    everything = sse_events(requests.get(url, stream=True, timeout=30))
    resumed = sse_events(requests.get(url, headers={"Last-Event-ID": everything[2]["id"]}, stream=True, timeout=30))
    assert resumed == everything[3:]


def test_events_follow_a_running_job_live(chat, api_url):
    job_id = submit_async(chat, max_tokens=3000)
    frames = sse_events(requests.get(f"{api_url}/v1/jobs/{job_id}/events", stream=True, timeout=60))
    assert frames[-1]["event"] == "done"
    assert sum(1 for f in frames if f["event"] == "delta") >= 2


def test_cancel_stops_a_running_generation(chat, api_url):
    job_id = submit_async(chat, max_tokens=8000)
    wait_for(api_url, job_id, {"running"})
    cancelled = requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=10)
    assert cancelled.status_code == 200
    job = wait_for(api_url, job_id, {"cancelled", "succeeded", "failed"}, timeout_s=10)
    assert job["status"] == "cancelled"
    assert job["error"]["code"] == "cancelled"
    frames = sse_events(requests.get(f"{api_url}/v1/jobs/{job_id}/events", stream=True, timeout=30))
    assert frames[-1]["event"] == "error" and frames[-1]["data"]["error"]["code"] == "cancelled"
    assert sum(1 for f in frames if f["event"] == "delta") < 8000


def test_cancel_while_queued_never_runs(chat, api_url, settings):
    # Fill the worker's admission bound with long jobs so the next one waits in the queue.
    blockers = [
        submit_async(chat, max_tokens=8000, seed=i, temperature=1.0) for i in range(settings.worker_concurrency)
    ]
    job_id = submit_async(chat)
    cancelled = requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=10).json()
    for blocker in blockers:
        requests.delete(f"{api_url}/v1/jobs/{blocker}", timeout=10)
    job = wait_for(api_url, job_id, {"cancelled", "succeeded"})
    assert job["status"] == "cancelled"
    if cancelled["status"] == "cancelled":  # it was still queued when the cancel arrived
        assert job["started_at"] is None


def test_sync_timeout_replies_504_carrying_the_job_id(settings, worker):
    server = ApiServer(settings.with_overrides(sync_timeout_s=0.5))
    try:
        response = requests.post(
            f"{server.url}/v1/chat/completions",
            timeout=30,
            json={"model": TINY, "messages": user("hi"), "max_tokens": 8000},
        )
        job_id = response.headers["X-Request-Id"]
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "job_timeout"
        assert job_id in response.json()["error"]["message"]
        requests.delete(f"{server.url}/v1/jobs/{job_id}", timeout=10)
    finally:
        server.stop()


def test_unknown_job_is_404(api_url):
    for method in (requests.get, requests.delete):
        response = method(f"{api_url}/v1/jobs/nope", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    assert requests.get(f"{api_url}/v1/jobs/nope/events", timeout=10).status_code == 404

"""`GET /v1/fleet` and `GET /v1/fleet/events` over HTTP: the snapshot's shape, a job appearing
in the stream, and bad input."""

from __future__ import annotations

import json

import requests

from tests.helpers import TINY, user
from tests.stack import WorkerProcess


def snapshots(response: requests.Response):
    """Decoded `snapshot` events of a fleet event stream, as they arrive."""
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == "snapshot":
            yield json.loads(line[len("data: ") :])


def test_fleet_snapshot_lists_workers_queues_and_recent_jobs(api_url: str, worker: WorkerProcess, chat):
    answer = chat({"model": TINY, "messages": user("listed"), "max_tokens": 2})
    assert answer.status_code == 200
    job_id = answer.headers["X-Request-Id"]
    fleet = requests.get(f"{api_url}/v1/fleet", timeout=30).json()
    assert worker.name in [w["name"] for w in fleet["workers"]]
    assert all(isinstance(depth, int) for depth in fleet["queues"].values())
    listed = {job["id"]: job for job in fleet["jobs"]}
    assert listed[job_id]["status"] == "succeeded" and listed[job_id]["kind"] == "chat"
    assert "result" not in listed[job_id]
    assert fleet["jobs"] == sorted(fleet["jobs"], key=lambda job: -job["created_at"])


def test_fleet_events_stream_a_new_job_until_it_succeeds(api_url: str):
    with requests.get(f"{api_url}/v1/fleet/events?interval=0.2", stream=True, timeout=60) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        feed = snapshots(stream)
        first = next(feed)
        assert {"workers", "down_workers", "queues", "jobs", "downloads", "time"} <= first.keys()
        response = requests.post(
            f"{api_url}/v1/chat/completions",
            json={"model": TINY, "messages": user("watch me"), "max_tokens": 4},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        job_id = response.json()["id"]
        seen = []
        for snapshot in feed:
            status = next((job["status"] for job in snapshot["jobs"] if job["id"] == job_id), None)
            if status and (not seen or seen[-1] != status):
                seen.append(status)
            if status == "succeeded":
                break
        assert seen[-1] == "succeeded"


def test_fleet_events_refuse_a_bad_interval(api_url: str):
    for bad in ("soon", "0", "60", "nan"):
        response = requests.get(f"{api_url}/v1/fleet/events", params={"interval": bad}, timeout=30)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "interval" and error["type"] == "invalid_request_error"


def test_unknown_status_page_file_is_a_404_in_the_error_envelope(api_url: str):
    response = requests.get(f"{api_url}/ui/static/missing.js", timeout=30)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    page = requests.get(f"{api_url}/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert 'src="/ui/static/status.js"' in page.text
    script = requests.get(f"{api_url}/ui/static/status.js", timeout=30)
    assert script.status_code == 200 and "function apiFetch" in script.text

"""Names and small functions the test modules share (test modules never import each other)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import requests

TINY = "tiny-random-llama"
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"

ASYNC = {"Prefer": "respond-async"}


def user(text: str) -> list[dict]:
    """A conversation of one user message."""
    return [{"role": "user", "content": text}]


def sse_data(response: requests.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    return [line[len("data: ") :] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def sse_events(response: requests.Response) -> list[dict]:
    """Frames of an SSE response as dicts with id, event and data (JSON-decoded)."""
    frames, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if current:
                frames.append(current)
            current = {}
            continue
        field, _, value = line.partition(": ")
        current[field] = json.loads(value) if field == "data" else value
    return frames


def submit_async(chat, **overrides) -> str:
    """Send a small chat request with `Prefer: respond-async`; returns its job ID."""
    response = chat({"model": TINY, "messages": user("hi"), "max_tokens": 5, **overrides}, headers=ASYNC)
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    job_id = response.json()["id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    assert response.headers["X-Request-Id"] == job_id
    return job_id


def wait_for(api_url: str, job_id: str, statuses: set[str], timeout_s: float = 60) -> dict:
    """Poll the job until its status is one of `statuses`; returns the job."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{api_url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job never reached {statuses}; last seen: {job}")


def assert_error(response, status: int, param: str | None = None, code: str | None = None) -> dict:
    """Assert an error response in OpenAI's envelope (requests or Flask test-client response)."""
    assert response.status_code == status, response.text
    error = response.json()["error"] if callable(response.json) else response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def sse_frames(response: requests.Response) -> Iterator[dict]:
    """Frames of an SSE response as they arrive, as dicts with id, event and data (JSON-decoded)."""
    current: dict = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if current:
                yield current
            current = {}
            continue
        field, _, value = line.partition(": ")
        current[field] = json.loads(value) if field == "data" else value


def wait_for_first_token(api_url: str, job_id: str) -> str:
    """Follow the job's events until it has generated a token (its model is then in use, the job
    mid-generation); returns the worker that started it."""
    worker = None
    with requests.get(f"{api_url}/v1/jobs/{job_id}/events", stream=True, timeout=60) as response:
        for frame in sse_frames(response):
            if frame.get("event") == "started":
                worker = frame["data"]["worker"]
            elif frame.get("event") == "delta":
                return worker
    raise AssertionError(f"job {job_id} ended without generating a token")

"""OpenAI's Files and Batch APIs through the official openai SDK, unchanged, against the real stack."""

from __future__ import annotations

import io
import json
import time

import pytest
import requests
from openai import BadRequestError, NotFoundError, OpenAI

from tests.helpers import MINILM, TINY, sse_events, submit_async, user
from tests.stack import ApiServer

TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def jsonl(lines: list[dict | str]) -> io.BytesIO:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return io.BytesIO(text.encode())


def chat_line(custom_id: str, max_tokens: int = 4, **body) -> dict:
    body = {"model": TINY, "messages": user(f"hi {custom_id}"), "max_tokens": max_tokens, **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def upload(client: OpenAI, lines: list[dict | str]):
    return client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")


def wait_until(client: OpenAI, batch_id: str, done, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still {batch.status}: {batch.request_counts}")


def lines_of(client: OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_chat_batch_round_trip_with_a_failed_line(client: OpenAI, api_url: str):
    lines = [chat_line(f"req-{i}") for i in range(5)]
    # Valid, but its prompt is longer than the model's context: the worker rejects it.
    lines.insert(2, chat_line("too-long", messages=user("word " * 9000)))
    source = upload(client, lines)
    assert source.object == "file" and source.purpose == "batch" and source.bytes > 0
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"k": "v"}
    )
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"k": "v"}
    assert batch.request_counts.total == 6
    events = requests.get(f"{api_url}/v1/batches/{batch.id}/events", stream=True, timeout=90)
    frames = [f for f in sse_events(events) if f.get("event") == "batch"]
    progress = [f["data"]["request_counts"]["completed"] + f["data"]["request_counts"]["failed"] for f in frames]
    assert progress == sorted(progress) and progress[-1] == 6 and frames[-1]["data"]["status"] == "completed"
    done = wait_until(client, batch.id, lambda b: b.status in TERMINAL)
    assert done.status == "completed"
    assert done.request_counts.completed == 5 and done.request_counts.failed == 1
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.usage.output_tokens == 5 * 4 and done.usage.input_tokens > 0
    output = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in range(5)]
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 4
        job = requests.get(f"{api_url}/v1/jobs/{line['response']['request_id']}", timeout=10).json()
        assert job["status"] == "succeeded"
    [failed] = lines_of(client, done.error_file_id)
    assert failed["custom_id"] == "too-long" and failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_completions_and_embeddings_batches(client: OpenAI, api_url: str):
    completions = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": TINY, "prompt": "a", "max_tokens": 3, "echo": True},
        }
        for i in range(3)
    ]
    texts = ["the cat", "a dog", "the sea"]
    embeddings = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": MINILM, "input": text}}
        for i, text in enumerate(texts)
    ]
    first = client.batches.create(
        input_file_id=upload(client, completions).id,
        endpoint="/v1/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    second = client.batches.create(
        input_file_id=upload(client, embeddings).id, endpoint="/v1/embeddings", completion_window="24h"
    )
    for batch, kind in ((first, "text_completion"), (second, "list")):
        done = wait_until(client, batch.id, lambda b: b.status in TERMINAL)
        assert done.status == "completed" and done.request_counts.completed == 3
        output = lines_of(client, done.output_file_id)
        assert {line["response"]["body"]["object"] for line in output} == {kind}
        if kind == "text_completion":
            assert all(line["response"]["body"]["choices"][0]["text"].startswith("a") for line in output)  # echo
            assert client.files.retrieve(done.output_file_id).expires_at == done.created_at + 3600
    vectors = {
        line["custom_id"]: line["response"]["body"]["data"][0]["embedding"]
        for line in lines_of(client, done.output_file_id)
    }
    assert set(vectors) == {"e0", "e1", "e2"} and len(vectors["e0"]) == 384
    # The three lines went out as one bundle and ran in one embedding call.
    listed = requests.get(f"{api_url}/v1/jobs", params={"batch": second.id}, timeout=10).json()["data"]
    jobs = [requests.get(f"{api_url}/v1/jobs/{job['id']}", timeout=10).json() for job in listed]
    assert [job["batch_size"] for job in jobs] == [3, 3, 3]


def test_validation_fails_the_batch_with_line_numbers_and_runs_nothing(client: OpenAI, api_url: str):
    lines = [
        chat_line("ok"),
        "{not json",
        chat_line("ok"),  # duplicate custom_id
        {**chat_line("wrong-url"), "url": "/v1/embeddings"},
        chat_line("bad-body", temperature=9),
        chat_line("no-model", model="no-such-model"),
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at
    errors = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert errors == [
        (2, "invalid_json_line", None),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "mismatched_url", "url"),
        (5, "invalid_value", "body.temperature"),
        (6, "model_not_found", "body.model"),
    ]
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    jobs = requests.get(f"{api_url}/v1/jobs", params={"batch": batch.id}, timeout=10).json()
    assert jobs["data"] == []


def test_bad_requests_are_openai_errors(client: OpenAI, api_url: str):
    with pytest.raises(NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    source = upload(client, [chat_line("x")])
    with pytest.raises(BadRequestError) as raised:
        client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="1h")
    assert raised.value.body["param"] == "completion_window"
    with pytest.raises(BadRequestError):
        client.files.create(file=("in.jsonl", jsonl([])), purpose="assistants")
    with pytest.raises(NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(NotFoundError):
        client.files.content("file-nope")
    not_multipart = requests.post(f"{api_url}/v1/files", json={"purpose": "batch"}, timeout=10)
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["param"] == "file"
    no_file = requests.post(f"{api_url}/v1/files", data={"purpose": "batch"}, files={"other": b"x"}, timeout=10)
    assert no_file.status_code == 400 and no_file.json()["error"]["code"] == "missing_required_parameter"
    expiry = {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "5"}
    too_soon = requests.post(f"{api_url}/v1/files", data=expiry, files={"file": b"{}"}, timeout=10)
    assert too_soon.status_code == 400 and too_soon.json()["error"]["param"] == "expires_after[seconds]"


def test_an_upload_past_the_size_limit_is_413(settings, worker):
    server = ApiServer(settings.with_overrides(max_file_bytes=1000))
    try:
        sdk = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(Exception) as raised:
            sdk.files.create(file=("big.jsonl", io.BytesIO(b"x" * 200_000)), purpose="batch")
        assert raised.value.status_code == 413
    finally:
        server.stop()


def test_files_and_batches_lists_auto_paginate_and_delete(client: OpenAI):
    ids = [upload(client, [chat_line(f"p{i}")]).id for i in range(3)]
    listed = [f.id for f in client.files.list(limit=1, purpose="batch")]
    assert set(ids) <= set(listed) and len(listed) == len(set(listed))
    batches = [
        client.batches.create(input_file_id=i, endpoint="/v1/chat/completions", completion_window="24h").id
        for i in ids[:2]
    ]
    paged = [b.id for b in client.batches.list(limit=1)]
    assert paged[:2] == batches[::-1] and len(paged) == len(set(paged))
    deleted = client.files.delete(ids[2])
    assert deleted.deleted and deleted.id == ids[2]
    with pytest.raises(NotFoundError):
        client.files.retrieve(ids[2])
    for batch_id in batches:
        wait_until(client, batch_id, lambda b: b.status in TERMINAL)


def test_cancel_mid_run_keeps_the_output_so_far(client: OpenAI, api_url: str):
    lines = [chat_line(f"long-{i}", max_tokens=200) for i in range(30)]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(client, batch.id, lambda b: b.request_counts.completed >= 1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_until(client, batch.id, lambda b: b.status in TERMINAL)
    assert done.status == "cancelled" and done.cancelled_at
    output = lines_of(client, done.output_file_id)
    errors = lines_of(client, done.error_file_id)
    assert len(output) == done.request_counts.completed and 1 <= len(output) < 30
    assert sorted(o["custom_id"] for o in output + errors) == sorted(f"long-{i}" for i in range(30))
    assert {e["error"]["code"] for e in errors if e["response"] is None} == {"batch_cancelled"}
    jobs = requests.get(f"{api_url}/v1/jobs", params={"batch": batch.id, "status": "running"}, timeout=10).json()
    assert jobs["data"] == []


def test_expiry_puts_unfinished_lines_in_the_error_file(settings, worker):
    server = ApiServer(settings.with_overrides(batch_completion_window_s=0))  # "24h" lasts no time
    try:
        sdk = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        lines = [chat_line(f"x{i}") for i in range(3)]
        batch = sdk.batches.create(
            input_file_id=upload(sdk, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_until(sdk, batch.id, lambda b: b.status in TERMINAL)
        assert done.status == "expired" and done.expired_at
        errors = lines_of(sdk, done.error_file_id)
        assert sorted(e["custom_id"] for e in errors) == ["x0", "x1", "x2"]
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    finally:
        server.stop()


def test_an_interactive_request_starts_before_the_batchs_remaining_lines(client: OpenAI, api_url: str, chat):
    lines = [chat_line(f"bg-{i}", max_tokens=60) for i in range(16)]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def line_jobs(**filters) -> list[dict]:
        params = {"batch": batch.id, "limit": 100, **filters}
        return requests.get(f"{api_url}/v1/jobs", params=params, timeout=10).json()["data"]

    deadline = time.monotonic() + 60
    while not line_jobs(status="running") and time.monotonic() < deadline:
        time.sleep(0.05)
    interactive = chat({"model": TINY, "messages": user("quick"), "max_tokens": 5})
    assert interactive.status_code == 200
    job = requests.get(f"{api_url}/v1/jobs/{interactive.json()['id'].removeprefix('chatcmpl-')}", timeout=10).json()
    wait_until(client, batch.id, lambda b: b.status in TERMINAL)
    started = [j["started_at"] for j in line_jobs()]
    assert len(started) == 16 and all(started)
    later = [t for t in started if t > job["started_at"]]
    assert later  # the batch's remaining lines started after the interactive request
    assert len(later) < 16  # and the batch was running when it came


def test_jobs_listing_filters_and_pages(client: OpenAI, api_url: str, chat):
    interactive = [submit_async(chat), submit_async(chat)]
    lines = [chat_line(f"j{i}") for i in range(3)]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(client, batch.id, lambda b: b.status in TERMINAL)
    seen, after = [], None
    while True:
        params = {"batch": batch.id, "limit": 1, "kind": "chat", **({"after": after} if after else {})}
        page = requests.get(f"{api_url}/v1/jobs", params=params, timeout=10).json()
        seen += [(j["id"], j["batch"], j["status"]) for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [s[0] for s in seen] == [f"{batch.id}-{n}" for n in (1, 2, 3)]
    assert {s[1:] for s in seen} == {(batch.id, "succeeded")}
    none = requests.get(f"{api_url}/v1/jobs", params={"batch": batch.id, "kind": "embedding"}, timeout=10).json()
    assert none["data"] == [] and none["has_more"] is False
    bad = requests.get(f"{api_url}/v1/jobs", params={"status": "sleeping"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    recent = requests.get(f"{api_url}/v1/jobs", params={"limit": 1}, timeout=10).json()
    assert [j["id"] for j in recent["data"]] == interactive[1:] and recent["has_more"]
    older = requests.get(f"{api_url}/v1/jobs", params={"limit": 1, "after": interactive[1]}, timeout=10).json()
    assert [j["id"] for j in older["data"]] == interactive[:1] and older["data"][0]["batch"] is None


def test_files_and_batches_belong_to_the_key_that_made_them(settings, worker, api_url):
    server = ApiServer(settings.with_overrides(api_keys=("alice-key", "bob-key"), rate_limit="off"))
    try:
        base = f"{server.url}/v1"
        alice = OpenAI(base_url=base, api_key="alice-key", max_retries=0)
        bob = OpenAI(base_url=base, api_key="bob-key", max_retries=0)
        source = upload(alice, [chat_line("a")])
        batch = alice.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
        for call in (
            lambda: bob.files.retrieve(source.id),
            lambda: bob.files.content(source.id),
            lambda: bob.files.delete(source.id),
            lambda: bob.batches.retrieve(batch.id),
            lambda: bob.batches.cancel(batch.id),
            lambda: bob.batches.create(
                input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(NotFoundError):
                call()
        assert source.id not in {f.id for f in bob.files.list()}
        assert batch.id not in {b.id for b in bob.batches.list()}
        assert source.id in {f.id for f in alice.files.list()}
        done = wait_until(alice, batch.id, lambda b: b.status in TERMINAL)
        assert done.status == "completed"
        with pytest.raises(NotFoundError):
            bob.files.content(done.output_file_id)
        assert len(lines_of(alice, done.output_file_id)) == 1
        line_job = lines_of(alice, done.output_file_id)[0]["response"]["request_id"]
        assert requests.get(f"{base}/jobs/{line_job}", headers={"api-key": "alice-key"}, timeout=10).ok
        assert requests.get(f"{base}/jobs/{line_job}", headers={"api-key": "bob-key"}, timeout=10).status_code == 404
        listed = requests.get(f"{base}/jobs", params={"batch": batch.id}, headers={"api-key": "bob-key"}, timeout=10)
        assert listed.status_code == 400 and listed.json()["error"]["code"] == "batch_not_found"
    finally:
        server.stop()


def test_a_line_cancelled_as_a_job_fails_alone(client: OpenAI, api_url: str):
    lines = [chat_line("short-1"), chat_line("long", max_tokens=4000), chat_line("short-2")]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    line_job = f"{batch.id}-2"
    deadline = time.monotonic() + 60
    while requests.get(f"{api_url}/v1/jobs/{line_job}", timeout=10).json().get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert requests.delete(f"{api_url}/v1/jobs/{line_job}", timeout=10).status_code == 200
    done = wait_until(client, batch.id, lambda b: b.status in TERMINAL)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    [failed] = lines_of(client, done.error_file_id)
    assert failed["custom_id"] == "long" and failed["response"]["status_code"] == 409
    assert failed["response"]["body"]["error"]["code"] == "cancelled"

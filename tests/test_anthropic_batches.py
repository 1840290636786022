"""Anthropic's Message Batches API through the `anthropic` SDK, unchanged, against the real stack:
results by custom_id, paging, cancel, delete, a bad request, keys, expiry, and a driver's SIGKILL."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import anthropic
import pytest
import redis
import requests
from openai import OpenAI

from contracts import keys
from contracts.settings import Settings
from tests.helpers import SMOLLM2, TINY, user
from tests.stack import ApiServer, start_fleet, stop_fleet

KEY = "sk-ant-batch-key"
OTHER_KEY = "sk-ant-batch-other-key"
CLOCK = {
    "name": "current_time",
    "description": "The time now.",
    "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
}


@pytest.fixture(scope="module")
def base(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with two keys, on the shared Redis and workers (`api_url` starts them)."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY, OTHER_KEY), rate_limit="off"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)


def request(custom_id: str, max_tokens: int = 4, **params) -> dict:
    return {
        "custom_id": custom_id,
        "params": {"model": TINY, "max_tokens": max_tokens, "messages": user(f"hi {custom_id}"), **params},
    }


def wait_until(client: anthropic.Anthropic, batch_id: str, done, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.processing_status}: {batch.request_counts}"
        time.sleep(0.1)


def ended(client: anthropic.Anthropic, batch_id: str, timeout_s: float = 120):
    return wait_until(client, batch_id, lambda b: b.processing_status == "ended", timeout_s)


def results_of(client: anthropic.Anthropic, batch_id: str) -> dict:
    results = list(client.messages.batches.results(batch_id))
    by_id = {line.custom_id: line.result for line in results}
    assert len(by_id) == len(results)  # each request once
    return by_id


def test_a_batch_runs_and_its_results_come_by_custom_id(client: anthropic.Anthropic, base: str):
    capital = [{"role": "user", "content": "What is the capital of France?"}]
    requests_ = [
        request("plain-0"),
        request("plain-1"),
        request("too-long", messages=user("word " * 9000)),  # valid, but past the context: the worker refuses it
        request("tool", max_tokens=40, tools=[CLOCK], tool_choice={"type": "tool", "name": "current_time"}),
        request("capital", max_tokens=20, model=SMOLLM2, messages=capital, temperature=0),
    ]
    batch = client.messages.batches.create(requests=requests_)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None and batch.ended_at is None
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    counts = batch.request_counts
    assert counts.processing + counts.succeeded + counts.errored == 5
    done = ended(client, batch.id)
    assert done.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 4,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }
    assert done.ended_at >= done.created_at and done.cancel_initiated_at is None
    assert done.results_url == f"{base}/v1/messages/batches/{batch.id}/results"
    results = results_of(client, batch.id)
    assert set(results) == {"plain-0", "plain-1", "too-long", "tool", "capital"}
    for custom_id in ("plain-0", "plain-1"):
        message = results[custom_id].message
        assert results[custom_id].type == "succeeded"
        assert message.type == "message" and message.role == "assistant" and message.model == TINY
        assert message.id.startswith("msg_batch_") and message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 4 and message.usage.input_tokens > 0
        assert [block.type for block in message.content] == ["text"]
    errored = results["too-long"]
    assert errored.type == "errored" and errored.error.type == "error"
    assert errored.error.error.type == "invalid_request_error" and "context" in errored.error.error.message
    tool = results["tool"].message
    assert [(b.type, b.name, b.input) for b in tool.content] == [("tool_use", "current_time", {})]
    assert tool.content[0].id.startswith("toolu_") and tool.stop_reason == "tool_use"
    capital_answer = results["capital"].message
    assert "Paris" in capital_answer.content[0].text and capital_answer.model == SMOLLM2
    # Results come in the order of the requests, and as raw JSONL from the results URL.
    assert [line.custom_id for line in client.messages.batches.results(batch.id)] == [r["custom_id"] for r in requests_]
    raw = requests.get(done.results_url, headers={"x-api-key": KEY}, timeout=30)
    assert raw.status_code == 200 and len(raw.text.splitlines()) == 5


def test_list_pages_newest_first(client: anthropic.Anthropic):
    made = [client.messages.batches.create(requests=[request(f"page-{i}", max_tokens=2)]).id for i in range(3)]
    newest_first = made[::-1]
    paged = [b.id for b in client.messages.batches.list(limit=1)]  # the SDK follows after_id
    assert paged[:3] == newest_first and len(paged) == len(set(paged))
    assert all(batch_id.startswith("msgbatch_") for batch_id in paged)
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[1])
    newer = client.messages.batches.list(before_id=newest_first[2], limit=1)
    assert [b.id for b in newer.data] == [newest_first[1]] and newer.has_more
    after = client.messages.batches.list(after_id=newest_first[0], limit=2)
    assert [b.id for b in after.data] == newest_first[1:]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.list(after_id=made[0], before_id=made[1])
    for batch_id in made:
        ended(client, batch_id)


def test_cancel_then_delete(client: anthropic.Anthropic, base: str):
    batch = client.messages.batches.create(requests=[request(f"long-{i}", max_tokens=200) for i in range(30)])
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.batches.delete(batch.id)  # still processing
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    early = requests.get(f"{base}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": KEY}, timeout=30)
    assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"
    wait_until(client, batch.id, lambda b: b.request_counts.succeeded >= 1)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status in ("canceling", "ended") and canceling.cancel_initiated_at
    done = ended(client, batch.id)
    counts = done.request_counts
    assert counts.succeeded >= 1 and counts.canceled >= 1 and counts.processing == 0
    assert counts.succeeded + counts.errored + counts.canceled == 30
    results = results_of(client, batch.id)
    assert set(results) == {f"long-{i}" for i in range(30)}
    kinds = [result.type for result in results.values()]
    assert kinds.count("canceled") == counts.canceled and kinds.count("succeeded") == counts.succeeded
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)  # it has ended
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    for call in (client.messages.batches.retrieve, client.messages.batches.delete, client.messages.batches.cancel):
        with pytest.raises(anthropic.NotFoundError):
            call(batch.id)
    assert batch.id not in {b.id for b in client.messages.batches.list(limit=100)}


def error_message(client: anthropic.Anthropic, requests_: list[dict]) -> str:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.batches.create(requests=requests_)
    body = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def test_a_bad_request_is_a_400_naming_it_and_nothing_runs(client: anthropic.Anthropic, base: str):
    def newest_job() -> list[str]:
        listed = requests.get(f"{base}/v1/jobs", params={"limit": 1}, headers={"x-api-key": KEY}, timeout=10)
        return [job["id"] for job in listed.json()["data"]]

    before = ([b.id for b in client.messages.batches.list(limit=5).data], newest_job())
    cases = {
        "requests.1.params.max_tokens": [request("ok"), request("bad", max_tokens=0)],
        "requests.1.custom_id": [request("same"), request("same")],
        "requests.0.custom_id": [request("not valid!")],
        "requests.0.params.model": [request("ok", model="no-such-model")],
        "requests.0.params.stream": [request("ok", stream=True)],
        "requests.0.params.messages.0": [request("ok", messages=[{"role": "assistant", "content": "prefill"}])],
        "requests.2.params.messages.0.content.0": [
            request("a"),
            request("b"),
            request("c", messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
        ],
        "requests.0.params.mcp_servers": [
            request("ok", mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}])
        ],
        "requests": [],
    }
    for param, requests_ in cases.items():
        assert param in error_message(client, requests_), param
    assert ([b.id for b in client.messages.batches.list(limit=5).data], newest_job()) == before


def test_a_batch_belongs_to_its_key(client: anthropic.Anthropic, base: str):
    other = anthropic.Anthropic(base_url=base, api_key=OTHER_KEY, max_retries=0)
    batch = client.messages.batches.create(requests=[request("mine", max_tokens=2)])
    for call in (
        other.messages.batches.retrieve,
        other.messages.batches.cancel,
        other.messages.batches.delete,
        other.messages.batches.results,
    ):
        with pytest.raises(anthropic.NotFoundError) as raised:
            call(batch.id)
        assert raised.value.body["error"]["type"] == "not_found_error"
    assert batch.id not in {b.id for b in other.messages.batches.list(limit=100)}
    done = ended(client, batch.id)
    assert done.request_counts.succeeded == 1
    raw = requests.get(done.results_url, headers={"x-api-key": OTHER_KEY}, timeout=30)
    assert raw.status_code == 404 and raw.json()["error"]["type"] == "not_found_error"
    # An OpenAI batch is not a Message Batch, even under its own key.
    sdk = OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    line = {"custom_id": "o", "method": "POST", "url": "/v1/chat/completions", "body": request("o")["params"]}
    source = sdk.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch")
    openai_batch = sdk.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    for batch_id in (openai_batch.id, "msg" + openai_batch.id):
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch_id)
    assert "msg" + openai_batch.id not in {b.id for b in client.messages.batches.list(limit=100)}


def test_expiry_leaves_the_unrun_requests_expired(settings: Settings, worker):
    server = ApiServer(settings.with_overrides(batch_completion_window_s=0))  # the window lasts no time
    try:
        sdk = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
        batch = sdk.messages.batches.create(requests=[request("e0"), request("e1")])
        done = ended(sdk, batch.id)
        assert done.request_counts.expired == 2 and done.request_counts.processing == 0
        assert {custom_id: result.type for custom_id, result in results_of(sdk, batch.id).items()} == {
            "e0": "expired",
            "e1": "expired",
        }
    finally:
        server.stop()


def test_a_batch_survives_its_drivers_sigkill(tmp_path, model_dir):
    fleet = start_fleet(
        tmp_path, model_dir, workers=2, worker_concurrency=4, batch_lease_s=1.0, data_dir=tmp_path / "data"
    )
    try:
        sdk = anthropic.Anthropic(base_url=fleet.api_url, api_key="x", max_retries=0)
        batch = sdk.messages.batches.create(requests=[request(f"r{i}", max_tokens=150) for i in range(14)])
        batch_id = batch.id.removeprefix("msg")  # the batch record's: its lines are jobs <batch>-<line>
        client = redis.Redis.from_url(fleet.settings.redis_url)

        def driver_running_lines() -> tuple[str, list[str]]:
            driver = (client.get(keys.batch_lease_key(batch_id)) or b"").decode()
            params = {"batch": batch_id, "status": "running", "limit": 100}
            running = requests.get(f"{fleet.api_url}/v1/jobs", params=params, timeout=10).json()["data"]
            return driver, [job["id"] for job in running if job["worker"] == driver]

        deadline = time.monotonic() + 90
        while sdk.messages.batches.retrieve(batch.id).request_counts.succeeded < 2 or not driver_running_lines()[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        driver, killed_lines = driver_running_lines()
        fleet.worker_named(driver).kill()  # the batch's driver, running lines too
        done = ended(sdk, batch.id, timeout_s=120)
        assert done.request_counts.succeeded == 14 and done.request_counts.errored == 0
        results = list(sdk.messages.batches.results(batch.id))
        assert sorted(line.custom_id for line in results) == sorted(f"r{i}" for i in range(14))
        assert all(line.result.type == "succeeded" for line in results)
        assert all(line.result.message.usage.output_tokens == 150 for line in results)
        assert int(client.hget(keys.batch_key(batch_id), "epoch")) >= 2  # another driver took over
        assert all(fleet.deliveries(job_id) >= 2 for job_id in killed_lines)  # and reran the lost lines
    finally:
        stop_fleet(fleet)

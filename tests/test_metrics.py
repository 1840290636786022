"""`GET /metrics`: API request counters, fleet gauges from heartbeats, per-model histograms from
workers, a second API process (gunicorn, gevent, two processes) on the same Redis, JSON logs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cli.embedded_redis import free_port
from contracts.queues import queue_for_device
from contracts.settings import Settings
from tests.helpers import TINY, user
from tests.metrics_scrape import scrape, value
from tests.stack import ROOT, WorkerProcess, settings_env


def wait_for(predicate, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def settled_scrape(api_url: str, quiet_s: float = 1.5) -> dict[str, list]:
    """A scrape once the count of ended jobs stays put for `quiet_s` (several test heartbeats):
    workers write their figures on each heartbeat, so earlier tests' jobs are all in it."""
    last = scrape(api_url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = scrape(api_url)
        if value(now, "ladle_jobs_total") == value(last, "ladle_jobs_total"):
            return now
        last = now
    raise AssertionError("the count of ended jobs kept changing")


def test_metrics_page_parses_and_names_follow_conventions(api_url: str):
    response = requests.get(f"{api_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = scrape(api_url)
    assert all(name.startswith("ladle_") or name.startswith(("python_", "process_")) for name in samples)
    assert value(samples, "ladle_fleet_scrape_ok") == 1
    for name in ("ladle_http_requests_total", "ladle_http_request_duration_seconds_bucket"):
        assert name in samples


def test_request_counters_move_by_route_and_status(api_url: str):
    before = scrape(api_url)
    for _ in range(3):
        assert requests.get(f"{api_url}/v1/models", timeout=30).status_code == 200
    assert requests.get(f"{api_url}/v1/jobs/no-such-job", timeout=30).status_code == 404
    after = scrape(api_url)
    route = {"method": "GET", "route": "/v1/models", "status": "200"}
    assert value(after, "ladle_http_requests_total", **route) - value(before, "ladle_http_requests_total", **route) == 3
    missing = {"route": "/v1/jobs/<job_id>", "status": "404"}
    assert (
        value(after, "ladle_http_requests_total", **missing)
        == value(before, "ladle_http_requests_total", **missing) + 1
    )
    count = {"method": "GET", "route": "/v1/models"}
    grew = value(after, "ladle_http_request_duration_seconds_count", **count) - value(
        before, "ladle_http_request_duration_seconds_count", **count
    )
    assert grew == 3


def test_live_worker_and_its_loaded_model_show_up(api_url: str, worker: WorkerProcess, chat):
    assert chat({"model": TINY, "messages": user("hi"), "max_tokens": 2}).status_code == 200
    samples = wait_for(
        lambda: (s := scrape(api_url)) and value(s, "ladle_worker_model_loaded", worker=worker.name, model=TINY) and s,
        what="the loaded model in the heartbeat",
    )
    assert value(samples, "ladle_worker_up", worker=worker.name, device="cpu", lane="compute") == 1
    assert (
        value(samples, "ladle_worker_kv_cache_slots", worker=worker.name, model=TINY) == worker.settings.max_batch_rows
    )
    assert value(samples, "ladle_worker_kv_cache_bytes", worker=worker.name, model=TINY) > 0
    assert value(samples, "ladle_worker_batch_rows_in_use", worker=worker.name, model=TINY) >= 0
    assert any(s.labels["queue"] == queue_for_device("cpu") for s in samples["ladle_queue_depth"])


def test_histograms_and_token_counters_fill_after_jobs(api_url: str, chat):
    labels = {"model": TINY}
    job = {"model": TINY, "kind": "chat"}
    before = settled_scrape(api_url)
    usages = []
    for i in range(2):
        response = chat({"model": TINY, "messages": user(f"count to {i}"), "max_tokens": 6, "temperature": 0})
        assert response.status_code == 200
        usages.append(response.json()["usage"])

    def both_counted(samples: dict[str, list]) -> bool:
        ended = {"status": "succeeded", **job}
        return value(samples, "ladle_jobs_total", **ended) - value(before, "ladle_jobs_total", **ended) >= 2

    # A job's figures reach Redis with its worker's next heartbeat (a fraction of a second here).
    after = wait_for(lambda: (s := scrape(api_url)) and both_counted(s) and s, 10, "both jobs in the figures")

    def delta(name: str, **match: str) -> float:
        return value(after, name, **match) - value(before, name, **match)

    for histogram in ("ladle_time_to_first_token_seconds", "ladle_time_per_output_token_seconds"):
        assert delta(f"{histogram}_count", **labels) == 2
        assert delta(f"{histogram}_bucket", le="+Inf", **labels) == 2
        assert delta(f"{histogram}_sum", **labels) > 0
    for histogram in ("ladle_job_queue_seconds", "ladle_job_duration_seconds"):
        assert delta(f"{histogram}_count", **job) == 2
    # Buckets are cumulative: each `le` holds at least the one below it.
    buckets = [
        s
        for s in after["ladle_job_duration_seconds_bucket"]
        if s.labels["model"] == TINY and s.labels["kind"] == "chat"
    ]
    counts = [s.value for s in sorted(buckets, key=lambda s: float(s.labels["le"]))]
    assert counts == sorted(counts)
    assert delta("ladle_prompt_tokens_total", **labels) == sum(u["prompt_tokens"] for u in usages)
    assert delta("ladle_generation_tokens_total", **labels) == sum(u["completion_tokens"] for u in usages)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert delta("ladle_cached_prompt_tokens_total", **labels) == cached


def test_prefix_cache_hits_show_up_per_worker_and_model(api_url: str, worker: WorkerProcess, chat):
    hits = {"worker": worker.name, "model": TINY}
    before = scrape(api_url)
    prompt = "A long shared instruction that many requests repeat word for word. " * 8
    answers = [
        chat({"model": TINY, "messages": user(prompt), "max_tokens": 2, "temperature": 0}).json() for _ in range(2)
    ]
    assert answers[1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    wait_for(
        lambda: (
            value(scrape(api_url), "ladle_prefix_cache_hits_total", **hits)
            > value(before, "ladle_prefix_cache_hits_total", **hits)
        ),
        what="the prefix-cache hit in the heartbeat",
    )


def test_cancelled_jobs_are_counted_by_status(api_url: str):
    before = settled_scrape(api_url)
    cancelled = {"model": TINY, "kind": "chat", "status": "cancelled"}
    for _ in range(2):  # whether the worker had started it or not, its end is counted once
        response = requests.post(
            f"{api_url}/v1/chat/completions",
            json={"model": TINY, "messages": user("go on and on"), "temperature": 0},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=30)
        job_url = f"{api_url}/v1/jobs/{job_id}"
        wait_for(lambda url=job_url: requests.get(url, timeout=30).json()["status"] == "cancelled")
    wait_for(
        lambda: (
            value(scrape(api_url), "ladle_jobs_total", **cancelled)
            == value(before, "ladle_jobs_total", **cancelled) + 2
        ),
        what="the cancelled jobs counted",
    )


@pytest.fixture(scope="module")
def gunicorn_api(settings: Settings, tmp_path_factory):
    """A second API: gunicorn with two gevent processes on another port, same Redis, JSON logs."""
    base = tmp_path_factory.mktemp("second-api")
    port = free_port()
    env = {
        **settings_env(settings),
        "PROMETHEUS_MULTIPROC_DIR": str(base / "metrics"),
        "LADLE_LOG_FORMAT": "json",
        "LADLE_DRAIN_S": "2",  # an idle stream left open must not hold the stop for long
        "LADLE_CATALOG_DIR": str(settings.user_catalog_dir),
    }
    (base / "metrics").mkdir()
    log_path = base / "api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:api.gunicorn_config",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
                "api.app:create_app()",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/v1/models", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still starting (a loaded machine is slow)
            assert process.poll() is None, log_path.read_text()
            return False

    try:
        wait_for(answers, 60, "the second API")
        yield url, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_second_api_process_shows_the_fleet_and_sums_its_processes(
    gunicorn_api, api_url: str, worker: WorkerProcess, chat
):
    url, _ = gunicorn_api
    first_tokens = value(settled_scrape(api_url), "ladle_time_to_first_token_seconds_count", model=TINY)
    assert chat({"model": TINY, "messages": user("hello"), "max_tokens": 3}).status_code == 200  # via the first API
    samples = wait_for(
        lambda: (
            ((s := scrape(url)) and value(s, "ladle_time_to_first_token_seconds_count", model=TINY) == first_tokens + 1)
            and s
        ),
        what="per-model figures on the second API",
    )
    assert value(samples, "ladle_worker_up", worker=worker.name) == 1
    assert value(samples, "ladle_time_to_first_token_seconds_count", model=TINY) == value(
        scrape(api_url), "ladle_time_to_first_token_seconds_count", model=TINY
    )
    # Requests served by either gunicorn process are summed (prometheus-client multiprocess mode).
    route = {"route": "/v1/models", "status": "200"}
    before = value(scrape(url), "ladle_http_requests_total", **route)
    for _ in range(10):
        assert requests.get(f"{url}/v1/models", timeout=30).status_code == 200
    assert value(scrape(url), "ladle_http_requests_total", **route) == before + 10


def test_json_logs_carry_the_request_id(gunicorn_api):
    url, log_path = gunicorn_api
    response = requests.get(f"{url}/v1/jobs/not-a-job", timeout=30)
    assert response.status_code == 404
    request_id = response.headers["X-Request-Id"]

    def logged() -> dict | None:
        for line in Path(log_path).read_text().splitlines():
            if line.startswith("{") and request_id in line:
                return json.loads(line)
        return None

    record = wait_for(logged, what="the access log line")
    assert record["request_id"] == request_id
    assert record["status"] == 404 and record["path"] == "/v1/jobs/not-a-job"
    assert record["level"] == "INFO" and record["message"] == "request served"


def test_metrics_off_serves_no_metrics_page(settings: Settings):
    from tests.stack import ApiServer

    server = ApiServer(settings.with_overrides(metrics=False))
    try:
        response = requests.get(f"{server.url}/metrics", timeout=30)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
    finally:
        server.stop()


def test_metrics_and_log_format_settings_are_read_from_the_environment():
    assert Settings.from_env({}).metrics is True
    assert Settings.from_env({"LADLE_METRICS": "0"}).metrics is False
    assert Settings.from_env({"LADLE_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ValueError, match="LADLE_LOG_FORMAT"):
        Settings.from_env({"LADLE_LOG_FORMAT": "xml"})


def test_open_streams_gauge_counts_an_open_sse_response(gunicorn_api):
    """Counted across the API's processes as deployed (gunicorn, multiprocess mode)."""
    url, _ = gunicorn_api

    def open_streams() -> float:
        return value(scrape(url), "ladle_http_open_streams", route="/v1/fleet/events")

    before = open_streams()
    with requests.get(f"{url}/v1/fleet/events", stream=True, timeout=30) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines).startswith("event: snapshot")

        # Read on as a page does (a client that stops reading would leave the server blocked on writes).
        def read_on() -> None:
            with contextlib.suppress(requests.RequestException, AttributeError):  # closed when the test ends
                for _line in lines:
                    pass

        reader = threading.Thread(target=read_on, daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while open_streams() < before + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.is_alive(), "the server ended the stream"
        assert open_streams() >= before + 1

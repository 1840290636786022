"""The status page in a real headless browser (Debian's chromium driven by Selenium): the live
worker, a job reaching `succeeded` with its timeline and events, a download's progress bar moving,
the chat box streaming an answer (and offering chat models only), the embeddings box, a batch's
counts, progress and lines, the charts of the last 15 minutes (drawn from history on opening, then
updated by new work), the layout at 1280 px and the dark colour scheme. A failing test leaves a
screenshot in its temporary directory; the layout tests leave theirs in /tmp for a person to look at."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from api.fleet_view import HISTORY_S, RATE_WINDOW_S, SAMPLE_S, quantile
from contracts.settings import Settings
from tests.download_stack import DATA_FILE, REPO, VARIANT, DownloadStack, source
from tests.helpers import MINILM, TINY, user
from tests.hub_server import HubServer
from tests.metrics_scrape import scrape, value
from tests.stack import WorkerProcess

log = logging.getLogger(__name__)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless chromium (apt: chromium chromium-driver; .ci/run installs them)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@contextlib.contextmanager
def screenshot_on_failure(driver: webdriver.Chrome, folder: Path) -> Iterator[None]:
    """On any failure inside the block, save the page as it looked (and its HTML) under `folder`."""
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(folder / "failure.png"))
        (folder / "failure.html").write_text(driver.page_source)
        log.error("status page test failed; screenshot in %s", folder)
        raise


def until(driver: webdriver.Chrome, condition, timeout_s: float = 60, what: str = ""):
    # The page redraws rows as events arrive: an element found a moment ago may be replaced.
    waiting = WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return waiting.until(condition, message=what)


def find(driver: webdriver.Chrome, css: str):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def test_page_shows_the_live_worker(api_url: str, worker: WorkerProcess, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        row = until(browser, lambda d: find(d, f'tr.worker[data-name="{worker.name}"]'), what="the worker's row")
        assert row.find_element(By.CSS_SELECTOR, ".device").text == "cpu"
        assert row.get_attribute("data-lane") == "compute"
        until(browser, lambda d: find(d, "#connection").get_attribute("data-state") == "live", what="live state")
        assert find(browser, '#queues li.queue[data-name="ladle.device.cpu"]') is not None


def test_submitted_job_appears_reaches_succeeded_and_shows_its_events(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/ui")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, "tr.worker"), what="the page's first snapshot")
        response = requests.post(
            f"{api_url}/v1/chat/completions",
            json={"model": TINY, "messages": user("status page"), "max_tokens": 8},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        done = f'tr.job[data-id="{job_id}"][data-status="succeeded"]'
        row = until(browser, lambda d: find(d, done), what="the job's row reaching succeeded")
        row.click()
        until(browser, lambda d: find(d, '#job-events .job-event[data-type="done"]'), what="the job's done event")
        kinds = [e.get_attribute("data-type") for e in browser.find_elements(By.CSS_SELECTOR, "#job-events .job-event")]
        assert kinds[0] == "started" and "delta" in kinds and kinds[-1] == "done"


def test_chat_box_streams_an_answer(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, f'#chat-model option[value="{TINY}"]'), what="the model list")
        Select(find(browser, "#chat-model")).select_by_value(TINY)
        find(browser, "#chat-input").send_keys("Tell me a story")
        max_tokens = find(browser, "#chat-max-tokens")
        max_tokens.clear()
        max_tokens.send_keys("24")
        find(browser, "#chat-send").click()
        output = find(browser, "#chat-output")
        until(browser, lambda d: output.get_attribute("data-state") in ("done", "error"), what="the answer's end")
        assert output.get_attribute("data-state") == "done", output.text
        # Each SSE chunk with text is appended as it arrives; together they are the whole answer
        # (greedy by the model's defaults, so the same request without streaming gives it too).
        assert int(output.get_attribute("data-chunks")) > 1
        whole = requests.post(
            f"{api_url}/v1/chat/completions",
            json={"model": TINY, "messages": user("Tell me a story"), "max_tokens": 24},
            timeout=60,
        ).json()["choices"][0]["message"]["content"]
        assert whole and output.get_attribute("textContent") == whole


def test_chat_box_offers_only_chat_models_and_the_embeddings_box_the_others(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, f'#embed-model option[value="{MINILM}"]'), what="the embedding models")
        chat_models = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#chat-model option")]
        assert TINY in chat_models and MINILM not in chat_models
        embed_models = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#embed-model option")]
        assert embed_models == [MINILM]
        find(browser, "#embed-input").send_keys("the cat sat")
        find(browser, "#embed-send").click()
        output = find(browser, "#embed-output")
        until(browser, lambda d: output.get_attribute("data-state") in ("done", "error"), what="the embedding")
        assert output.get_attribute("data-state") == "done", output.text
        vector = requests.post(
            f"{api_url}/v1/embeddings", json={"model": MINILM, "input": "the cat sat"}, timeout=60
        ).json()["data"][0]["embedding"]
        assert int(output.get_attribute("data-dimensions")) == len(vector)


def chat_once(api_url: str, text: str) -> requests.Response:
    return requests.post(
        f"{api_url}/v1/chat/completions", json={"model": TINY, "messages": user(text), "max_tokens": 8}, timeout=60
    )


def submit_batch(api_url: str, custom_ids: list[str]) -> str:
    """Upload a small chat batch through the Files API and create it; its ID."""
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": TINY, "messages": user(f"line {custom_id}"), "max_tokens": 4},
        }
        for custom_id in custom_ids
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    upload = requests.post(
        f"{api_url}/v1/files", files={"file": ("in.jsonl", text.encode())}, data={"purpose": "batch"}, timeout=30
    )
    assert upload.status_code == 200, upload.text
    batch = requests.post(
        f"{api_url}/v1/batches",
        json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        timeout=60,
    )
    assert batch.status_code == 200, batch.text
    return batch.json()["id"]


def test_batches_panel_shows_a_batch_its_counts_progress_and_lines(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, "tr.worker"), what="the page's first snapshot")
        custom_ids = ["first", "second", "third"]
        batch_id = submit_batch(api_url, custom_ids)
        row = until(browser, lambda d: find(d, f'tr.batch[data-id="{batch_id}"]'), what="the batch's row")
        done = f'tr.batch[data-id="{batch_id}"][data-status="completed"]'
        row = until(browser, lambda d: find(d, done), what="the batch completing")
        counts = row.find_element(By.CSS_SELECTOR, ".counts")
        assert [counts.get_attribute(f"data-{name}") for name in ("completed", "failed", "total")] == ["3", "0", "3"]
        assert float(row.find_element(By.CSS_SELECTOR, "progress").get_attribute("value")) == 100
        row.click()
        lines = 'tr.batch-line[data-source="output"]'
        until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, lines)) == 3, what="the batch's output lines")
        shown = browser.find_elements(By.CSS_SELECTOR, lines)
        assert sorted(line.get_attribute("data-custom-id") for line in shown) == sorted(custom_ids)
        assert all(line.find_elements(By.CSS_SELECTOR, "td")[1].text == "200" for line in shown)
        # A line is its job: a click shows that job's timeline and events.
        job_id = shown[0].get_attribute("data-job")
        shown[0].click()
        until(browser, lambda d: find(d, "#job-detail-id").text == job_id, what="the line's job")
        until(browser, lambda d: find(d, '#job-events .job-event[data-type="done"]'), what="the line's job events")


def chart_line(driver: webdriver.Chrome, chart: str, series: str) -> dict | None:
    """A chart's drawn line of `series`: its points, latest and largest values (None if not drawn)."""
    found = find(driver, f'#{chart} path[data-series="{series}"]')
    if found is None or not int(found.get_attribute("data-points")):
        return None
    return {
        "points": int(found.get_attribute("data-points")),
        "last": float(found.get_attribute("data-last")),
        "max": float(found.get_attribute("data-max")),
    }


def chart_attribute(driver: webdriver.Chrome, chart: str, name: str) -> float:
    value = find(driver, f"#{chart} svg").get_attribute(f"data-{name}")
    return float(value) if value else 0.0


def test_charts_draw_and_update_after_new_work(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        # Two samples: the counters are on record from before the work, so its rate can be read.
        until(browser, lambda d: chart_attribute(d, "chart-jobs", "samples") >= 2, what="the jobs chart drawn")
        assert chart_attribute(browser, "chart-jobs", "points") > 0
        assert chart_line(browser, "chart-queues", "ladle.device.cpu") is not None
        # The newest sample's time (the history is bounded: in a long session its count stops growing).
        before = chart_attribute(browser, "chart-jobs", "last-time")
        answers = [
            requests.post(
                f"{api_url}/v1/chat/completions",
                json={"model": TINY, "messages": user(f"chart {i}"), "max_tokens": 16},
                timeout=60,
            ).json()
            for i in range(3)
        ]
        done = time.time()
        tokens = sum(answer["usage"]["completion_tokens"] for answer in answers)
        # The tokens chart averages over 30 s: a sample taken after these jobs ended (and a worker
        # heartbeat counted them) includes at least their tokens over that window.
        until(
            browser,
            lambda d: (
                chart_attribute(d, "chart-tokens", "last-time") > done + 1
                and (line := chart_line(d, "chart-tokens", TINY)) is not None
                and line["last"] >= tokens / 32
            ),
            timeout_s=25,
            what="the tokens chart showing the new work",
        )
        assert chart_attribute(browser, "chart-jobs", "last-time") > before
        until(browser, lambda d: chart_line(d, "chart-ttft", f"{TINY} p95"), what="the TTFT percentiles")
        assert chart_line(browser, "chart-ttft", f"{TINY} p50")["max"] > 0


def history(api_url: str) -> list[dict]:
    return requests.get(f"{api_url}/v1/fleet/history", timeout=10).json()["samples"]


def test_fresh_page_shows_history_from_before_it_opened(api_url: str, browser, tmp_path):
    # A rate needs the counters sampled before the work too (the sampler starts with the API's first request).
    until(browser, lambda _: len(history(api_url)) >= 2, what="samples before the work")
    assert chat_once(api_url, "before the page").status_code == 200

    def recorded(_) -> bool:
        samples = history(api_url)
        return len(samples) >= 4 and samples[-1]["tokens_per_s"].get(TINY, 0) > 0

    until(browser, recorded, what="history samples with the job's tokens")
    opened = time.time()
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        # Live samples start at the newest one (at most one interval old); older ones come from history.
        until(browser, lambda d: 0 < chart_attribute(d, "chart-tokens", "first") < opened - 5, what="older samples")
        assert chart_attribute(browser, "chart-tokens", "samples") >= 4
        line = chart_line(browser, "chart-tokens", TINY)
        assert line is not None and line["max"] > 0


def test_job_detail_shows_its_timeline(api_url: str, browser, tmp_path):
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, "tr.worker"), what="the page's first snapshot")
        response = requests.post(
            f"{api_url}/v1/chat/completions",
            json={"model": TINY, "messages": user("a long one"), "max_tokens": 3000},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        until(browser, lambda d: find(d, f'tr.job[data-id="{job_id}"]'), what="the job's row").click()

        def step(driver, name: str):
            found = find(driver, f'#job-timeline li[data-step="{name}"][data-known="true"]')
            return float(found.get_attribute("data-at")) if found else None

        until(browser, lambda d: step(d, "first-token"), what="the first token on the timeline")
        assert requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=30).status_code == 200
        until(browser, lambda d: step(d, "finished"), what="the job's end on the timeline")
        at = [step(browser, name) for name in ("queued", "started", "first-token", "finished")]
        job = requests.get(f"{api_url}/v1/jobs/{job_id}", timeout=10).json()
        assert at[0] == job["created_at"] and at[1] == job["started_at"] and at[3] == job["finished_at"]
        # The first token is stamped by the browser's clock set to the server's: within a little of the record's.
        assert at[0] <= at[1] <= at[2] + 0.5 and at[2] <= at[3] + 0.5
        assert "cancelled" in find(browser, '#job-timeline li[data-step="finished"]').text
        assert find(browser, "#job-timeline-bar rect.cancelled") is not None
        until(browser, lambda d: find(d, '#job-events .job-event[data-type="error"]'), what="the cancelled event")


def test_a_finished_jobs_timeline_has_its_recorded_first_token(chat, api_url: str, browser, tmp_path):
    answered = chat({"model": TINY, "messages": user("hi"), "max_tokens": 4})
    job = requests.get(f"{api_url}/v1/jobs/{answered.headers['X-Request-Id']}", timeout=10).json()
    assert job["started_at"] <= job["first_token_at"] <= job["finished_at"]
    browser.get(f"{api_url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, f'tr.job[data-id="{job["id"]}"]'), what="the job's row").click()
        known = '#job-timeline li[data-step="first-token"][data-known="true"]'
        shown = until(browser, lambda d: (e := find(d, known)) and float(e.get_attribute("data-at")), what="it")
        assert shown == job["first_token_at"]


def test_page_fits_1280_pixels_without_horizontal_scrolling(api_url: str, browser, tmp_path):
    # A batch and a job to list, whatever ran before.
    submit_batch(api_url, ["wide"])
    assert chat_once(api_url, "wide").status_code == 200
    browser.set_window_size(1280, 1000)
    try:
        browser.get(f"{api_url}/")
        with screenshot_on_failure(browser, tmp_path):
            until(browser, lambda d: find(d, "tr.job") and find(d, "tr.batch"), what="jobs and batches listed")
            until(browser, lambda d: chart_attribute(d, "chart-jobs", "points") > 0, what="the charts drawn")
            # With a batch's lines and a job's timeline open: the widest the page gets.
            find(browser, "tr.batch").click()
            until(browser, lambda d: find(d, "tr.batch-line"), what="the batch's lines")
            find(browser, "tr.job").click()
            until(
                browser, lambda d: find(d, '#job-timeline li[data-step="queued"][data-known="true"]'), what="a timeline"
            )
            assert browser.execute_script("return innerWidth") == 1280
            scroll, client = browser.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert scroll <= client
            browser.save_screenshot("/tmp/status-page-light-1280.png")
            browser.execute_script("document.getElementById('jobs-section').scrollIntoView()")
            browser.save_screenshot("/tmp/status-page-light-1280-details.png")
    finally:
        browser.set_window_size(1400, 1000)


def background_luminance(driver: webdriver.Chrome, css: str) -> float:
    """Relative brightness (0 black .. 1 white) of an element's computed background colour."""
    colour = driver.execute_script("return getComputedStyle(document.querySelector(arguments[0])).backgroundColor", css)
    red, green, blue = (int(part) for part in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_dark_scheme_follows_the_system_preference(api_url: str, browser, tmp_path):
    assert chat_once(api_url, "dark").status_code == 200
    scheme = "Emulation.setEmulatedMedia"
    browser.execute_cdp_cmd(scheme, {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        browser.get(f"{api_url}/")
        with screenshot_on_failure(browser, tmp_path):
            until(browser, lambda d: find(d, "tr.job"), what="the jobs listed")
            until(browser, lambda d: chart_attribute(d, "chart-tokens", "points") > 0, what="the charts drawn")
            assert browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
            assert background_luminance(browser, "body") < 0.15
            assert background_luminance(browser, "#jobs-section") < 0.2
            browser.save_screenshot("/tmp/status-page-dark.png")
    finally:
        browser.execute_cdp_cmd(scheme, {"features": []})
    browser.get(f"{api_url}/")
    assert background_luminance(browser, "body") > 0.85


def test_history_route_returns_bounded_ordered_samples_and_refuses_bad_input(api_url: str, browser):
    def enough(_) -> list[dict] | None:
        samples = history(api_url)
        return samples if len(samples) >= 3 else None

    samples = until(browser, enough, timeout_s=30, what="three samples")
    body = requests.get(f"{api_url}/v1/fleet/history", timeout=10).json()
    assert body["interval_s"] == SAMPLE_S and body["window_s"] == HISTORY_S and body["rate_window_s"] == RATE_WINDOW_S
    times = [s["time"] for s in body["samples"]]
    assert times == sorted(times) and len(times) <= HISTORY_S / SAMPLE_S and times[0] > time.time() - HISTORY_S
    assert {"ladle.device.cpu"} <= body["samples"][-1]["queues"].keys()
    assert set(body["samples"][-1]["jobs"]) == {"queued", "running"}
    since = samples[-2]["time"]
    newer = requests.get(f"{api_url}/v1/fleet/history", params={"since": since}, timeout=10).json()["samples"]
    assert newer and all(s["time"] > since for s in newer)
    for bad in ("-1", "soon", "nan", "inf"):
        response = requests.get(f"{api_url}/v1/fleet/history", params={"since": bad}, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["param"] == "since", bad
    # The snapshot names each model's kind and lists batches (what the chat box and batches panel show).
    fleet = requests.get(f"{api_url}/v1/fleet", timeout=10).json()
    assert {"id": TINY, "kind": "generation"} in fleet["models"] and {"id": MINILM, "kind": "embedding"} in fleet[
        "models"
    ]
    assert isinstance(fleet["batches"], list)


def test_quantiles_interpolate_within_a_bucket():
    bounds = (0.1, 0.2, 0.4)
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [0, 2, 2, 0], 0.5) == pytest.approx(0.2)
    assert quantile(bounds, [0, 2, 2, 0], 0.75) == pytest.approx(0.3)
    assert quantile(bounds, [4, 0, 0, 0], 0.5) == pytest.approx(0.05)
    assert quantile(bounds, [0, 0, 0, 3], 0.95) == 0.4  # past the last bound: all that is known


@pytest.fixture(scope="module")
def download_stack(settings: Settings, model_dir: Path, tmp_path_factory) -> Iterator[tuple[DownloadStack, HubServer]]:
    hub = HubServer()
    hub.add_repo(REPO, model_dir / TINY, prefix=VARIANT)
    base = tmp_path_factory.mktemp("status-downloads")
    own = settings.with_overrides(model_dir=base / "models", catalog_dir=base / "catalog")
    stack = DownloadStack(own, hub, tmp_path_factory.mktemp("logs"), worker_env={"LADLE_LOG_FORMAT": "json"})
    yield stack, hub
    stack.stop()
    hub.stop()


def test_download_progress_bar_moves(download_stack, browser, tmp_path):
    stack, hub = download_stack
    hub.faults.bytes_per_s[DATA_FILE] = 700_000  # a few seconds for the tiny model's weights
    browser.get(f"{stack.url}/")
    with screenshot_on_failure(browser, tmp_path):
        until(browser, lambda d: find(d, f'tr.worker[data-name="{stack.worker.name}"]'), what="the downloads worker")
        response = requests.post(
            f"{stack.url}/openai/download", json=source("tiny-on-page"), headers={"Prefer": "respond-async"}, timeout=30
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        bar = f'li.download[data-id="{job_id}"] progress'

        def percent(driver) -> float:
            found = find(driver, bar)
            return float(found.get_attribute("value")) if found else -1.0

        first = until(browser, lambda d: (p := percent(d)) > 0 and p < 100 and p, what="a partly filled bar")
        later = until(browser, lambda d: (p := percent(d)) > first and p, what="the bar moving on")
        assert later > first
        until(
            browser,
            lambda d: find(d, f'li.download[data-id="{job_id}"][data-status="succeeded"]'),
            what="the download finishing",
        )
        assert percent(browser) == 100
    hub.faults.bytes_per_s.clear()
    # The downloads worker's heartbeat counts the bytes it fetched.
    size = (stack.settings.model_dir / "tiny-on-page" / "model.onnx.data").stat().st_size
    until(
        browser,
        lambda _: value(scrape(stack.url), "ladle_download_bytes_total", worker=stack.worker.name) >= size,
        what="the downloaded bytes in /metrics",
    )
    # The worker logs in JSON (LADLE_LOG_FORMAT=json), one object per line, with the job's ID.
    records = [json.loads(line) for line in stack.worker.log_path.read_text().splitlines() if line.startswith("{")]
    started = [r for r in records if r.get("job_id") == job_id and r["message"] == "download started"]
    assert started and started[0]["level"] == "INFO" and started[0]["model"] == "tiny-on-page"

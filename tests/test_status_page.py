"""The status page in a real headless browser (Debian's chromium driven by Selenium): the live
worker, a job reaching `succeeded` and its events, a download's progress bar moving, and the
chat box streaming an answer. A failing test leaves a screenshot in its temporary directory."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from contracts.settings import Settings
from tests.download_stack import DATA_FILE, REPO, VARIANT, DownloadStack, source
from tests.helpers import TINY, user
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

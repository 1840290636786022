"""Model downloads (`POST /openai/download`) from a local hub server, through the real stack.

A downloads-lane worker (a real subprocess with HF_ENDPOINT pointing at tests.hub_server)
fetches the tiny model's folder as if it were a Hugging Face repo into a model directory of
this module's own; an API server in front of it shares the session's Redis.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
import redis
import requests

from cli.embedded_redis import free_port
from contracts.settings import Settings
from tests.download_stack import DATA_FILE, PROMPT_TEMPLATE, REPO, VARIANT, DownloadStack, source
from tests.helpers import TINY
from tests.hub_server import HubServer
from tests.stack import run_ladle

PRIVATE_REPO = "acme/private-onnx"
TOKEN = "hf_ladleTestSecret0123456789"
PROGRESS_LINE = re.compile(r'^\("(?P<file>[^"]*)", (?P<fraction>[0-9.]+)\) (?P<percent>\d+\.\d)%$')


@pytest.fixture(scope="module")
def hub(model_dir: Path):
    server = HubServer()
    server.add_repo(REPO, model_dir / TINY, prefix=VARIANT)
    server.add_repo(PRIVATE_REPO, model_dir / TINY, prefix=VARIANT, token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(settings: Settings, hub: HubServer, tmp_path_factory):
    base = tmp_path_factory.mktemp("downloads")
    (base / "catalog").mkdir()
    entry = {
        "name": "tiny-onnx-generic-cpu:1",
        "displayName": "tiny-onnx-generic-cpu",
        "providerType": "HuggingFace",
        "uri": f"https://huggingface.co/{REPO}/tree/main/{VARIANT}",
        "version": "1",
        "modelType": "ONNX",
        "promptTemplate": PROMPT_TEMPLATE,
        "publisher": "acme",
        "task": "chat-completion",
        "runtime": {"deviceType": "CPU", "executionProvider": "CPUExecutionProvider"},
        "fileSizeMb": 6,
        "modelSettings": {"parameters": []},
        "alias": "tiny-onnx",
        "supportsToolCalling": False,
        "license": "MIT",
        "licenseDescription": "test",
        "parentModelUri": "",
    }
    (base / "catalog" / "tiny.json").write_text(json.dumps([entry]))
    (base / "custom").mkdir()
    own = settings.with_overrides(
        model_dir=base / "models", catalog_dir=base / "catalog", download_roots=(base / "custom",)
    )
    running = DownloadStack(own, hub, tmp_path_factory.mktemp("logs"))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def clear_faults(hub: HubServer):
    yield
    hub.faults.drop_after.clear()
    hub.faults.corrupt.clear()
    hub.faults.bytes_per_s.clear()


def post(stack: DownloadStack, body: dict, asynchronous: bool = False, **kwargs) -> requests.Response:
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    return requests.post(f"{stack.url}/openai/download", json=body, headers=headers, timeout=120, **kwargs)


def final_object(lines: list[str]) -> dict:
    return json.loads(lines[-1])


def wait_for_job(stack: DownloadStack, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def wait_for_bytes(stack: DownloadStack, job_id: str, file: str, at_least: int, timeout_s: float = 30) -> dict:
    """Poll the job until `file` has `at_least` bytes done; returns that job body."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
        files = {f["name"]: f for f in (job["progress"] or {}).get("files", [])}
        if file in files and files[file]["bytes_done"] >= at_least:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"{file} of job {job_id} did not reach {at_least} bytes")


def assert_same_files(downloaded: Path, original: Path) -> None:
    for path in original.iterdir():
        assert (downloaded / path.name).read_bytes() == path.read_bytes(), path.name


def listed(stack: DownloadStack) -> list[str]:
    return requests.get(f"{stack.url}/openai/models", timeout=10).json()


def test_download_streams_foundry_progress_lines_then_the_final_object(stack, model_dir):
    response = post(stack, source("tiny-streamed:1"), stream=True)
    assert response.status_code == 200
    lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    progress, final = lines[:-1], final_object(lines)
    assert final == {"Success": True, "ErrorMessage": None, "success": True, "errorMessage": None}
    assert all(PROGRESS_LINE.match(line) for line in progress), progress
    assert progress[-1] == '("", 1) 100.0%'
    files = {PROGRESS_LINE.match(line)["file"] for line in progress[:-1]}
    assert "model.onnx.data" in files
    percents = [float(PROGRESS_LINE.match(line)["percent"]) for line in progress]
    assert percents == sorted(percents)  # Foundry's Python SDK adds up the increases
    # Foundry's folder rule: ':' in the name becomes '-'; the folder holds the repo folder's files.
    folder = stack.settings.model_dir / "tiny-streamed-1"
    assert_same_files(folder, model_dir / TINY)
    foundry = json.loads((folder / "inference_model.json").read_text())
    assert foundry["Name"] == "tiny-streamed-1" and foundry["PromptTemplate"] == PROMPT_TEMPLATE
    assert "tiny-streamed-1" in listed(stack)
    ids = [m["id"] for m in requests.get(f"{stack.url}/v1/models", timeout=10).json()["data"]]
    assert "tiny-streamed-1" in ids


def test_foundry_python_sdk_reading_of_the_stream(stack):
    """The SDK's reading: a percentage regex per line, then a JSON object read by `success`."""
    response = post(stack, {"model": {**source("tiny-sdk")["model"]}, "token": None, "IgnorePipeReport": True})
    percent, final_json = 0.0, ""
    for line in response.text.splitlines():
        if final_json or line.startswith("{"):
            final_json += line
            continue
        if match := re.search(r"(\d+(?:\.\d+)?)%", line):
            percent = max(percent, float(match.group(1)))
    assert percent == 100.0
    assert json.loads(final_json)["success"] is True


def test_async_download_reports_bytes_per_file_and_is_never_listed_half_done(stack, hub):
    hub.faults.bytes_per_s[DATA_FILE] = 1_500_000  # ~1.7 s for the 2.5 MB file
    response = post(stack, source("tiny-async"), asynchronous=True)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["Location"].endswith(f"/v1/jobs/{job_id}")
    middle = wait_for_bytes(stack, job_id, "model.onnx.data", 300_000)
    data = next(f for f in middle["progress"]["files"] if f["name"] == "model.onnx.data")
    assert 0 < data["bytes_done"] < data["bytes_total"]
    assert 0 < middle["progress"]["bytes_done"] < middle["progress"]["bytes_total"]
    assert middle["status"] == "running" and middle["kind"] == "download"
    # Half-downloaded: recognisable by its marker, never listed.
    assert (stack.settings.model_dir / ".downloads" / "tiny-async" / "download.tmp").is_file()
    assert "tiny-async" not in listed(stack)
    assert not (stack.settings.model_dir / "tiny-async").exists()
    job = wait_for_job(stack, job_id)
    assert job["status"] == "succeeded", job
    assert job["progress"]["bytes_done"] == job["progress"]["bytes_total"] > 6_000_000
    assert job["result"]["path"] == str(stack.settings.model_dir / "tiny-async")
    assert {f["name"] for f in job["result"]["files"]} >= {"genai_config.json", "model.onnx", "model.onnx.data"}
    assert "tiny-async" in listed(stack)
    assert not (stack.settings.model_dir / ".downloads" / "tiny-async").exists()


def test_download_resumes_after_the_server_drops_the_connection(stack, hub, model_dir):
    hub.faults.drop_after[DATA_FILE] = 1_500_000
    before = len(hub.file_requests(DATA_FILE))
    lines = post(stack, source("tiny-dropped")).text.splitlines()
    assert final_object(lines)["Success"] is True
    gets = hub.file_requests(DATA_FILE)[before:]
    assert [g.range for g in gets][0] is None and len(gets) == 2
    resumed_at = int(re.match(r"bytes=(\d+)-", gets[1].range).group(1))
    assert 0 < resumed_at <= 1_500_000  # went on from what it had, not from zero
    assert_same_files(stack.settings.model_dir / "tiny-dropped", model_dir / TINY)


def test_download_resumes_on_another_worker_after_a_crash(stack, hub, model_dir):
    hub.faults.bytes_per_s[DATA_FILE] = 600_000
    before = len(hub.file_requests(DATA_FILE))
    onnx_before = len(hub.file_requests(f"{VARIANT}/model.onnx"))
    job_id = post(stack, source("tiny-crash"), asynchronous=True).json()["id"]
    wait_for_bytes(stack, job_id, "model.onnx.data", 600_000)
    stack.worker.kill()
    hub.faults.bytes_per_s.clear()
    stack.worker = stack.start_worker()  # the job is delivered again once its lease runs out
    job = wait_for_job(stack, job_id)
    assert job["status"] == "succeeded", job
    gets = hub.file_requests(DATA_FILE)[before:]
    assert gets[0].range is None and gets[-1].range is not None
    assert int(re.match(r"bytes=(\d+)-", gets[-1].range).group(1)) >= 500_000
    # Files completed before the crash are not fetched again.
    assert len(hub.file_requests(f"{VARIANT}/model.onnx")) == onnx_before + 1
    assert_same_files(stack.settings.model_dir / "tiny-crash", model_dir / TINY)


def test_cancel_stops_a_running_download_and_discards_it(stack, hub):
    hub.faults.bytes_per_s[DATA_FILE] = 200_000
    job_id = post(stack, source("tiny-cancelled"), asynchronous=True).json()["id"]
    wait_for_bytes(stack, job_id, "model.onnx.data", 100_000)
    cancelled = requests.delete(f"{stack.url}/v1/jobs/{job_id}", timeout=10)
    assert cancelled.status_code == 200
    started = time.monotonic()
    job = wait_for_job(stack, job_id, timeout_s=10)
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert time.monotonic() - started < 5  # not after the remaining ~12 s of the file
    assert not (stack.settings.model_dir / ".downloads" / "tiny-cancelled").exists()
    assert "tiny-cancelled" not in listed(stack)


def test_a_corrupt_file_fails_the_download_and_nothing_lands(stack, hub):
    hub.faults.corrupt.add(f"{VARIANT}/model.onnx")
    lines = post(stack, source("tiny-corrupt")).text.splitlines()
    final = final_object(lines)
    assert final["Success"] is False and final["success"] is False
    assert "model.onnx does not match the hub's listing" in final["ErrorMessage"]
    assert "tiny-corrupt" not in listed(stack)
    assert not (stack.settings.model_dir / "tiny-corrupt").exists()
    staged = stack.settings.model_dir / ".downloads" / "tiny-corrupt"
    assert not (staged / "model.onnx").exists() and not (staged / ".partial" / "model.onnx.part").exists()


def test_concurrent_requests_for_one_model_share_one_download(stack, hub):
    hub.faults.bytes_per_s[DATA_FILE] = 2_000_000
    before = len(hub.file_requests(DATA_FILE))
    first = post(stack, source("tiny-shared"), asynchronous=True).json()["id"]
    second = post(stack, source("tiny-shared"), asynchronous=True).json()["id"]
    assert first == second
    streamed = post(stack, source("tiny-shared"))  # a streaming client joins the same job
    assert streamed.headers["X-Request-Id"] == first
    assert final_object(streamed.text.splitlines())["Success"] is True
    assert wait_for_job(stack, first)["status"] == "succeeded"
    assert len(hub.file_requests(DATA_FILE)) == before + 1
    # Once present, a new request finishes at once without fetching anything.
    again = post(stack, source("tiny-shared"), asynchronous=True).json()["id"]
    assert again != first
    job = wait_for_job(stack, again)
    assert job["result"]["already_present"] is True
    assert len(hub.file_requests(DATA_FILE)) == before + 1


def _redis_contents(url: str) -> str:
    """Every key and value in Redis, as text."""
    client = redis.Redis.from_url(url)
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "set": client.smembers,
        "zset": lambda key: client.zrange(key, 0, -1),
        "stream": client.xrange,
    }
    parts = []
    for key in client.scan_iter(count=1000):
        read = readers.get(client.type(key).decode())
        value = read(key) if read else b""
        parts.append(f"{key!r} {value!r}")
        parts.extend(_message_bodies(value))
    return "\n".join(parts)


def _message_bodies(value) -> list[str]:
    """Kombu keeps task messages as JSON with a base64 body: decoded, so the scan sees inside."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | set) else [value]
    bodies = []
    for item in items:
        try:
            document = json.loads(item)
        except (TypeError, ValueError):
            continue
        message = document[0] if isinstance(document, list) and document else document
        if isinstance(message, dict) and isinstance(message.get("body"), str):
            bodies.append(base64.b64decode(message["body"]).decode(errors="replace"))
    return bodies


def test_the_token_reaches_the_hub_but_never_redis_or_the_logs(stack, hub):
    refused = post(stack, source("private-no-token", repo=PRIVATE_REPO)).text.splitlines()
    assert final_object(refused)["Success"] is False
    assert "HTTP 401" in final_object(refused)["ErrorMessage"]
    hub.faults.bytes_per_s[DATA_FILE] = 1_000_000
    response = post(stack, source("private-tiny", repo=PRIVATE_REPO, token=TOKEN), asynchronous=True)
    job_id = response.json()["id"]
    wait_for_bytes(stack, job_id, "model.onnx.data", 100_000)
    in_flight = _redis_contents(stack.settings.redis_url)  # the queued message is in Redis now
    job = wait_for_job(stack, job_id)
    assert job["status"] == "succeeded", job
    assert any(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)
    assert '"sealed_token": "' in in_flight  # the scan saw inside the task message itself
    assert TOKEN not in in_flight
    assert TOKEN not in _redis_contents(stack.settings.redis_url)
    assert TOKEN not in response.text and TOKEN not in json.dumps(job)
    assert TOKEN not in stack.worker.log_path.read_text(errors="replace")


def test_custom_dir_path_inside_an_allowed_root(stack):
    custom = stack.settings.download_roots[0] / "team"
    lines = post(stack, source("tiny-custom", customDirPath=str(custom))).text.splitlines()
    assert final_object(lines)["Success"] is True
    assert (custom / "tiny-custom" / "genai_config.json").is_file()


@pytest.mark.parametrize(
    "path",
    ["{root}/../outside", "/etc", "relative/models", "{root}/escape"],
    ids=["dot-dot", "outside", "relative", "symlink-out"],
)
def test_custom_dir_path_outside_the_roots_is_refused(stack, tmp_path, path):
    root = stack.settings.download_roots[0]
    escape = root / "escape"
    if not escape.exists():
        escape.symlink_to(tmp_path)
    response = post(stack, source("tiny-escape", customDirPath=path.format(root=root)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "customDirPath"
    assert not (tmp_path / "tiny-escape").exists()


def test_catalog_names_aliases_and_azureml_uris(stack):
    by_uri = {
        "model": {
            "Uri": "azureml://registries/azureml/models/tiny-onnx-generic-cpu/versions/1",
            "ProviderType": "AzureFoundryLocal",
            "Name": "tiny-onnx-generic-cpu:1",
            "Publisher": "",
            "PromptTemplate": PROMPT_TEMPLATE,
        },
        "ignorePipeReport": True,
    }
    assert final_object(post(stack, by_uri).text.splitlines())["Success"] is True
    assert "tiny-onnx-generic-cpu" in listed(stack)
    by_alias = post(stack, {"model": "tiny-onnx"}, asynchronous=True).json()
    assert wait_for_job(stack, by_alias["id"])["result"]["model"] == "tiny-onnx-generic-cpu"
    unknown = post(
        stack, {**by_uri, "model": {**by_uri["model"], "Uri": "azureml://registries/azureml/models/nope/versions/2"}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_azureml_model"
    assert unknown.json()["error"]["param"] == "model.Uri"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({}, 400, "model", None),
        ({"model": {"Uri": "ftp://example.com/x"}}, 400, "model.Uri", "invalid_uri"),
        ({"model": {}}, 400, "model.Uri", "missing_uri"),
        ({"model": "no-such-model"}, 404, "model", "model_not_found"),
        ({"model": "smollm2-135m-instruct"}, 400, "model", "build_locally"),
        ({"model": {"Uri": f"https://huggingface.co/{REPO}", "Name": "../x"}}, 400, "model.Name", "invalid_name"),
        ({"model": {"Uri": f"https://huggingface.co/{REPO}", "Path": "../etc"}}, 400, "model.Path", "invalid_path"),
        ({"model": "tiny-onnx", "bufferSize": 0}, 400, "bufferSize", None),
        ({"model": "tiny-onnx", "colour": "blue"}, 400, "colour", "unsupported_parameter"),
    ],
    ids=["no-model", "bad-scheme", "no-uri", "unknown-name", "pypi-model", "bad-name", "bad-path", "buffer", "extra"],
)
def test_bad_download_requests(stack, body, status, param, code):
    response = post(stack, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code:
        assert error["code"] == code


def test_a_repo_the_hub_does_not_have_fails_with_its_status(stack):
    body = {"model": {"Uri": "https://huggingface.co/acme/missing/tree/main/x", "Name": "missing"}}
    final = final_object(post(stack, body).text.splitlines())
    assert final["Success"] is False and "HTTP 404" in final["ErrorMessage"]


def test_a_body_that_is_not_json_is_a_400(stack):
    response = requests.post(f"{stack.url}/openai/download", data="{", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_cli_pull_downloads_in_process_when_no_service_answers(hub, tmp_path, model_dir):
    env = {
        "LADLE_MODEL_DIR": str(tmp_path / "models"),
        "LADLE_PORT": str(free_port()),
        "LADLE_DATA_DIR": str(tmp_path / "data"),
        "HF_ENDPOINT": hub.url,
    }
    result = run_ladle("models", "pull", f"https://huggingface.co/{REPO}/tree/main/{VARIANT}", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "models" / VARIANT)
    assert "100%" in result.stderr  # the progress bar reached the end
    assert_same_files(tmp_path / "models" / VARIANT, model_dir / TINY)
    assert run_ladle("models", "list", env=env).stdout.split() == [VARIANT]


def test_cli_pull_runs_the_same_download_job_when_the_service_runs(stack):
    uri = f"https://huggingface.co/{PRIVATE_REPO}/tree/main/{VARIANT}"
    result = run_ladle("models", "pull", uri, "--token", TOKEN, "--api", stack.url, env={})
    assert result.returncode == 0, result.stderr
    job_id = re.search(r"download job (\w+)", result.stderr).group(1)
    job = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "succeeded" and job["kind"] == "download"
    assert result.stdout.strip() == job["result"]["path"] == str(stack.settings.model_dir / VARIANT)


def test_cli_pull_reports_a_bad_name(stack):
    result = run_ladle("models", "pull", "no-such-model", "--api", stack.url, env={})
    assert result.returncode == 1 and "not in the catalog" in result.stderr

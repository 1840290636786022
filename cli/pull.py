"""`ladle models pull NAME`: a download with a progress bar, through the service when it runs.

With a Ladle API answering (LADLE_HOST/LADLE_PORT, or --api), the pull is the same download
job as `POST /openai/download` (shared with any other request for the model) followed over
its event stream; Ctrl-C cancels it. Otherwise the download runs in this process.
"""

from __future__ import annotations

import json
import logging
import sys

import requests
from tqdm import tqdm

from contracts.events import DownloadProgress
from contracts.settings import Settings

log = logging.getLogger(__name__)


def request_body(name: str, token: str | None) -> dict:
    """A catalog name/alias as is; a URI (or ORG/REPO) as Foundry's model object."""
    model: str | dict = {"Uri": name} if "/" in name else name
    return {"model": model, "token": token, "IgnorePipeReport": True}


def pull(settings: Settings, name: str, token: str | None, api_url: str | None) -> int:
    url = (api_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if _service_answers(url):
        return _pull_via_service(url, request_body(name, token))
    if api_url:
        print(f"ladle: no Ladle service answers at {url}", file=sys.stderr)
        return 1
    return _pull_in_process(settings, request_body(name, token))


def _service_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/openai/status", timeout=2).ok
    except requests.RequestException:
        return False


class _Bar:
    """A tqdm byte bar fed with DownloadProgress reports."""

    def __init__(self, label: str) -> None:
        self.bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def show(self, progress: DownloadProgress) -> None:
        self.bar.total = progress.bytes_total
        self.bar.n = progress.bytes_done
        if progress.phase == "building":
            self.bar.set_postfix_str(f"building: {progress.stage or 'starting'}", refresh=False)
        elif progress.current_file:
            self.bar.set_postfix_str(progress.current_file, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _pull_via_service(url: str, body: dict) -> int:
    submitted = requests.post(f"{url}/openai/download", json=body, headers={"Prefer": "respond-async"}, timeout=30)
    if submitted.status_code != 202:
        print(f"ladle: {submitted.json()['error']['message']}", file=sys.stderr)
        return 1
    job = submitted.json()
    print(f"download job {job['id']} ({job['model']}) on {url}", file=sys.stderr)
    bar = _Bar(job["model"])
    try:
        with requests.get(f"{url}/v1/jobs/{job['id']}/events", stream=True, timeout=(10, None)) as events:
            for line in events.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                if event["type"] == "progress":
                    bar.show(DownloadProgress.model_validate(event["progress"]))
                elif event["type"] == "done":
                    bar.close()
                    print(event["result"]["path"])
                    return 0
                elif event["type"] == "error":
                    bar.close()
                    print(f"ladle: {event['error']['message']}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        bar.close()
        requests.delete(f"{url}/v1/jobs/{job['id']}", timeout=10)
        print(f"ladle: cancelled download job {job['id']}", file=sys.stderr)
        return 130
    print("ladle: the job's event stream ended early", file=sys.stderr)
    return 1


# Offline, the variant is picked for the workers `ladle serve` starts: CPU ones only. The installed
# onnxruntime-genai having CUDA (og.is_cuda_available()) does not mean a CUDA worker will serve the
# model, and a CUDA variant (fp16/CUDA-only kernels) need not load on a CPU worker, while a CPU
# variant loads on either. Through the service the variant follows the live workers instead.
OFFLINE_PROVIDERS = frozenset({"cpu"})


def _pull_in_process(settings: Settings, body: dict) -> int:
    # The API's own request parsing and source resolution, then the worker's download code.
    from api.catalog.catalog import read_catalog
    from api.downloads.protocol import DownloadRequest
    from api.downloads.sources import plan_download
    from api.errors import ApiError
    from worker.hub.model_download import DownloadFailed, download_model

    try:
        entries, broken = read_catalog(settings.user_catalog_dir)
        plan = plan_download(DownloadRequest.parse(body), entries, set(OFFLINE_PROVIDERS), broken)
    except ApiError as error:
        print(f"ladle: {error.message}", file=sys.stderr)
        return 2
    job = plan.to_job(job_id="", target_root=settings.model_dir)
    bar = _Bar(plan.model)
    try:
        result = download_model(job, body["token"], bar.show, lambda: False)
    except DownloadFailed as failed:
        print(f"ladle: {failed}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    print(result.path)
    return 0

"""A downloads stack for tests: the local hub, a downloads-lane worker pointed at it, and an API."""

from __future__ import annotations

import time
from pathlib import Path

from contracts.settings import Settings
from tests.hub_server import HubServer
from tests.stack import ApiServer, WorkerProcess

REPO = "acme/tiny-onnx"
VARIANT = "cpu-int4"
DATA_FILE = f"{VARIANT}/model.onnx.data"
PROMPT_TEMPLATE = {"assistant": "{Content}", "prompt": "<user>{Content}</user>"}


class DownloadStack:
    """The hub, a downloads worker (replaceable: tests kill it) and an API, on one model dir."""

    def __init__(
        self, settings: Settings, hub: HubServer, logs: Path, worker_env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.logs = logs
        self.worker_env = worker_env or {}
        self.worker = self.start_worker()
        self.api = ApiServer(settings)
        self.url = self.api.url

    def start_worker(self) -> WorkerProcess:
        log = self.logs / f"downloads-{time.monotonic_ns()}.log"
        env = {"HF_ENDPOINT": self.hub.url, "HF_HUB_OFFLINE": "0", **self.worker_env}
        return WorkerProcess(self.settings, log, lane="downloads", env=env)

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()


def source(name: str, repo: str = REPO, **extra) -> dict:
    model = {
        "Uri": f"https://huggingface.co/{repo}/tree/main/{VARIANT}",
        "Name": name,
        "ProviderType": "HuggingFace",
        "Publisher": "acme",
        "PromptTemplate": PROMPT_TEMPLATE,
    }
    return {"model": model, "IgnorePipeReport": True, **extra}

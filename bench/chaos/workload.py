"""The mixed workload one scenario runs: streamed chats, async jobs, an OpenAI batch (Files +
Batches API), embeddings and a model download, all through the API hosts, with greedy decoding
so every answer can be compared with the fault-free run's.

Each piece runs on a thread of its own and records an `Outcome` per request; every wait is
bounded (READ_TIMEOUT_S between a stream's bytes, WORKLOAD_TIMEOUT_S in all).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field

import requests

from bench.chaos.fleet import HUB_REPO, HUB_VARIANT

log = logging.getLogger(__name__)

CHAT_MODEL = "tiny-random-llama"
EMBEDDING_MODEL = "all-minilm-l6-v2"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STREAMS = 4
STREAM_TOKENS = 1500
ASYNC_JOBS = 6
ASYNC_TOKENS = 1200
BATCH_LINES = 200
BATCH_TOKENS = 12
EMBEDDING_REQUESTS = 4
EMBEDDING_TEXTS = 8
# A stream silent this long (no byte, not even a keep-alive) counts as stalled.
READ_TIMEOUT_S = 45
# Everything a scenario submitted must have ended this long after it started.
WORKLOAD_TIMEOUT_S = 120
POLL_S = 0.25
WORDS = "harbor lantern copper meadow signal orbit willow granite ember tide falcon ridge".split()


def prompt(key: str) -> str:
    """A fixed prompt per key, so every scenario asks the same questions."""
    rng = random.Random(key)
    return " ".join(rng.choice(WORDS) for _ in range(6 + rng.randrange(10)))


def chat_body(key: str, max_tokens: int, **extra: object) -> dict:
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": prompt(key)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


@dataclass
class Outcome:
    """What one request came to, as its client saw it."""

    kind: str
    key: str
    api: str
    job_id: str | None = None
    accepted: bool = False
    status: str = "pending"  # succeeded, failed, cancelled, rejected, stalled, lost, timeout
    error: dict | None = None
    answer: object = None  # text, or embedding vectors, compared with the fault-free run's
    ending: str = ""  # how a stream ended: done, error_event, http_error, cut, stalled
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        body = asdict(self)
        if self.kind == "embeddings":
            body["answer"] = None  # vectors are compared, not reported
        return body


@dataclass
class Workload:
    """The requests of one scenario and what became of them."""

    apis: list[str]
    scenario: str
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    batch: dict = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    started_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, with_download: bool = True) -> None:
        self.started_at = time.monotonic()
        pieces = [self._batch, self._embeddings]
        pieces += [lambda i=i: self._stream(i) for i in range(STREAMS)]
        pieces += [lambda i=i: self._async_job(i) for i in range(ASYNC_JOBS)]
        if with_download:
            pieces.append(self._download)
        for piece in pieces:
            thread = threading.Thread(target=self._guarded, args=(piece,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def wait(self) -> bool:
        """Until every piece ended or WORKLOAD_TIMEOUT_S passed; whether all ended."""
        deadline = self.started_at + WORKLOAD_TIMEOUT_S
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def _guarded(self, piece) -> None:
        try:
            piece()
        except Exception:  # a harness bug must show in the report, not kill the run
            log.exception("workload piece failed")

    def _api(self, index: int) -> str:
        return self.apis[index % len(self.apis)]

    def _add(self, outcome: Outcome) -> Outcome:
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def _deadline(self) -> float:
        return self.started_at + WORKLOAD_TIMEOUT_S

    # ---- streamed chat --------------------------------------------------------------------
    def _stream(self, index: int) -> None:
        outcome = self._add(Outcome("stream", f"stream-{index}", self._api(index)))
        began = time.monotonic()
        try:
            response = requests.post(
                f"{outcome.api}/v1/chat/completions",
                json=chat_body(outcome.key, STREAM_TOKENS, stream=True),
                stream=True,
                timeout=(5, READ_TIMEOUT_S),
            )
        except requests.RequestException as error:
            outcome.status, outcome.ending = "rejected", "connect_failed"
            outcome.notes.append(repr(error))
            return
        outcome.job_id = response.headers.get("X-Request-Id")
        if response.status_code != 200:
            outcome.status, outcome.ending = "rejected", "http_error"
            outcome.error = _error_of(response)
            return
        outcome.accepted = True
        text = []
        try:
            for line in response.iter_lines(decode_unicode=True):
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    outcome.ending = outcome.ending or "done"
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    outcome.ending, outcome.error = "error_event", chunk["error"]
                    continue
                for choice in chunk.get("choices", []):
                    text.append(choice.get("delta", {}).get("content") or "")
            else:
                outcome.ending = outcome.ending or "cut"  # closed without [DONE]: silent
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
            outcome.ending = "stalled" if "timed out" in str(error).lower() else "cut"
            outcome.notes.append(repr(error)[:300])
        outcome.seconds = time.monotonic() - began
        if outcome.ending == "done" and outcome.error is None:
            outcome.status, outcome.answer = "succeeded", "".join(text)
        elif outcome.job_id:
            # The stream ended early: what the client does next is read the job (as the error says).
            job = self._poll_job(outcome.api, outcome.job_id)
            outcome.status = job.get("status", "timeout") if job else "timeout"
            outcome.answer = _chat_text(job) if job and job.get("status") == "succeeded" else None
            if job and job.get("error"):
                outcome.error = outcome.error or job["error"]
        else:
            outcome.status = "lost"

    def _follow_async(self, outcome: Outcome, response, began: float) -> dict | None:
        """An accepted async job polled to its end: the outcome's status, error and time; its record."""
        outcome.job_id, outcome.accepted = response.json()["id"], True
        job = self._poll_job(outcome.api, outcome.job_id)
        outcome.seconds = time.monotonic() - began
        outcome.status = job.get("status", "timeout") if job else "timeout"
        outcome.error = job.get("error") if job else None
        return job

    # ---- async jobs -----------------------------------------------------------------------
    def _async_job(self, index: int) -> None:
        outcome = self._add(Outcome("async", f"async-{index}", self._api(index + 1)))
        began = time.monotonic()
        response = self._post(outcome, "/v1/chat/completions", chat_body(outcome.key, ASYNC_TOKENS), asynchronous=True)
        if response is None:
            return
        job = self._follow_async(outcome, response, began)
        outcome.answer = _chat_text(job) if job and job.get("status") == "succeeded" else None

    # ---- embeddings -----------------------------------------------------------------------
    def _embeddings(self) -> None:
        for index in range(EMBEDDING_REQUESTS):
            outcome = self._add(Outcome("embeddings", f"embeddings-{index}", self._api(index)))
            began = time.monotonic()
            texts = [prompt(f"embed-{index}-{i}") for i in range(EMBEDDING_TEXTS)]
            response = self._post(outcome, "/v1/embeddings", {"model": EMBEDDING_MODEL, "input": texts})
            outcome.seconds = time.monotonic() - began
            if response is None:
                continue
            outcome.job_id = response.headers.get("X-Request-Id")
            outcome.accepted, outcome.status = True, "succeeded"
            outcome.answer = [item["embedding"] for item in response.json()["data"]]

    # ---- download -------------------------------------------------------------------------
    def _download(self) -> None:
        name = f"chaos-{self.scenario}-{self.seed}"
        outcome = self._add(Outcome("download", name, self._api(0)))
        began = time.monotonic()
        body = {
            "model": {
                "Uri": f"https://huggingface.co/{HUB_REPO}/tree/main/{HUB_VARIANT}",
                "Name": name,
                "ProviderType": "HuggingFace",
                "Publisher": "acme",
                "PromptTemplate": {"assistant": "{Content}", "prompt": "<user>{Content}</user>"},
            },
            "IgnorePipeReport": True,
        }
        response = self._post(outcome, "/openai/download", body, asynchronous=True)
        if response is None:
            return
        job = self._follow_async(outcome, response, began)
        outcome.answer = sorted(f["name"] for f in (job or {}).get("result", {}).get("files", [])) if job else None

    # ---- batch ----------------------------------------------------------------------------
    def _batch(self) -> None:
        api = self._api(1)
        lines = [
            json.dumps(
                {
                    "custom_id": f"line-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": chat_body(f"batch-{i}", BATCH_TOKENS),
                }
            )
            for i in range(BATCH_LINES)
        ]
        self.batch = {"api": api, "lines": BATCH_LINES, "status": "pending"}
        began = time.monotonic()
        try:
            upload = requests.post(
                f"{api}/v1/files",
                files={"file": ("chaos.jsonl", "\n".join(lines).encode())},
                data={"purpose": "batch"},
                timeout=30,
            )
            upload.raise_for_status()
            created = requests.post(
                f"{api}/v1/batches",
                json={
                    "input_file_id": upload.json()["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
                timeout=60,
            )
            created.raise_for_status()
        except requests.RequestException as error:
            self.batch.update(status="rejected", error=repr(error)[:300])
            return
        batch_id = self.batch["id"] = created.json()["id"]
        batch = created.json()
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() > self._deadline():
                self.batch.update(status="timeout", last=batch)
                return
            time.sleep(POLL_S * 2)
            batch = _get_json(f"{api}/v1/batches/{batch_id}") or batch
        self.batch.update(
            status=batch["status"],
            seconds=time.monotonic() - began,
            counts=batch["request_counts"],
            errors=batch.get("errors"),
        )
        output = {}
        for which in ("output_file_id", "error_file_id"):
            if batch.get(which):
                content = requests.get(f"{api}/v1/files/{batch[which]}/content", timeout=30)
                output[which] = [json.loads(line) for line in content.text.splitlines() if line.strip()]
        self.batch["output"] = output

    # ---- shared ---------------------------------------------------------------------------
    def _post(self, outcome: Outcome, path: str, body: dict, asynchronous: bool = False) -> requests.Response | None:
        headers = {"Prefer": "respond-async"} if asynchronous else {}
        try:
            response = requests.post(f"{outcome.api}{path}", json=body, headers=headers, timeout=90)
        except requests.RequestException as error:
            outcome.status = "rejected"
            outcome.notes.append(repr(error)[:300])
            return None
        if response.status_code not in (200, 202):
            outcome.status, outcome.error = "rejected", _error_of(response)
            outcome.job_id = response.headers.get("X-Request-Id")
            return None
        return response

    def _poll_job(self, api: str, job_id: str) -> dict | None:
        """The job once it ended (asking the other API when this one does not answer); None at the deadline."""
        last = None
        for attempt in range(100_000):
            url = self.apis[(self.apis.index(api) + attempt // 20) % len(self.apis)]
            job = _get_json(f"{url}/v1/jobs/{job_id}")
            last = job or last
            if job and job.get("status") in TERMINAL:
                return job
            if time.monotonic() > self._deadline():
                return last
            time.sleep(POLL_S)
        return last


def _get_json(url: str) -> dict | None:
    try:
        response = requests.get(url, timeout=10)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def _error_of(response: requests.Response) -> dict:
    try:
        return {"status": response.status_code, **response.json().get("error", {})}
    except ValueError:
        return {"status": response.status_code, "message": response.text[:200]}


def _chat_text(job: dict) -> str | None:
    result = job.get("result") or {}
    choices = result.get("choices") or []
    return choices[0]["message"]["content"] if choices else None

"""A batch's lines' outcomes: the output line each produced, kept in the batch's results files.

Each driver of a batch appends to a results file of its own (results-<epoch>.jsonl, one JSON
object per line: {"line", "ok", "usage", "output"}), so a driver that died mid-write never leaves a
torn line in front of a later driver's writes; readers skip a torn last line and keep the first
outcome of each line (a line collected twice, by a driver that lost its lease, counts once).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from contracts.batches import PreparedLine
from contracts.errors import ErrorInfo
from contracts.events import EmbeddingResult, GenerationResult
from contracts.job_store import JobRecord
from contracts.jobs import JobKind
from contracts.openai_bodies import chat_completion_body, embeddings_body, text_completion_body

log = logging.getLogger(__name__)


def read_results(folder: Path) -> dict[int, dict]:
    """Line number -> its first recorded outcome, over every driver's results file."""
    outcomes: dict[int, dict] = {}
    for path in sorted(folder.glob("results-*.jsonl"), key=lambda p: int(p.stem.partition("-")[2] or 0)):
        with open(path, encoding="utf-8") as lines:
            for raw in lines:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    log.warning("skipping a torn results line", extra={"file": str(path)})
                    continue
                outcomes.setdefault(entry["line"], entry)
    return outcomes


def prepared_lines(folder: Path) -> Iterator[PreparedLine]:
    with open(folder / "input.jsonl", encoding="utf-8") as lines:
        for raw in lines:
            yield PreparedLine.model_validate_json(raw)


class ResultsWriter:
    """Appends outcomes to this driver's results file; `flush` makes them durable."""

    def __init__(self, folder: Path, epoch: int) -> None:
        self.file = open(folder / f"results-{epoch}.jsonl", "a", encoding="utf-8")

    def write(self, entry: dict) -> None:
        self.file.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def outcome_entry(prepared: PreparedLine, job_id: str, record: JobRecord) -> dict:
    """The outcome of a finished line's job: its output line (success or HTTP error) and usage."""
    request_id = job_id
    if record.result is not None:
        body, usage = _body(prepared, job_id, record)
        response = {"status_code": 200, "request_id": request_id, "body": body}
        output = {"id": f"batch_req_{job_id}", "custom_id": prepared.custom_id, "response": response, "error": None}
        return {"line": prepared.line, "ok": True, "usage": usage, "output": output}
    info = (
        ErrorInfo(**record.error) if record.error else ErrorInfo(status=500, message="No outcome.", type="server_error")
    )
    error = {"message": info.message, "type": info.type, "param": info.param, "code": info.code}
    response = {"status_code": info.status, "request_id": request_id, "body": {"error": error}}
    output = {"id": f"batch_req_{job_id}", "custom_id": prepared.custom_id, "response": response, "error": None}
    return {"line": prepared.line, "ok": False, "usage": {}, "output": output}


def unfinished_entry(prepared: PreparedLine, job_id: str, code: str, message: str) -> dict:
    """A line that did not run to its end before the batch expired or was cancelled."""
    error = {"code": code, "message": message}
    output = {"id": f"batch_req_{job_id}", "custom_id": prepared.custom_id, "response": None, "error": error}
    return {"line": prepared.line, "ok": False, "usage": {}, "output": output, "unfinished": True}


def _body(prepared: PreparedLine, job_id: str, record: JobRecord) -> tuple[dict, dict]:
    created = int(record.finished_at or record.created_at)
    model = prepared.payload["model"]
    if prepared.kind == JobKind.EMBEDDING:
        result = EmbeddingResult(**record.result)
        usage = {"input_tokens": result.prompt_tokens}
        return embeddings_body(model, result, prepared.encoding_format), usage
    result = GenerationResult(**record.result)
    usage = {
        "input_tokens": result.usage.prompt_tokens,
        "cached_tokens": result.usage.prompt_tokens_details.cached_tokens,
        "output_tokens": result.usage.completion_tokens,
    }
    if prepared.kind == JobKind.CHAT:
        return chat_completion_body(job_id, model, created, result), usage
    return text_completion_body(job_id, model, created, result, prepared.echo, prepared.payload.get("n", 1)), usage


def counts_of(outcomes: dict[int, dict]) -> dict[str, int]:
    """request_counts and usage over recorded outcomes (unfinished lines count in neither)."""
    counts = {"completed": 0, "failed": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
    for entry in outcomes.values():
        if entry.get("unfinished"):
            continue
        counts["completed" if entry["ok"] else "failed"] += 1
        for name, value in entry["usage"].items():
            counts[name] += value
    return counts

"""Validating a batch's input file, every line before any runs; valid lines become jobs to feed.

A line fails for malformed JSON, a missing or repeated `custom_id`, a method other than POST, a
`url` other than the batch's endpoint, or a body its endpoint would reject (the same checks the
endpoint runs, model included). Errors name their line (1-based, as OpenAI counts them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydantic

from api.chat.protocol import ChatCompletionRequest
from api.completions.protocol import CompletionRequest
from api.embeddings.protocol import EmbeddingRequest
from api.errors import ApiError, validation_error
from api.services import Services
from contracts.batches import MAX_BATCH_LINES, MAX_REPORTED_ERRORS, PreparedLine, line_job_id
from contracts.jobs import JobKind
from contracts.model_directory import EMBEDDING, GENERATION

_REQUESTS = {
    JobKind.CHAT: ChatCompletionRequest,
    JobKind.COMPLETION: CompletionRequest,
    JobKind.EMBEDDING: EmbeddingRequest,
}


@dataclass
class Validation:
    """What validating an input file found: errors (capped), or the number of lines and the model."""

    errors: list[dict] = field(default_factory=list)
    error_count: int = 0
    lines: int = 0
    model: str | None = None

    def add(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message, "param": param})


class LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def validate_input(
    services: Services, batch_id: str, endpoint: str, kind: JobKind, source: Path, target: Path
) -> Validation:
    """Check every line of `source`; when all pass, write them as PreparedLines to `target`."""
    result = Validation()
    seen: set[str] = set()
    models: dict[str, str] = {}
    temp = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as lines, open(temp, "w", encoding="utf-8") as out:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            result.lines += 1
            if result.lines > MAX_BATCH_LINES:
                result.add(number, "too_many_lines", f"A batch holds at most {MAX_BATCH_LINES} requests.")
                break
            try:
                prepared = _prepare(services, batch_id, endpoint, kind, raw, seen, models)
            except LineError as error:
                result.add(number, error.code, error.message, error.param)
                continue
            if result.error_count == 0:
                prepared.line = number
                result.model = result.model or prepared.payload["model"]
                out.write(prepared.model_dump_json() + "\n")
    if result.lines == 0 and not result.errors:
        result.add(None, "empty_file", "The input file holds no requests.")
    if result.error_count:
        temp.unlink(missing_ok=True)
    else:
        os.replace(temp, target)
    return result


def _prepare(
    services: Services, batch_id: str, endpoint: str, kind: JobKind, raw: bytes, seen: set[str], models: dict
) -> PreparedLine:
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        raise LineError("invalid_json_line", "This line is not valid JSON.") from None
    if not isinstance(line, dict):
        raise LineError("invalid_json_line", "Each line must be a JSON object.")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("missing_required_parameter", "custom_id must be a non-empty string.", "custom_id")
    if custom_id in seen:
        raise LineError(
            "duplicate_custom_id", f"The custom_id {custom_id[:64]!r} is used by an earlier line.", "custom_id"
        )
    seen.add(custom_id)
    if line.get("method", "POST") != "POST":
        raise LineError("invalid_method", "method must be POST.", "method")
    if line.get("url") != endpoint:
        raise LineError("mismatched_url", f"url must be the batch's endpoint, {endpoint}.", "url")
    unknown = set(line) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise LineError("unsupported_parameter", f"Unrecognized line field: {sorted(unknown)[0]}", sorted(unknown)[0])
    body = line.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", "body must be a JSON object.", "body")
    try:
        request = _REQUESTS[kind].model_validate(body)
    except pydantic.ValidationError as invalid:
        error = validation_error(invalid)
        raise LineError(error.code or "invalid_request", error.message, error.param and f"body.{error.param}") from None
    if getattr(request, "stream", False):
        raise LineError("invalid_request", "stream is not supported in a batch.", "body.stream")
    request.model = _model(services, kind, request, models)
    job_id = line_job_id(batch_id, 0)  # the driver sets each line's own job ID when it feeds it
    payload = request.to_job(job_id).model_dump()
    if kind == JobKind.EMBEDDING:
        limit = services.settings.max_embedding_inputs
        if len(request.inputs) > limit:
            raise LineError(
                "invalid_request", f"Too many inputs: {len(request.inputs)}; at most {limit}.", "body.input"
            )
        return PreparedLine(
            line=0, custom_id=custom_id, kind=kind, payload=payload, encoding_format=request.encoding_format
        )
    payload["background"] = True
    echo = request.prompts if kind == JobKind.COMPLETION and request.echo else None
    return PreparedLine(line=0, custom_id=custom_id, kind=kind, payload=payload, echo=echo)


def _model(services: Services, kind: JobKind, request, models: dict[str, str]) -> str:
    """The line's model resolved as its endpoint would (remembered per name within the file)."""
    key = (request.model, getattr(request, "output_limit", None) or getattr(request, "max_tokens", None))
    if key in models:
        return models[key]
    try:
        if kind == JobKind.EMBEDDING:
            name = services.require_model(request.model, kind=EMBEDDING)
        elif kind == JobKind.CHAT:
            name = services.require_model(request.model, request.output_limit, GENERATION, request.output_limit_param)
        else:
            name = services.require_model(request.model, request.max_tokens)
    except ApiError as error:
        param = f"body.{error.param}" if error.param else None
        raise LineError(error.code or "invalid_request", error.message, param) from None
    models[key] = name
    return name

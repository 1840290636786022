"""Message Batch requests (POST /v1/messages/batches), written as an OpenAI batch input file.

Each request's `params` is checked as POST /v1/messages checks its body (and its model resolved
the same way); the first that fails makes the whole create a 400 naming it (`requests.N.params...`).
A valid batch becomes one line per request, in order: `{custom_id, method, url, body}` with the chat
body the Messages request converts to, so Ladle's batch runner runs it like any chat batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pydantic
from pydantic import Field

from api.anthropic.protocol import Lenient, MessagesRequest
from api.errors import ApiError, bad_request, validation_error
from contracts.batches import MAX_BATCH_LINES
from contracts.file_store import FileRecord, FileStore

# The runner's endpoint every request of a Message Batch runs as.
CHAT_ENDPOINT = "/v1/chat/completions"
# Anthropic's bound on the requests of a batch, or Ladle's on a batch's lines if smaller.
MAX_REQUESTS = min(100_000, MAX_BATCH_LINES)
CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Request(Lenient):
    custom_id: str = Field(pattern=CUSTOM_ID_PATTERN)
    params: dict


class _Batch(Lenient):
    requests: list[_Request] = Field(min_length=1, max_length=MAX_REQUESTS)


class MessageBatchRequest(_Request):
    """One request: a `custom_id` (unique in the batch) and the Messages request to run (not streamed)."""

    params: MessagesRequest


class MessageBatchCreateRequest(_Batch):
    """POST /v1/messages/batches: the requests to run (1 to MAX_REQUESTS)."""

    requests: list[MessageBatchRequest] = Field(min_length=1, max_length=MAX_REQUESTS)


def batch_lines(body: dict, require_model: Callable[[str, int], str]) -> list[dict]:
    """The batch input file's lines for a create's body; a 400 naming the first invalid request."""
    batch = _Batch.model_validate(body)  # its errors name `requests...` themselves
    seen: set[str] = set()
    models: dict[tuple[str, int], str] = {}
    lines = []
    for index, request in enumerate(batch.requests):
        where = f"requests.{index}"
        if request.custom_id in seen:
            param = f"{where}.custom_id"
            message = f"{param}: custom_id '{request.custom_id}' is used by an earlier request; each must be unique."
            raise bad_request(message, param, "duplicate_custom_id")
        seen.add(request.custom_id)
        chat = _chat_body(request.params, f"{where}.params", models, require_model)
        lines.append({"custom_id": request.custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": chat})
    return lines


def _chat_body(params: dict, where: str, models: dict, require_model: Callable[[str, int], str]) -> dict:
    try:
        request = MessagesRequest.model_validate(params)
        if request.stream:
            raise bad_request("A batch's requests are not streamed.", "stream", "invalid_value")
        body = request.chat_body()
        key = (request.model, request.max_tokens)
        if key not in models:
            models[key] = require_model(request.model, request.max_tokens)
    except pydantic.ValidationError as invalid:
        reason = invalid.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise within(validation_error(invalid), where, reason) from None
    except ApiError as error:
        raise within(error, where) from None
    return body


def within(error: ApiError, where: str, reason: str | None = None) -> ApiError:
    """`error` (a request's, naming a field of it) as the batch's 400, naming the field in the batch."""
    param = f"{where}.{error.param}" if error.param else where
    return bad_request(f"{param}: {reason or error.message}", param, error.code)


def write_input_file(files: FileStore, lines: list[dict], filename: str, owner: str | None) -> FileRecord:
    """Store the lines as a batch input file of the key's."""
    temp = files.temp_path()
    try:
        with open(temp, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        return files.add(temp, filename, "batch", owner)
    finally:
        temp.unlink(missing_ok=True)

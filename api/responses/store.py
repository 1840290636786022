"""Stored responses in Redis, shared by every API process: what a response was asked (its echoed
parameters and input items) and how it ended (its output items, usage, error).

A response is one hash under `keys.response_key`: `request` is written when the response is
created, `outcome` once it ends (only while the hash exists, so a response deleted meanwhile stays
deleted). Both expire LADLE_RESPONSES_TTL seconds after creation (30 days by default, as OpenAI
keeps them). A response whose items would take more than MAX_STORED_BYTES of JSON is stored
without them (`context_dropped`): it can still be retrieved, but not continued with
`previous_response_id` nor have its input items listed (both a 400 saying so).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace

import redis
from flask import Flask, current_app

from api.responses.keys import response_key

# Largest JSON of a stored response's request (parameters and items) kept whole.
MAX_STORED_BYTES = 1 << 20
# What a response ID looks like: `resp_` and its job's ID; anything else names no response.
RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}")
EXTENSION = "ladle-responses"

# Write the outcome only while the response exists: DELETE wins over a request still finishing.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'outcome', ARGV[1])
  return 1
end
return 0
"""


def response_id_of(job_id: str) -> str:
    """The ID of the response a job runs."""
    return f"resp_{job_id}"


@dataclass(frozen=True)
class StoredResponse:
    """A response as stored: its request and, once it ended, its outcome."""

    id: str
    job_id: str
    created_at: int
    # The request's parameters as the Response object echoes them (model, instructions, tools, ...).
    fields: dict
    # The conversation before this request (from `previous_response_id`), then this request's input:
    # items in the Responses API's shape, each with its ID.
    prior: list[dict] = field(default_factory=list)
    input: list[dict] = field(default_factory=list)
    # The non-secret ID of the API key that created it (None: no keys configured).
    owner: str | None = None
    # Tool types of the request Ladle does not run (left out of the prompt).
    left_out: list[str] = field(default_factory=list)
    context_dropped: bool = False
    # status, output, usage, error, incomplete_details, completed_at; None while it runs.
    outcome: dict | None = None

    def visible_to(self, owner: str | None) -> bool:
        """Whether a request made with API key `owner` may see it (everyone when it has no owner)."""
        return self.owner is None or self.owner == owner

    @property
    def context(self) -> list[dict]:
        """Every item the model was shown, instructions aside."""
        return self.prior + self.input


class ResponseStore:
    """Creates, finishes, reads and deletes stored responses."""

    def __init__(self, client: redis.Redis, ttl_s: int, max_bytes: int = MAX_STORED_BYTES) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._finish = client.register_script(_FINISH)

    def create(self, response: StoredResponse) -> StoredResponse:
        """Store a new response (without its outcome); returns it as stored (maybe without its items)."""
        request = _request_json(response)
        if len(request) > self.max_bytes:
            response = replace(response, prior=[], input=[], context_dropped=True)
            request = _request_json(response)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(response_key(response.id), "request", request)
        pipe.expire(response_key(response.id), self.ttl_s)
        pipe.execute()
        return response

    def finish(self, response_id: str, outcome: dict) -> None:
        """Record how the response ended, unless it was deleted meanwhile."""
        self._finish(keys=[response_key(response_id)], args=[json.dumps(outcome)])

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None (no such ID, expired or deleted)."""
        if not RESPONSE_ID.fullmatch(response_id):
            return None
        hash_fields = {_text(k): v for k, v in self.client.hgetall(response_key(response_id)).items()}
        request = hash_fields.get("request")
        if request is None:
            return None
        outcome = hash_fields.get("outcome")
        # Only the fields this version knows: another API process may be of a later one.
        stored = {k: v for k, v in json.loads(request).items() if k in _REQUEST_FIELDS}
        return StoredResponse(**stored, outcome=json.loads(outcome) if outcome else None)

    def delete(self, response_id: str) -> bool:
        """Forget the response; whether there was one."""
        return bool(self.client.delete(response_key(response_id))) if RESPONSE_ID.fullmatch(response_id) else False


_REQUEST_FIELDS = frozenset(f.name for f in fields(StoredResponse)) - {"outcome"}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _request_json(response: StoredResponse) -> str:
    request = asdict(response)
    del request["outcome"]
    return json.dumps(request, separators=(",", ":"))


def install(app: Flask) -> None:
    """Build the store over the API's Redis client (app.extensions['ladle'] must exist)."""
    if EXTENSION not in app.extensions:
        ladle = app.extensions["ladle"]
        app.extensions[EXTENSION] = ResponseStore(ladle.store.client, ladle.settings.responses_ttl_s)


def responses() -> ResponseStore:
    """The API process's response store."""
    return current_app.extensions[EXTENSION]

"""What the API's routes share: settings, the job store and client, the model directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from celery import Celery
from flask import current_app, g, request
from pydantic import BaseModel, Field
from werkzeug.exceptions import RequestEntityTooLarge

from api.catalog.catalog import best_variant, load_catalog
from api.errors import ApiError, bad_request, model_not_found
from api.queue.bundler import EmbeddingBundler
from api.queue.client import JobClient, new_job_id
from api.queue.events import JobEventFeed
from api.request_logging import tag_request
from contracts import errors
from contracts.celery_config import celery_config
from contracts.job_store import JobStore
from contracts.jobs import JobKind
from contracts.model_directory import GENERATION, ModelDirectory
from contracts.redis_connection import API_RETRY_S, redis_client
from contracts.settings import Settings
from contracts.token_seal import TokenSeal

# Redis connections one API process opens at most. Under gevent every open stream is a greenlet
# that reads its job's Stream on quiet ticks; a bounded pool makes a burst of them wait their turn
# for a connection instead of opening one each (thousands of sockets on Redis).
REDIS_CONNECTIONS = 64
# How long a request waits for a free connection before it is a 503 (redis.ConnectionError).
REDIS_CONNECTION_WAIT_S = 10
Query = TypeVar("Query", bound=BaseModel)


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: JobStore
    jobs: JobClient
    models: ModelDirectory
    seal: TokenSeal
    embeddings: EmbeddingBundler

    @classmethod
    def build(cls, settings: Settings) -> Services:
        if not settings.redis_url:
            raise ValueError("the API needs REDIS_URL (or LADLE_REDIS_URL); `ladle serve` sets it")
        client = redis_client(
            settings,
            API_RETRY_S,
            max_connections=REDIS_CONNECTIONS,
            connection_wait_s=REDIS_CONNECTION_WAIT_S,
            health_check_interval=30,
        )
        store = JobStore(client, settings.job_ttl_s, settings.events_ttl_s)
        producer = Celery("ladle-api")
        producer.conf.update(celery_config(settings))
        jobs = JobClient(settings, store, producer)
        bundler = EmbeddingBundler(jobs, settings.embedding_window_ms / 1000, settings.embedding_batch)
        directory = ModelDirectory(settings.model_dir)
        return cls(settings, store, jobs, directory, TokenSeal.from_settings(settings), bundler)

    def resolve_model(self, name: str) -> str:
        """A model folder name for `name`: itself, or a catalog alias/entry name's best local variant."""
        if self.models.exists(name):
            return name
        entries = load_catalog(self.settings.user_catalog_dir)
        named = next((e for e in entries if e.name == name), None)
        if named is not None:
            return named.displayName
        local = [e for e in entries if self.models.exists(e.displayName)]
        variant = best_variant(local, name, self.live_providers())
        return variant.displayName if variant else name

    def live_providers(self) -> set[str]:
        """Execution providers live workers offer (cpu when none is known)."""
        return {p for w in self.jobs.live_workers() for p in w.execution_providers} or {"cpu"}

    def require_model(
        self, name: str, max_tokens: int | None = None, kind: str = GENERATION, limit_param: str = "max_tokens"
    ) -> str:
        """The resolved model name; 404 if not in the directory, 400 for the wrong kind or a limit past its context."""
        found = self.models.usable_kind(name)  # a folder name as given: the catalog is not read
        if found is None:
            name = self.resolve_model(name)
            found = self.models.usable_kind(name)
        if found is None:
            raise model_not_found(name)
        if found != kind:
            raise ApiError.of(errors.wrong_model_kind(name, kind))
        if kind != GENERATION:
            return name
        context = self.models.context_length(name)
        if max_tokens is not None and max_tokens >= context:
            raise bad_request(
                f"{limit_param} is too large: {max_tokens}. This model's context length is "
                f"{context} tokens, prompt included.",
                limit_param,
                "context_length_exceeded",
            )
        return name


def services() -> Services:
    return current_app.extensions["ladle"]


def json_body() -> dict:
    """The request's JSON object, or a 400 saying why it is not one (413 past the size limit)."""
    limit = request.max_content_length
    # A chunked body has no Content-Length to check up front: werkzeug stops reading at the limit,
    # so a body that fills it was cut short; it is too large, not malformed.
    if request.content_length is None and limit is not None and len(request.get_data()) >= limit:
        raise RequestEntityTooLarge()
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # the parser's nesting limit (about 1,000 levels); not a ValueError
        raise ApiError(
            400, "We could not parse the JSON body of your request: it is nested too deeply.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(
            400, "We could not parse the JSON body of your request: it must be a JSON object.", code="invalid_json"
        )
    if _holds_lone_surrogate(body):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request: a string holds an unpaired UTF-16 surrogate "
            "escape (\\ud800-\\udfff), which is not a Unicode character.",
            code="invalid_json",
        )
    return body


def _holds_lone_surrogate(body: dict) -> bool:
    """Whether any key or string in the parsed body holds a lone surrogate (JSON allows the escape; no
    tokenizer, Redis or UTF-8 encoder does). Iterative: the parser allows deeper nesting than recursion."""
    pending: list[object] = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def query_args(model: type[Query]) -> Query:
    """The query string validated by `model`; a 400 naming the parameter otherwise."""
    return model.model_validate(request.args.to_dict())


def new_request_job_id() -> str:
    """A new job ID for this request's job; it becomes the request's ID too (X-Request-Id, log records)."""
    return tag_request(new_job_id())


def submit_request(
    task: str, kind: JobKind, model: str, to_job: Callable[[str], BaseModel], device: str
) -> tuple[str, JobEventFeed | None]:
    """Record and enqueue a request's job, followed unless the client prefers async; tags the response."""
    job_id = new_request_job_id()
    payload = to_job(job_id).model_dump()
    feed = services().jobs.submit(task, kind, model, payload, device, not prefers_async(), owner=g.get("api_key_id"))
    return job_id, feed


class AsyncPreference(BaseModel):
    """The request headers a job route reads: `Prefer: respond-async` for 202 and the job."""

    Prefer: str | None = Field(None, json_schema_extra={"examples": ["respond-async"]})


def prefers_async() -> bool:
    """RFC 7240: `Prefer: respond-async` asks for 202 and a job ID instead of waiting."""
    return "respond-async" in request.headers.get("Prefer", "").replace(" ", "").split(",")

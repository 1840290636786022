"""The Flask application factory."""

from __future__ import annotations

import uuid

from flask import Flask, g

from api import metrics, openapi, status_page
from api.access import guard, rate_limits
from api.access.keys import ApiKeys
from api.anthropic import batches as anthropic_batches
from api.anthropic import routes as anthropic_routes
from api.azure import routes as azure_routes
from api.batches import routes as batch_routes
from api.chat import render as chat_render
from api.chat import routes as chat_routes
from api.completions import render as completion_render
from api.completions import routes as completion_routes
from api.databricks import routes as databricks_routes
from api.downloads import protocol as download_protocol
from api.downloads import routes as download_routes
from api.embeddings import protocol as embedding_protocol
from api.embeddings import routes as embedding_routes
from api.errors import register_error_handlers
from api.files import routes as file_routes
from api.foundry import routes as foundry_routes
from api.health import routes as health_routes
from api.jobs import listing as job_listing
from api.jobs import routes as jobs_routes
from api.models import routes as models_routes
from api.queue.responses import register_renderer
from api.request_logging import RequestIdFilter, log_request, tag_request
from api.responses import routes as response_routes
from api.services import Services
from api.token_count import protocol as token_count_protocol
from api.token_count import routes as token_count_routes
from contracts.events import DownloadResult, EmbeddingResult, GenerationResult, TokenCountResult
from contracts.jobs import JobKind
from contracts.log_setup import configure_logging
from contracts.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API; settings default to the environment (LADLE_*, REDIS_URL)."""
    settings = settings or Settings.from_env()
    configure_logging(settings, record_filter=RequestIdFilter())
    app = Flask("ladle")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["ladle"] = Services.build(settings)
    register_error_handlers(app)
    blueprints = (
        chat_routes.bp,
        response_routes.bp,
        completion_routes.bp,
        embedding_routes.bp,
        token_count_routes.bp,
        jobs_routes.bp,
        models_routes.bp,
        foundry_routes.bp,
        download_routes.bp,
        file_routes.bp,
        batch_routes.bp,
        job_listing.bp,
        health_routes.bp,
        openapi.bp,
        status_page.bp,
        azure_routes.bp,
        databricks_routes.bp,
        anthropic_routes.bp,
        anthropic_batches.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    # How GET /v1/jobs/{id} shows a finished job's result: in the shape its endpoint returns.
    register_renderer(JobKind.CHAT, GenerationResult, chat_render.job_result_body)
    register_renderer(JobKind.COMPLETION, GenerationResult, completion_render.job_result_body)
    register_renderer(JobKind.EMBEDDING, EmbeddingResult, embedding_protocol.job_result_body)
    register_renderer(JobKind.TOKEN_COUNT, TokenCountResult, token_count_protocol.job_result_body)
    register_renderer(JobKind.DOWNLOAD, DownloadResult, download_protocol.job_result_body)
    metrics.install(app, app.extensions["ladle"])

    @app.before_request
    def assign_request_id() -> None:
        tag_request(uuid.uuid4().hex)

    keys = ApiKeys.from_settings(settings)
    guard.install(app, keys)
    rate_limits.install(app, app.extensions["ladle"], keyed=keys.enabled)

    @app.after_request
    def tag_response(response):
        response.headers.setdefault("X-Request-Id", g.get("request_id", ""))
        return response

    app.after_request(log_request)

    return app

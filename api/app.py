"""The Flask application factory."""

from __future__ import annotations

import uuid

from flask import Flask, g

from api import (
    foundry_routes,
    health_routes,
    jobs_routes,
    metrics,
    models_routes,
    openapi,
    status_page,
    token_count_routes,
)
from api.batches import routes as batch_routes
from api.chat import routes as chat_routes
from api.completions import routes as completion_routes
from api.downloads import routes as download_routes
from api.embeddings import routes as embedding_routes
from api.errors import register_error_handlers
from api.files import routes as file_routes
from api.job_list import routes as job_list_routes
from api.request_logging import RequestIdFilter, log_request
from api.services import Services
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
        completion_routes.bp,
        embedding_routes.bp,
        token_count_routes.bp,
        jobs_routes.bp,
        models_routes.bp,
        foundry_routes.bp,
        download_routes.bp,
        file_routes.bp,
        batch_routes.bp,
        job_list_routes.bp,
        health_routes.bp,
        openapi.bp,
        status_page.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    metrics.install(app, app.extensions["ladle"])

    @app.before_request
    def assign_request_id() -> None:
        g.request_id = uuid.uuid4().hex

    @app.after_request
    def tag_response(response):
        response.headers.setdefault("X-Request-Id", g.get("request_id", ""))
        return response

    app.after_request(log_request)

    return app

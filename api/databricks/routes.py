"""POST /serving-endpoints/{name}/invocations (databricks-sdk's serving_endpoints.query, MLflow's
deployments client) and /serving-endpoints/{chat/completions,completions,embeddings} (OpenAI clients
with base_url=<host>/serving-endpoints, `model` = the endpoint name). An endpoint is a model.
"""

from __future__ import annotations

from flask import Blueprint, make_response
from pydantic import BaseModel

from api.chat.protocol import ChatCompletionRequest
from api.chat.routes import serve_chat
from api.completions.protocol import CompletionRequest
from api.completions.routes import serve_completion
from api.databricks.errors import DatabricksErrorBody, databricks_error
from api.databricks.protocol import openai_body
from api.embeddings.protocol import EmbeddingRequest
from api.embeddings.routes import serve_embeddings
from api.errors import ApiError, bad_request, register_dialect
from api.openapi import documented
from api.services import json_body, services
from contracts.model_directory import EMBEDDING

bp = Blueprint("databricks", __name__)
register_dialect(bp.name, databricks_error, "/serving-endpoints")
register_dialect(bp.name, databricks_error, "/api/2.0/serving-endpoints")
# What the OpenAPI document says every route of this dialect answers on errors.
DATABRICKS_ERRORS = documented(error=DatabricksErrorBody)


def _served(response, model: str):
    """The response with Databricks' `served-model-name` header."""
    response = make_response(response)
    response.headers["served-model-name"] = model
    return response


def _endpoint_model(name: str) -> str:
    ctx = services()
    model = ctx.resolve_model(name)
    if not ctx.models.exists(model):
        raise ApiError(404, f"The serving endpoint '{name}' does not exist.", param="name", code="endpoint_not_found")
    return model


@bp.post("/serving-endpoints/<name>/invocations")
@DATABRICKS_ERRORS
def invocations(name: str):
    """Chat (`messages`), completions (`prompt`) or embeddings (`input`), as the endpoint's model does."""
    model = _endpoint_model(name)
    body = openai_body(model, json_body())
    if services().models.kind(model) == EMBEDDING:
        return _served(serve_embeddings(EmbeddingRequest.model_validate(body)), model)
    if "messages" in body:
        return _served(serve_chat(ChatCompletionRequest.model_validate(body)), model)
    if "prompt" in body:
        return _served(serve_completion(CompletionRequest.model_validate(body)), model)
    raise bad_request(f"The endpoint '{name}' serves chat and completions: send 'messages' or 'prompt'.", "messages")


@bp.post("/serving-endpoints/chat/completions")
@bp.post("/serving-endpoints/v1/chat/completions")
@DATABRICKS_ERRORS
def chat_completions():
    chat = ChatCompletionRequest.model_validate(json_body())
    chat.model = _endpoint_model(chat.model)
    return _served(serve_chat(chat), chat.model)


@bp.post("/serving-endpoints/completions")
@bp.post("/serving-endpoints/v1/completions")
@DATABRICKS_ERRORS
def completions():
    request = CompletionRequest.model_validate(json_body())
    request.model = _endpoint_model(request.model)
    return _served(serve_completion(request), request.model)


@bp.post("/serving-endpoints/embeddings")
@bp.post("/serving-endpoints/v1/embeddings")
@DATABRICKS_ERRORS
def embeddings():
    request = EmbeddingRequest.model_validate(json_body())
    request.model = _endpoint_model(request.model)
    return _served(serve_embeddings(request), request.model)


# Databricks' task names for what an endpoint serves.
TASKS = {EMBEDDING: "llm/v1/embeddings"}
CHAT_TASK = "llm/v1/chat"


def _endpoint(model: str) -> dict:
    """A model as a serving endpoint (databricks-sdk's ServingEndpoint): always ready."""
    models = services().models
    return {
        "name": model,
        "id": model,
        "creator": "ladle",
        "creation_timestamp": models.created_at(model) * 1000,
        "last_updated_timestamp": models.created_at(model) * 1000,
        "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
        "task": TASKS.get(models.kind(model), CHAT_TASK),
        "config": {"served_entities": [{"name": model, "entity_name": model}]},
    }


@bp.get("/api/2.0/serving-endpoints")
@DATABRICKS_ERRORS
def list_endpoints():
    """Every model in the model directory as a serving endpoint (`serving_endpoints.list()`)."""
    return {"endpoints": [_endpoint(name) for name in services().models.names()]}


@bp.get("/api/2.0/serving-endpoints/<name>")
@DATABRICKS_ERRORS
def get_endpoint(name: str):
    """One model as a serving endpoint (`serving_endpoints.get(name)`)."""
    return _endpoint(_endpoint_model(name))


class HostMetadata(BaseModel):
    """databricks-sdk's HostMetadata (`databricks.sdk.oauth`): what `Config` reads from the host."""

    oidc_endpoint: str
    account_id: str | None
    workspace_id: str | None
    cloud: str | None
    token_federation_default_oidc_audiences: list[str] | None


@bp.get("/.well-known/databricks-config")
@documented(response=HostMetadata, error=DatabricksErrorBody)
def host_metadata():
    """The host's discovery document, which databricks-sdk fetches for every new client: no OIDC (the API
    key is the token), no account, workspace or cloud; an SDK reads nothing from it but that it answers."""
    empty = HostMetadata(
        oidc_endpoint="", account_id=None, workspace_id=None, cloud=None, token_federation_default_oidc_audiences=None
    )
    return empty.model_dump()

"""Models present in the model directory: OpenAI's /v1/models and /v1/models/{id} (Anthropic's, when
the request carries `anthropic-version`), and Foundry's /openai/models and /openai/models/{id}."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.anthropic.errors import anthropic_error
from api.anthropic.render import model_object
from api.errors import ApiError, model_not_found, register_dialect
from api.openapi import documented
from api.services import query_args, services
from contracts.model_directory import GENERATION, ModelDirectory

bp = Blueprint("models", __name__)


def _anthropic() -> bool:
    """Whether the request is Anthropic's SDK's: it sends `anthropic-version` with every request."""
    return "anthropic-version" in request.headers


def _error_shape(error: ApiError) -> tuple[dict, dict]:
    return anthropic_error(error) if _anthropic() else (error.body(), error.headers)


register_dialect(bp.name, _error_shape)


class AnthropicPage(BaseModel):
    """Anthropic's paging of the model list (read only with `anthropic-version`)."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(20, ge=1, le=1000)
    after_id: str | None = None
    before_id: str | None = None


def _openai_model(models: ModelDirectory, name: str) -> dict:
    return {"id": name, "object": "model", "created": models.created_at(name), "owned_by": "ladle"}


@bp.get("/v1/models")
def list_models():
    """The models in the model directory, as OpenAI lists them (with `anthropic-version`: as Anthropic does)."""
    models = services().models
    if _anthropic():
        return jsonify(_anthropic_page(models, query_args(AnthropicPage)))
    return jsonify({"object": "list", "data": [_openai_model(models, n) for n in models.names()]})


def _anthropic_page(models: ModelDirectory, page: AnthropicPage) -> dict:
    """The chat models (the Messages API serves no others) after `after_id` and/or before `before_id`."""
    names = [name for name, kind in models.kinds().items() if kind == GENERATION]
    if page.after_id is not None:
        names = names[names.index(page.after_id) + 1 :] if page.after_id in names else []
    if page.before_id is not None:
        names = names[: names.index(page.before_id)] if page.before_id in names else []
    # Paging backwards (before_id alone) takes the page nearest the cursor.
    chosen = names[-page.limit :] if page.before_id is not None and page.after_id is None else names[: page.limit]
    data = [model_object(models, name) for name in chosen]
    return {
        "data": data,
        "has_more": len(names) > len(chosen),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@bp.get("/v1/models/<model_id>")
@bp.get("/openai/models/<model_id>")
def retrieve_model(model_id: str):
    """One model, in the shape of the list (404 `model_not_found` if the directory has no such model)."""
    models = services().models
    kind = models.usable_kind(model_id)
    if kind is None or (_anthropic() and kind != GENERATION):
        raise model_not_found(model_id)
    return jsonify(model_object(models, model_id) if _anthropic() else _openai_model(models, model_id))


@bp.get("/openai/models")
@documented(response=list[str])
def list_model_names():
    """Names of the models in the model directory (Foundry)."""
    return jsonify(services().models.names())

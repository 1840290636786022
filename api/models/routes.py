"""Models present in the model directory: OpenAI's /v1/models and Foundry's /openai/models."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.openapi import documented
from api.services import services

bp = Blueprint("models", __name__)


@bp.get("/v1/models")
def list_models():
    """Models in the model directory, as OpenAI lists them."""
    models = services().models
    data = [{"id": n, "object": "model", "created": models.created_at(n), "owned_by": "ladle"} for n in models.names()]
    return jsonify({"object": "list", "data": data})


@bp.get("/openai/models")
@documented(response=list[str])
def list_model_names():
    """Names of the models in the model directory (Foundry)."""
    return jsonify(services().models.names())

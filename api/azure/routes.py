"""Azure AI Model Inference: GET /info, POST /chat/completions, POST /embeddings, each at the root
and under /models (the SDK appends its route to whatever endpoint it is given; Foundry endpoints
end in /models). The OpenAI handlers serve them; only the request checks and error shape differ.
"""

from __future__ import annotations

import json

from flask import Blueprint, g, jsonify, make_response

from api.azure.errors import azure_error
from api.azure.protocol import (
    CHAT_FIELDS,
    EMBEDDING_FIELDS,
    apply_extra_parameters,
    check_api_version,
    requested_model,
)
from api.chat.protocol import ChatCompletionRequest
from api.chat.routes import serve_chat
from api.embeddings.protocol import EmbeddingRequest
from api.embeddings.routes import serve_embeddings
from api.errors import model_not_found, register_dialect
from api.services import json_body, services
from contracts.model_directory import EMBEDDING, GENERATION

bp = Blueprint("azure", __name__)
register_dialect(bp.name, azure_error)

# The SDK's ModelType spellings.
MODEL_TYPES = {GENERATION: "chat_completion", EMBEDDING: "embeddings"}


@bp.before_request
def _api_version() -> None:
    check_api_version()


@bp.get("/info")
@bp.get("/models/info")
def model_info():
    """The model a request names (`azureml-model-deployment`, `?model=`, or the default): name, type, provider."""
    ctx = services()
    name = ctx.resolve_model(requested_model())
    if not ctx.models.exists(name):
        raise model_not_found(name)
    kind = MODEL_TYPES[ctx.models.kind(name)]
    return jsonify({"model_name": name, "model_type": kind, "model_provider_name": "Ladle"})


@bp.post("/chat/completions")
@bp.post("/models/chat/completions")
def chat_completions():
    """A chat completion (Azure's request rules), answered whole or streamed."""
    body = apply_extra_parameters(json_body(), CHAT_FIELDS, ChatCompletionRequest)
    body["model"] = requested_model(body, GENERATION)
    return serve_chat(ChatCompletionRequest.model_validate(body))


@bp.post("/embeddings")
@bp.post("/models/embeddings")
def embeddings():
    """Embeddings of one or more texts (Azure's request rules); the result carries an `id`."""
    body = apply_extra_parameters(json_body(), EMBEDDING_FIELDS, EmbeddingRequest)
    body["model"] = requested_model(body, EMBEDDING)
    response = make_response(serve_embeddings(EmbeddingRequest.model_validate(body)))
    if response.status_code == 200:
        response.set_data(json.dumps({"id": g.request_id, **response.get_json()}))
    return response

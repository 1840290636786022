"""What Azure AI Model Inference requests carry besides the OpenAI body: `api-version`, the
`extra-parameters` header, and the model named by the `azureml-model-deployment` header."""

from __future__ import annotations

import re

from flask import request
from pydantic import BaseModel

from api.errors import ApiError, bad_request
from api.services import services
from contracts.model_directory import EMBEDDING

API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?")
EXTRA_PARAMETERS = ("error", "drop", "pass-through")
# The fields the API specifies (2024-05-01-preview); anything else is an extra parameter.
CHAT_FIELDS = frozenset(
    {
        "messages",
        "frequency_penalty",
        "stream",
        "presence_penalty",
        "temperature",
        "top_p",
        "max_tokens",
        "response_format",
        "stop",
        "tools",
        "tool_choice",
        "seed",
        "model",
    }
)
EMBEDDING_FIELDS = frozenset({"input", "dimensions", "encoding_format", "input_type", "model"})
# Specified fields Ladle accepts and ignores: `input_type` (text, query, document) does not change
# what a symmetric embedding model computes.
IGNORED_FIELDS = frozenset({"input_type"})
# The embedding model a request that names none gets when LADLE_DEFAULT_MODEL is not one (`make run` builds it).
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


def check_api_version() -> None:
    """`api-version` is optional; when sent it must look like 2024-05-01 or 2024-05-01-preview."""
    version = request.args.get("api-version")
    if version is not None and not API_VERSION.fullmatch(version):
        raise ApiError(
            400,
            f"Invalid api-version '{version[:40]}': expected YYYY-MM-DD or YYYY-MM-DD-preview.",
            param="api-version",
            code="invalid_api_version",
        )


def requested_model(body: dict | None = None, kind: str | None = None) -> str:
    """The model a request names: body `model`, else `azureml-model-deployment`, `?model=`, else the default
    model (of `kind`, when the route serves one kind; see `default_model`)."""
    name = (body or {}).get("model") or request.headers.get("azureml-model-deployment") or request.args.get("model")
    return name or default_model(kind)


def default_model(kind: str | None = None) -> str:
    """LADLE_DEFAULT_MODEL when the model directory holds it (of `kind`); for embeddings all-MiniLM-L6-v2
    next; then the only model (of `kind`) there is; else a 400 `model_required`."""
    ctx = services()
    configured = ctx.settings.default_model
    found = ctx.models.usable_kind(ctx.resolve_model(configured)) if configured else None
    if found is not None and kind in (None, found):
        return configured
    names = [name for name, found_kind in ctx.models.kinds().items() if kind in (None, found_kind)]
    if kind == EMBEDDING and DEFAULT_EMBEDDING_MODEL in names:
        return DEFAULT_EMBEDDING_MODEL
    if len(names) == 1:
        return names[0]
    missing = f" ('{configured}' is not in the model directory)" if configured and found is None else ""
    raise bad_request(
        f"Name a model: the body's 'model', the 'azureml-model-deployment' header, "
        f"or LADLE_DEFAULT_MODEL on the server{missing}.",
        "model",
        "model_required",
    )


def apply_extra_parameters(body: dict, specified: frozenset[str], accepted_by: type[BaseModel]) -> dict:
    """The body as `accepted_by` should read it, by the `extra-parameters` header.

    `error` (the default) rejects fields the API does not specify, `drop` removes them,
    `pass-through` passes them on when Ladle's engine understands them (else rejects them).
    A specified field Ladle does not support is a 422 `parameter_not_supported`, as Azure answers.
    """
    mode = request.headers.get("extra-parameters", "error").strip().lower()
    if mode not in EXTRA_PARAMETERS:
        raise bad_request(
            f"Invalid extra-parameters header '{mode[:40]}': expected one of {', '.join(EXTRA_PARAMETERS)}.",
            "extra-parameters",
            "invalid_header",
        )
    understood = set(accepted_by.model_fields)
    body = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    unsupported = [k for k in body if k in specified and k not in understood]
    if unsupported:
        raise ApiError(
            422,
            f"One of the parameters contain invalid values: '{unsupported[0]}' is not supported by this model.",
            param=unsupported[0],
            code="parameter_not_supported",
        )
    extras = [k for k in body if k not in specified]
    if not extras:
        return body
    if mode == "drop":
        return {k: v for k, v in body.items() if k not in extras}
    if mode == "error":
        raise bad_request(
            f"Extra parameters {extras} are not allowed when the extra-parameters header is 'error' (the default); "
            "send 'extra-parameters: pass-through' to pass them to the model, or 'drop' to ignore them.",
            extras[0],
            "extra_parameters_not_allowed",
        )
    unknown = [k for k in extras if k not in understood]
    if unknown:
        raise bad_request(
            f"Extra parameters {unknown} are not understood by this model and cannot be passed through.",
            unknown[0],
            "extra_parameters_not_supported",
        )
    return body

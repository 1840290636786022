"""`GET /openapi.json`: the OpenAPI 3.1 document, built from the URL map and what each route declares.

A route declares its request body, query parameters and response with `@documented(...)` next to
its path; every rule in `app.url_map` is listed whether it declares anything or not, with its path
parameters and the error envelope as its 4XX/5XX response. Schemas come from pydantic, so the
document cannot drift from the validation the routes run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel, TypeAdapter
from werkzeug.routing import Rule

from api.errors import ErrorEnvelope

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
# Methods Flask adds to every rule by itself.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
# Werkzeug's `<converter(args):name>` placeholders in a rule.
_PLACEHOLDER = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
# What each converter matches, as a JSON schema (the default `string` stops at '/').
_CONVERTER_SCHEMAS = {
    "string": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "path": {"type": "string", "minLength": 1},
    "uuid": {"type": "string", "format": "uuid"},
}

View = TypeVar("View", bound=Callable[..., Any])

bp = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class Operation:
    """What a route declares beyond its path: JSON body, query and header parameters, JSON response,
    and its error body when its dialect has its own (OpenAI's envelope otherwise)."""

    body: Any = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    response: Any = None
    error: type[BaseModel] = ErrorEnvelope


def documented(
    *,
    body: Any = None,
    query: type[BaseModel] | None = None,
    headers: type[BaseModel] | None = None,
    response: Any = None,
    error: type[BaseModel] = ErrorEnvelope,
) -> Callable[[View], View]:
    """Attach the route's request, response and error types (pydantic models or types) to its view."""

    def mark(view: View) -> View:
        view.openapi_operation = Operation(body, query, headers, response, error)
        return view

    return mark


@bp.get("/openapi.json")
def openapi_json():
    """This document."""
    document = current_app.extensions.get("openapi")
    if document is None:
        document = current_app.extensions["openapi"] = openapi_document(current_app)
    return jsonify(document)


def is_static_files(endpoint: str) -> bool:
    """Flask's (or a blueprint's) route for its static folder: files, not an API operation."""
    return endpoint == "static" or endpoint.endswith(".static")


def openapi_document(app: Flask) -> dict:
    """The OpenAPI document of every rule in `app.url_map` (static files excepted)."""
    rules = [rule for rule in app.url_map.iter_rules() if not is_static_files(rule.endpoint)]
    declared = {rule.endpoint: _operation(app, rule) for rule in rules}
    schemas, components = _schemas(declared.values())
    paths: dict[str, dict] = {}
    for rule in sorted(rules, key=lambda r: r.rule):
        operation = declared[rule.endpoint]
        view = app.view_functions[rule.endpoint]
        path, parameters = _path_and_parameters(rule)
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            paths.setdefault(path, {})[method.lower()] = _operation_object(
                rule,
                path,
                method,
                view,
                operation,
                parameters
                + _parameters("query", operation.query, schemas, components)
                + _parameters("header", operation.headers, schemas, components),
                schemas,
            )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Ladle", "version": "0.1.0", "description": "OpenAI- and Foundry Local-compatible API."},
        "paths": paths,
        "components": {"schemas": components},
    }


def _operation(app: Flask, rule: Rule) -> Operation:
    return getattr(app.view_functions[rule.endpoint], "openapi_operation", Operation())


def _schemas(operations) -> tuple[dict, dict]:
    """JSON schemas of every declared type, keyed (type, mode), and the shared definitions."""
    inputs: dict[tuple[Any, str], TypeAdapter] = {(ErrorEnvelope, "serialization"): TypeAdapter(ErrorEnvelope)}
    for operation in operations:
        for kind in (operation.body, operation.query, operation.headers):
            if kind is not None:
                inputs[(kind, "validation")] = TypeAdapter(kind)
        if operation.response is not None:
            inputs[(operation.response, "serialization")] = TypeAdapter(operation.response)
        inputs[(operation.error, "serialization")] = TypeAdapter(operation.error)
    keyed, definitions = TypeAdapter.json_schemas(
        [(key, key[1], adapter) for key, adapter in inputs.items()], ref_template=REF_TEMPLATE
    )
    return {key: schema for (key, _mode), schema in keyed.items()}, definitions.get("$defs", {})


def _resolved(schema: dict, components: dict) -> dict:
    """`schema` itself, or the component it refers to."""
    ref = schema.get("$ref", "")
    return components[ref.rsplit("/", 1)[-1]] if ref.startswith(REF_TEMPLATE.partition("{")[0]) else schema


def _path_and_parameters(rule: Rule) -> tuple[str, list[dict]]:
    """The OpenAPI path (`{name}` placeholders) and its path parameters."""
    parameters = []
    for match in _PLACEHOLDER.finditer(rule.rule):
        schema = _CONVERTER_SCHEMAS.get(match["converter"] or "string", {"type": "string"})
        parameters.append({"name": match["name"], "in": "path", "required": True, "schema": dict(schema)})
    return _PLACEHOLDER.sub(lambda m: "{" + m["name"] + "}", rule.rule), parameters


def _operation_object(
    rule: Rule, path: str, method: str, view: Callable, operation: Operation, parameters: list[dict], schemas: dict
) -> dict:
    error = {
        "description": "OpenAI's error envelope." if operation.error is ErrorEnvelope else operation.error.__doc__,
        "content": {"application/json": {"schema": schemas[(operation.error, "serialization")]}},
    }
    success: dict[str, Any] = {"description": "Success."}
    if operation.response is not None:
        media = {"schema": schemas[(operation.response, "serialization")]}
        success["content"] = {"application/json": media}
    result: dict[str, Any] = {
        "operationId": method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", path).rstrip("_"),
        "summary": (view.__doc__ or rule.endpoint).strip().splitlines()[0],
        "tags": [rule.endpoint.partition(".")[0]],
        "parameters": parameters,
        "responses": {"200": success, "4XX": error, "5XX": error},
    }
    if operation.body is not None:
        body_schema = schemas[(operation.body, "validation")]
        result["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return result


def _parameters(location: str, model: type[BaseModel] | None, schemas: dict, components: dict) -> list[dict]:
    """One parameter per field of `model`, in the query string or the headers."""
    if model is None:
        return []
    schema = _resolved(schemas[(model, "validation")], components)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": location, "required": name in required, "schema": _not_null(field)}
        for name, field in schema["properties"].items()
    ]


def _not_null(schema: dict) -> dict:
    """A query or header value is a string or absent, never null: `X | None` is documented as X."""
    options = [option for option in schema.get("anyOf", []) if option != {"type": "null"}]
    if len(options) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**rest, **options[0]}

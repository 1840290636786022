"""A Databricks invocation body turned into the OpenAI request the shared handlers take."""

from __future__ import annotations

import json

from api.errors import bad_request

# Fields of databricks-sdk's query() that carry no meaning for Ladle's engines.
IGNORED_FIELDS = ("client_request_id", "usage_context")
# Inputs of custom-model endpoints (MLflow pyfunc); foundation models take none of them.
CUSTOM_MODEL_FIELDS = ("dataframe_records", "dataframe_split", "instances", "inputs")


def coerced(value: str) -> object:
    """An `extra_params` value (always a string there) as the JSON value it spells, else the string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def openai_body(name: str, body: dict) -> dict:
    """The invocation body with `model` = the endpoint name and `extra_params` flattened into it."""
    for field in CUSTOM_MODEL_FIELDS:
        if field in body:
            raise bad_request(
                f"'{field}' is an input of custom-model endpoints; '{name}' takes 'messages', 'prompt' or 'input'.",
                field,
            )
    openai = {k: v for k, v in body.items() if k not in (*IGNORED_FIELDS, "extra_params")}
    extra = body.get("extra_params") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise bad_request("'extra_params' must be an object whose values are strings.", "extra_params")
    for key, value in extra.items():
        if key in openai or key == "model":
            raise bad_request(f"'{key}' is given both in the body and in 'extra_params'.", f"extra_params.{key}")
        openai[key] = coerced(value)
    openai["model"] = name
    return openai

"""Schemathesis over the app's OpenAPI document (the one `/openapi.json` serves; a test checks they
are equal), against the real stack: no input reaches a 5xx, every 4xx carries OpenAI's envelope.

Examples per operation are few and bounded. Downloads and `unloadall` are sent only input that
violates their schema: a valid download would start a real one, and `unloadall` would empty the
workers the rest of the suite uses. The fleet's endless snapshot stream is left out.
`tests/test_hostile_input.py` attacks all three with targeted input.
"""

from __future__ import annotations

import json

import schemathesis
from flask import Blueprint, Flask
from openapi_spec_validator import validate
from pydantic import BaseModel, Field
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.openapi import documented, openapi_document
from tests.helpers import MINILM, TINY, assert_error
from tests.openapi_document import DOCUMENT

# Few generated examples per operation: the point is the shapes of input (coverage phase: boundaries, wrong
# types, missing fields), not volume; the whole module stays around a minute on two cores.
MAX_EXAMPLES = 30
# Operations whose valid input costs too much or changes what other tests see.
NEGATIVE_ONLY = ["/openai/download", "/openai/unloadall"]
# A stream that never ends by design (the status page's fleet snapshots): schemathesis would read it
# forever. Its bad input is tested in tests/test_fleet_events.py and tests/test_hostile_input.py.
ENDLESS = ["/v1/fleet/events"]


# Generated model names are mostly real ones, so valid requests reach the workers (tokenizers,
# templates, sampling), plus names the filesystem cannot hold.
MODEL_NAMES = [TINY, MINILM, "x" * 300, "é" * 200]
# Longest output a generated request may ask for: enough to run the decoder, short enough that
# a run of cases stays quick (an omitted limit means up to the context length).
MAX_OUTPUT_TOKENS = 4
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")


def _config(mode: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 1,  # the same cases every run: a failure is reproducible
            "generation": {"mode": mode, "max-examples": MAX_EXAMPLES, "no-shrink": True},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": 120,
            "dictionaries": {
                "models": {"values": MODEL_NAMES},
                "preferences": {"values": ["respond-async", "wait=5, respond-async", "handling=lenient"]},
            },
            "parameters": {
                "header.Prefer": {"dictionary": "preferences", "probability": 0.5},
                "body.model": {"dictionary": "models", "probability": 0.7},
                "path.name": {"dictionary": "models", "probability": 0.7},
            },
        }
    )


def bounded(case):
    """The case with a short output limit when it asks for generation (valid limits only: an invalid
    one stays, to be rejected)."""
    body = case.body
    if isinstance(body, dict) and case.path in ("/v1/chat/completions", "/v1/completions", "/v1/messages"):
        limits = [body.get(name) for name in OUTPUT_LIMITS]
        if all(limit is None or (type(limit) is int and limit > MAX_OUTPUT_TOKENS) for limit in limits):
            for name, limit in zip(OUTPUT_LIMITS, limits, strict=True):
                if limit is not None or name == "max_tokens":
                    body[name] = MAX_OUTPUT_TOKENS
    if isinstance(body, dict) and case.path == "/v1/messages/batches" and isinstance(body.get("requests"), list):
        for request in body["requests"]:  # each a Messages request
            params = request.get("params") if isinstance(request, dict) else None
            limit = params.get("max_tokens") if isinstance(params, dict) else None
            if type(limit) is int and limit > MAX_OUTPUT_TOKENS:
                params["max_tokens"] = MAX_OUTPUT_TOKENS
    return case


def _schema(mode: str):
    """The app's document (built from its URL map, as `/openapi.json` serves it) loaded by schemathesis;
    requests go to the `api_url` fixture's server."""
    return schemathesis.openapi.from_dict(DOCUMENT, config=_config(mode))


served = _schema("all").exclude(path=NEGATIVE_ONLY + ENDLESS)
negative_only = _schema("negative").include(path=NEGATIVE_ONLY)


@schemathesis.check
def error_envelope(ctx, response, case):
    """Every 4xx and 5xx is OpenAI's error envelope (Databricks' `{error_code, message}` on its routes)."""
    if response.status_code >= 400 and "/serving-endpoints" in case.path:
        assert set(json.loads(response.text)) == {"error_code", "message"}
    elif response.status_code >= 400 and case.path.startswith("/v1/messages"):
        body = json.loads(response.text)  # Anthropic's envelope
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    elif response.status_code >= 400:
        assert_error(_Response(response), response.status_code)


class _Response:
    """The little of requests.Response that `assert_error` reads, over schemathesis's response."""

    def __init__(self, response) -> None:
        self.status_code = response.status_code
        self.text = response.text

    def json(self):
        return json.loads(self.text)


CHECKS = [not_a_server_error, error_envelope, response_schema_conformance]


@served.parametrize()
def test_no_input_reaches_a_server_error(case, api_url):
    bounded(case).call_and_validate(base_url=api_url, checks=CHECKS)


@negative_only.parametrize()
def test_no_invalid_input_reaches_a_server_error(case, api_url):
    case.call_and_validate(base_url=api_url, checks=CHECKS)


def test_served_document_is_valid_openapi(api_url):
    document = schemathesis.openapi.from_url(f"{api_url}/openapi.json").raw_schema
    assert document == json.loads(json.dumps(DOCUMENT))
    validate(document)
    assert document["openapi"].startswith("3.1")
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert chat["responses"]["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    load = document["paths"]["/openai/load/{name}"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in load] == [
        ("name", "path"),
        ("ttl", "query"),
        ("unload", "query"),
        ("ep", "query"),
    ]


def test_a_new_route_is_documented_by_itself():
    """Any rule in the URL map is listed; what it declares with @documented fills in its schemas."""
    app = Flask("probe")
    blueprint = Blueprint("probe", __name__)

    class Probe(BaseModel):
        name: str = Field(min_length=1)

    @blueprint.post("/v1/probes/<probe_id>")
    @documented(body=Probe, response=list[Probe])
    def create_probe(probe_id: str):
        """Make a probe."""

    @blueprint.get("/v1/plain")
    def plain():
        """Nothing declared."""

    app.register_blueprint(blueprint)
    document = openapi_document(app)
    validate(document)
    created = document["paths"]["/v1/probes/{probe_id}"]["post"]
    assert created["summary"] == "Make a probe."
    assert created["parameters"][0]["name"] == "probe_id" and created["parameters"][0]["in"] == "path"
    assert created["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Probe"}
    assert created["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert document["components"]["schemas"]["Probe"]["properties"]["name"]["minLength"] == 1
    assert set(document["paths"]["/v1/plain"]["get"]["responses"]) == {"200", "4XX", "5XX"}

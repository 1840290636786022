"""Bad requests are specific 4xx errors in OpenAI's envelope, decided before any worker is involved."""

from __future__ import annotations

import pytest

from tests.api.config_only_models import CHAT_MODEL, CONTEXT_LENGTH, EMBEDDING_MODEL
from tests.helpers import assert_error, user

CHAT = "/v1/chat/completions"


def chat_body(**fields) -> dict:
    return {"model": CHAT_MODEL, "messages": user("hi"), "max_tokens": 3, **fields}


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post(CHAT, data="{not json", content_type="application/json")
    assert_error(response, 400, code="invalid_json")


def test_json_that_is_not_an_object_is_a_400(client):
    assert_error(client.post(CHAT, json=[1, 2]), 400, code="invalid_json")


def test_an_unknown_field_is_a_400_naming_it(client):
    assert_error(client.post(CHAT, json=chat_body(made_up=1)), 400, param="made_up", code="unsupported_parameter")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_a_400_naming_it(client, fields, param):
    assert_error(client.post(CHAT, json=chat_body(**fields)), 400, param=param, code="invalid_value")


def test_an_unknown_model_is_a_404(client):
    response = client.post(CHAT, json=chat_body(model="gpt-9"))
    assert_error(response, 404, param="model", code="model_not_found")


def test_an_unknown_model_for_completions_is_a_404(client):
    response = client.post("/v1/completions", json={"model": "gpt-9", "prompt": "hi"})
    assert_error(response, 404, param="model", code="model_not_found")


def test_an_embedding_model_asked_for_a_chat_is_the_wrong_model_type(client):
    response = client.post(CHAT, json=chat_body(model=EMBEDDING_MODEL))
    assert_error(response, 400, param="model", code="wrong_model_type")


def test_a_chat_model_asked_for_embeddings_is_the_wrong_model_type(client):
    response = client.post("/v1/embeddings", json={"model": CHAT_MODEL, "input": "hi"})
    assert_error(response, 400, param="model", code="wrong_model_type")


def test_max_tokens_past_the_context_is_a_400(client):
    response = client.post(CHAT, json=chat_body(max_tokens=CONTEXT_LENGTH))
    assert_error(response, 400, param="max_tokens", code="context_length_exceeded")


def test_an_unknown_execution_provider_is_a_400_naming_ep(client):
    assert_error(client.post(CHAT, json=chat_body(ep="abacus")), 400, param="ep")


def test_an_oversized_body_is_a_413(client, api_settings):
    assert_error(client.post(CHAT, json=chat_body(messages=user("x" * api_settings.max_body_bytes))), 413)


def test_an_unknown_job_is_a_404(client):
    assert_error(client.get("/v1/jobs/nope"), 404, code="job_not_found")


def test_an_unknown_route_and_a_wrong_method(client):
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.get(CHAT), 405)


def test_a_valid_request_with_no_live_worker_is_a_503_with_retry_after(client):
    response = client.post(CHAT, json=chat_body())
    assert_error(response, 503, code="no_worker")
    assert response.headers["Retry-After"]


def test_every_response_carries_a_request_id(client):
    assert client.post(CHAT, json=[1]).headers["X-Request-Id"]

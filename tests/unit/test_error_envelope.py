"""Pydantic validation errors as OpenAI's error envelope, naming the parameter; one error model for API and workers."""

import pydantic
import pytest

from api.chat.protocol import ChatCompletionRequest
from api.errors import ApiError, validation_error
from api.errors import model_not_found as api_model_not_found
from contracts.errors import wrong_model_kind
from worker.errors import model_not_found as worker_model_not_found

HI = [{"role": "user", "content": "hi"}]


def error_for(body: dict) -> ApiError:
    with pytest.raises(pydantic.ValidationError) as raised:
        ChatCompletionRequest.model_validate(body)
    return validation_error(raised.value)


def test_an_unknown_field_is_an_unsupported_parameter_naming_it():
    error = error_for({"model": "m", "messages": HI, "bogus": 1})
    assert (error.status, error.param, error.code) == (400, "bogus", "unsupported_parameter")
    assert "bogus" in error.message


def test_a_wrong_type_is_an_invalid_value_naming_the_field():
    error = error_for({"model": "m", "messages": HI, "temperature": "hot"})
    assert (error.status, error.param, error.code) == (400, "temperature", "invalid_value")


def test_a_nested_field_is_named_by_its_dotted_path():
    error = error_for({"model": "m", "messages": [{"role": "user", "content": 5}]})
    assert error.param.startswith("messages.0")


def test_the_body_is_openais_envelope():
    body = error_for({"model": "m", "messages": HI, "bogus": 1}).body()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


def test_the_api_and_a_worker_report_a_missing_model_alike():
    api_error, rejected = api_model_not_found("gpt-9"), worker_model_not_found("gpt-9")
    assert api_error.info == rejected.info
    assert (api_error.status, api_error.param, api_error.code) == (404, "model", "model_not_found")
    assert "gpt-9" in api_error.message


def test_an_error_a_job_ended_with_becomes_the_same_api_error():
    info = wrong_model_kind("tiny-embed", "generation")
    error = ApiError.of(info, headers={"X-Request-Id": "job-1"})
    assert error.info == info and error.headers == {"X-Request-Id": "job-1"}
    assert error.body()["error"] == {"message": info.message, "type": info.type, "param": "model", "code": info.code}

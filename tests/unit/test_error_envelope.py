"""Pydantic validation errors as OpenAI's error envelope, naming the parameter."""

import pydantic
import pytest

from api.chat.protocol import ChatCompletionRequest
from api.errors import ApiError, validation_error

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

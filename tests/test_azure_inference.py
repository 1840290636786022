"""The azure-ai-inference SDK, unchanged, against Ladle with an API key; and Azure's request rules."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest
import requests
from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient, load_client
from azure.ai.inference.models import (
    ChatCompletionsToolChoicePreset,
    ChatCompletionsToolDefinition,
    FunctionDefinition,
    JsonSchemaFormat,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from contracts.settings import Settings
from tests.helpers import MINILM, SMOLLM2, TINY, user
from tests.stack import ApiServer

KEY = "azure-test-key"
HEADERS = {"api-key": KEY}


@pytest.fixture(scope="module")
def base(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with a key, on the shared Redis and workers (`api_url` starts them)."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY,), rate_limit="off"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module", params=["", "/models"], ids=["root", "models"])
def endpoint(base: str, request) -> str:
    return base + request.param


def chat_client(endpoint: str, key: str = KEY) -> ChatCompletionsClient:
    return ChatCompletionsClient(endpoint, AzureKeyCredential(key), retry_total=0)


def test_chat_completion(endpoint: str):
    result = chat_client(endpoint).complete(
        messages=[UserMessage("What is the capital of France?")], model=SMOLLM2, max_tokens=20, temperature=0
    )
    assert "Paris" in result.choices[0].message.content
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.created.year >= 2024  # an int on the wire, a datetime in the SDK
    assert result.model == SMOLLM2


def test_streamed_chat_parses_with_the_sdk_strict_reader(endpoint: str):
    stream = chat_client(endpoint).complete(messages=[UserMessage("hi")], model=TINY, max_tokens=5, stream=True)
    updates = list(stream)
    text = "".join(u.choices[0].delta.content or "" for u in updates if u.choices)
    assert text
    assert [u.choices[0].finish_reason for u in updates if u.choices][-1] == "length"


def test_stream_bytes_are_strict_sse(base: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 3, "stream": True}
    with requests.post(f"{base}/chat/completions", json=body, headers=HEADERS, stream=True, timeout=60) as response:
        raw = response.content.decode()
    assert "\r" not in raw
    lines = [line for line in raw.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_model_info_and_load_client(endpoint: str):
    info = chat_client(endpoint).get_model_info(headers={"azureml-model-deployment": TINY})
    assert (info.model_name, info.model_type) == (TINY, "chat_completion")
    client = load_client(endpoint, AzureKeyCredential(KEY), headers={"azureml-model-deployment": MINILM})
    assert isinstance(client, EmbeddingsClient)


def test_embeddings(endpoint: str):
    client = EmbeddingsClient(endpoint, AzureKeyCredential(KEY), retry_total=0)
    result = client.embed(input=["a cat", "a dog"], model=MINILM)
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 384
    assert result.id and result.usage.prompt_tokens > 0


def test_model_extras_pass_through_to_the_engine(endpoint: str):
    result = chat_client(endpoint).complete(
        messages=[UserMessage("hi")], model=TINY, max_tokens=3, model_extras={"top_k": 3, "n": 2}
    )
    assert len(result.choices) == 2


def test_extra_parameter_the_engine_does_not_know_is_rejected_on_pass_through(endpoint: str):
    with pytest.raises(HttpResponseError) as raised:
        chat_client(endpoint).complete(
            messages=[UserMessage("hi")], model=TINY, max_tokens=3, model_extras={"safe_prompt": True}
        )
    assert raised.value.status_code == 400
    assert raised.value.error.code == "extra_parameters_not_supported"
    assert "safe_prompt" in raised.value.error.message


def test_extra_parameters_header_error_and_drop(base: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 3, "top_k": 2}
    rejected = requests.post(f"{base}/chat/completions", json=body, headers=HEADERS, timeout=60)
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "extra_parameters_not_allowed"
    assert rejected.json()["error"]["param"] == "top_k"
    assert rejected.headers["x-ms-error-code"] == "extra_parameters_not_allowed"
    dropped = requests.post(
        f"{base}/chat/completions", json=body, headers={**HEADERS, "extra-parameters": "drop"}, timeout=60
    )
    assert dropped.status_code == 200
    assert dropped.json()["choices"][0]["message"]["content"] is not None
    bad_mode = requests.post(
        f"{base}/chat/completions", json=body, headers={**HEADERS, "extra-parameters": "keep"}, timeout=60
    )
    assert bad_mode.status_code == 400
    assert bad_mode.json()["error"]["code"] == "invalid_header"


def test_tools_and_response_format_are_served(base: str):
    # Every field the API specifies is now supported (a specified one Ladle lacked was a 422).
    tool = {"type": "function", "function": {"name": "now"}}
    body = {"model": TINY, "messages": user("hi"), "tools": [tool], "tool_choice": "required", "max_tokens": 40}
    response = requests.post(f"{base}/models/chat/completions", json=body, headers=HEADERS, timeout=60)
    assert response.status_code == 200
    (call, *_) = response.json()["choices"][0]["message"]["tool_calls"]
    assert (call["function"]["name"], call["function"]["arguments"]) == ("now", "{}")
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 40}
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    response = requests.post(f"{base}/models/chat/completions", json=body, headers=HEADERS, timeout=60)
    assert isinstance(json.loads(response.json()["choices"][0]["message"]["content"])["ok"], bool)


def test_logprobs_passed_through_with_tools_cover_the_content_only(base: str):
    """`logprobs` is an extra parameter to Azure's API; passed through, it behaves as on /v1."""
    tool = {"type": "function", "function": {"name": "now"}}
    body = {"model": TINY, "messages": user("hi"), "tools": [tool], "tool_choice": "required", "max_tokens": 40}
    headers = {**HEADERS, "extra-parameters": "pass-through"}
    response = requests.post(f"{base}/chat/completions", json={**body, "logprobs": True}, headers=headers, timeout=60)
    (choice,) = response.json()["choices"]
    assert choice["message"]["tool_calls"] and choice["message"]["content"] is None
    assert choice["logprobs"] == {"content": None, "refusal": None}


@pytest.mark.parametrize("version", ["2024-05-01-preview", "2025-04-01", None])
def test_well_formed_or_missing_api_version_is_accepted(base: str, version: str | None):
    params = {"api-version": version} if version else {}
    response = requests.get(f"{base}/info", params={**params, "model": TINY}, headers=HEADERS, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"model_name": TINY, "model_type": "chat_completion", "model_provider_name": "Ladle"}


@pytest.mark.parametrize("version", ["latest", "2024-5-1", "2024-05-01-beta"])
def test_malformed_api_version_is_400(base: str, version: str):
    body = {"model": TINY, "messages": user("hi")}
    response = requests.post(
        f"{base}/chat/completions", params={"api-version": version}, json=body, headers=HEADERS, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_api_version"


def test_bad_input_is_a_4xx_in_azure_shape_without_retry_after(base: str):
    cases = [
        ("/chat/completions", {"model": MINILM, "messages": user("hi")}),  # an embedding model
        ("/chat/completions", {"model": TINY, "messages": []}),
        ("/chat/completions", {"model": "no-such-model", "messages": user("hi")}),
        ("/embeddings", {"model": MINILM, "input": ["a"], "encoding_format": "int8"}),
        ("/embeddings", {"model": TINY, "input": ["a"]}),
        ("/models/info?model=no-such-model", None),
    ]
    for path, body in cases:
        response = requests.request("POST" if body else "GET", f"{base}{path}", json=body, headers=HEADERS, timeout=30)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        error = response.json()["error"]
        assert error["code"] and error["message"]
        assert response.headers["x-ms-error-code"] == error["code"]
        assert "Retry-After" not in response.headers
    malformed = requests.post(f"{base}/chat/completions", data="{", headers=HEADERS, timeout=30)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("header", ["api-key", "Authorization"])
def test_bad_key_is_client_authentication_error(endpoint: str, header: str):
    with pytest.raises(ClientAuthenticationError):
        chat_client(endpoint, "wrong-key").complete(messages=[UserMessage("hi")], model=TINY)
    # Either header alone carries the key.
    value = KEY if header == "api-key" else f"Bearer {KEY}"
    good = requests.get(f"{endpoint}/info", params={"model": TINY}, headers={header: value}, timeout=30)
    assert good.status_code == 200
    wrong = requests.get(f"{endpoint}/info", params={"model": TINY}, headers={header: "nope"}, timeout=30)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


WEATHER = ChatCompletionsToolDefinition(
    function=FunctionDefinition(
        name="get_weather",
        description="The current weather in a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    )
)
WEATHER_QUESTION = [UserMessage("What is the weather in Paris?")]


def test_sdk_tool_call(endpoint: str):
    result = chat_client(endpoint).complete(
        messages=WEATHER_QUESTION,
        model=SMOLLM2,
        tools=[WEATHER],
        tool_choice=ChatCompletionsToolChoicePreset.REQUIRED,
        model_extras={"parallel_tool_calls": False},
        max_tokens=60,
        temperature=0,
    )
    (choice,) = result.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER.function.parameters)


def test_sdk_json_schema_answer(endpoint: str):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    }
    result = chat_client(endpoint).complete(
        messages=[UserMessage("What is the capital of France? Answer in JSON.")],
        model=SMOLLM2,
        response_format=JsonSchemaFormat(name="capital", schema=schema, strict=True),
        max_tokens=40,
        temperature=0,
    )
    assert result.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(result.choices[0].message.content), schema)


def test_sdk_streamed_tool_call_joins_to_the_answer(endpoint: str):
    request = {
        "messages": WEATHER_QUESTION,
        "model": SMOLLM2,
        "tools": [WEATHER],
        "tool_choice": ChatCompletionsToolChoicePreset.REQUIRED,
        "model_extras": {"parallel_tool_calls": False},
        "max_tokens": 60,
        "temperature": 0,
    }
    whole = chat_client(endpoint).complete(**request).choices[0]
    updates = [u for u in chat_client(endpoint).complete(stream=True, **request) if u.choices]
    parts = [call for u in updates for call in u.choices[0].delta.tool_calls or []]
    assert parts[0].id.startswith("call_") and parts[0].function.name == "get_weather"
    assert "".join(p.function.arguments for p in parts) == whole.message.tool_calls[0].function.arguments
    assert [u.choices[0].finish_reason for u in updates if u.choices[0].finish_reason] == ["tool_calls"]

"""databricks-sdk's serving_endpoints.query and the openai SDK pointed at /serving-endpoints, unchanged,
against Ladle with an API key (a Databricks token); errors in Databricks' shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, InvalidParameterValue, NotFound, ResourceDoesNotExist, Unauthenticated
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole, QueryEndpointResponseObject
from openai import OpenAI, pydantic_function_tool
from pydantic import BaseModel, Field

from contracts.settings import Settings
from tests.helpers import MINILM, SMOLLM2, TINY, user
from tests.stack import ApiServer
from tests.tool_schemas import CAPITAL, WEATHER

KEY = "dapi-test-token"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def base(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with a key, on the shared Redis and workers (`api_url` starts them)."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY,), rate_limit="off"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def workspace(base: str) -> WorkspaceClient:
    return WorkspaceClient(host=base, token=KEY)


def hi() -> list[ChatMessage]:
    return [ChatMessage(role=ChatMessageRole.USER, content="What is the capital of France?")]


def test_query_chat(workspace: WorkspaceClient):
    response = workspace.serving_endpoints.query(name=SMOLLM2, messages=hi(), max_tokens=20, temperature=0.0)
    assert response.object == QueryEndpointResponseObject.CHAT_COMPLETION
    assert "Paris" in response.choices[0].message.content
    assert response.served_model_name == SMOLLM2
    assert response.usage.total_tokens > 0


def test_query_completions_with_extra_params_as_strings(workspace: WorkspaceClient):
    response = workspace.serving_endpoints.query(
        name=TINY, prompt="Once upon", max_tokens=4, extra_params={"n": "2", "top_k": "3", "seed": "7"}
    )
    assert response.object == QueryEndpointResponseObject.TEXT_COMPLETION
    assert len(response.choices) == 2
    assert all(choice.text for choice in response.choices)


def test_query_embeddings(workspace: WorkspaceClient):
    response = workspace.serving_endpoints.query(name=MINILM, input=["a cat", "a dog"])
    assert response.object == QueryEndpointResponseObject.LIST
    assert [item.index for item in response.data] == [0, 1]
    assert len(response.data[0].embedding) == 384
    assert response.served_model_name == MINILM


def test_models_are_listed_as_ready_endpoints(workspace: WorkspaceClient):
    endpoints = {endpoint.name: endpoint for endpoint in workspace.serving_endpoints.list()}
    assert {TINY, MINILM} <= set(endpoints)
    assert endpoints[MINILM].task == "llm/v1/embeddings"
    assert workspace.serving_endpoints.get(TINY).state.ready.value == "READY"
    with pytest.raises(ResourceDoesNotExist):
        workspace.serving_endpoints.get("no-such-endpoint")


def test_sdk_error_classes(workspace: WorkspaceClient):
    with pytest.raises(ResourceDoesNotExist):
        workspace.serving_endpoints.query(name="no-such-endpoint", messages=hi())
    with pytest.raises(InvalidParameterValue) as raised:
        workspace.serving_endpoints.query(name=TINY, messages=hi(), extra_params={"top_k": "zero"})
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "top_k" in str(raised.value)
    with pytest.raises(BadRequest):
        workspace.serving_endpoints.query(name=MINILM, messages=hi())  # an embeddings endpoint
    with pytest.raises(NotFound):
        workspace.serving_endpoints.query(name="", messages=hi())
    with pytest.raises(Unauthenticated):
        WorkspaceClient(host=workspace.config.host, token="wrong").serving_endpoints.query(name=TINY, messages=hi())


def test_bad_input_is_a_4xx_in_databricks_shape(base: str):
    url = f"{base}/serving-endpoints/{TINY}/invocations"
    cases = [
        {"messages": user("hi"), "unknown_field": 1},
        {"messages": user("hi"), "extra_params": {"top_k": 3}},  # not a string
        {"messages": user("hi"), "extra_params": "top_k=3"},
        {"messages": user("hi"), "max_tokens": 5, "extra_params": {"max_tokens": "6"}},
        {"dataframe_records": [{"a": 1}]},
        {"max_tokens": 5},
        {"prompt": ""},
    ]
    for body in cases:
        response = requests.post(url, json=body, headers=HEADERS, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()) == {"error_code", "message"}
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    malformed = requests.post(url, data="[", headers=HEADERS, timeout=30)
    assert malformed.status_code == 400
    assert set(malformed.json()) == {"error_code", "message"}
    unknown_route = requests.post(f"{base}/serving-endpoints/a/b/c", json={}, headers=HEADERS, timeout=30)
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    no_key = requests.post(url, json={"messages": user("hi")}, timeout=30)
    assert no_key.status_code == 401
    assert no_key.json()["error_code"] == "UNAUTHENTICATED"


def test_invocation_streams_strict_sse(base: str):
    body = {"messages": user("hi"), "max_tokens": 3, "stream": True}
    url = f"{base}/serving-endpoints/{TINY}/invocations"
    with requests.post(url, json=body, headers=HEADERS, stream=True, timeout=60) as response:
        assert response.headers["served-model-name"] == TINY
        raw = response.content.decode()
    lines = [line for line in raw.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


@pytest.fixture(scope="module")
def openai_client(base: str) -> OpenAI:
    return OpenAI(base_url=f"{base}/serving-endpoints", api_key=KEY, max_retries=0)


def test_openai_sdk_on_serving_endpoints(openai_client: OpenAI):
    completion = openai_client.chat.completions.create(model=TINY, messages=user("hi"), max_tokens=3)
    assert completion.choices[0].message.content is not None
    chunks = list(openai_client.chat.completions.create(model=TINY, messages=user("hi"), max_tokens=3, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    text = openai_client.completions.create(model=TINY, prompt="Once", max_tokens=3)
    assert text.object == "text_completion"
    vectors = openai_client.embeddings.create(model=MINILM, input=["a"])
    assert len(vectors.data[0].embedding) == 384


def test_openai_sdk_reads_databricks_errors(openai_client: OpenAI):
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.chat.completions.create(model="no-such-endpoint", messages=user("hi"))
    assert raised.value.body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=TINY, messages=user("hi"), temperature=9)


CAPITAL_FORMAT = {"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True}}


def test_invocation_with_tools_gives_a_valid_call(base: str):
    body = {
        "messages": user("What is the weather in Paris?"),
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "temperature": 0,
    }
    response = requests.post(f"{base}/serving-endpoints/{SMOLLM2}/invocations", json=body, headers=HEADERS, timeout=60)
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_invocation_with_a_response_format_answers_in_its_schema(base: str):
    body = {
        "messages": user("What is the capital of France? Answer in JSON."),
        "response_format": CAPITAL_FORMAT,
        "max_tokens": 40,
        "temperature": 0,
    }
    response = requests.post(f"{base}/serving-endpoints/{SMOLLM2}/invocations", json=body, headers=HEADERS, timeout=60)
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), CAPITAL)


def test_query_with_a_response_format_in_extra_params(workspace: WorkspaceClient):
    # query() has no response_format (nor tools) argument: extra_params carries it, as a JSON string.
    response = workspace.serving_endpoints.query(
        name=SMOLLM2,
        messages=[ChatMessage(role=ChatMessageRole.USER, content="What is the capital of France? Answer in JSON.")],
        max_tokens=40,
        temperature=0.0,
        extra_params={"response_format": json.dumps(CAPITAL_FORMAT)},
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), CAPITAL)


def test_strict_tool_with_an_unenforceable_keyword_is_a_databricks_400(base: str):
    tool = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    tool["function"]["parameters"] = {**tool["function"]["parameters"], "if": {}}
    body = {"messages": user("hi"), "tools": [tool], "max_tokens": 5}
    response = requests.post(f"{base}/serving-endpoints/{TINY}/invocations", json=body, headers=HEADERS, timeout=60)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "if" in response.json()["message"]


def test_openai_sdk_parses_a_tool_call_on_serving_endpoints(openai_client: OpenAI):
    class GetWeather(BaseModel):
        city: str = Field(max_length=20)

    completion = openai_client.chat.completions.parse(
        model=SMOLLM2,
        messages=user("What is the weather in Paris?"),
        tools=[pydantic_function_tool(GetWeather)],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    (call,) = completion.choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, GetWeather)

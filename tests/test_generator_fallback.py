"""A model whose graph the continuous engine cannot drive (a hybrid with per-layer convolution
states: LFM2) loads on onnxruntime-genai's Generator instead, says why in one log line, and serves
the APIs: chat (in the OpenAI, Foundry, Azure and Databricks dialects), completions, streaming,
and structured output and tool calls (Ladle's llguidance masks applied to the Generator's logits)
with the same answers and stream shapes as the continuous engine's. LFM2 answers as
onnxruntime-genai's Generator run directly. Windowed key/value caches (the builder's default for
sliding-window layers: gpt-oss's, Mistral's) no longer fall back: the continuous engine keeps them
(tests/test_windowed_cache.py) and answers as the Generator does."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import numpy as np
import onnxruntime_genai as og
import pytest
import requests
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole, QueryEndpointResponseObject
from openai import OpenAI

from cli.model_build import build_model
from tests.conftest import MODEL_CACHE
from tests.helpers import sse_data, user
from tests.tool_schemas import BOUNDED, NOW, PICK, assert_tool_choice_answer, assert_valid_calls
from worker.models.chat_tokenizer import chat_template
from worker.models.model_registry import provider_config

WINDOWED = "tiny-random-mistral-windowed"
GPT_OSS = "tiny-random-gpt-oss"
HYBRID = "tiny-random-lfm2-hybrid"  # the tiny model the Generator serves
CONVERSATION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
]


@pytest.fixture(scope="module")
def hybrid(api_url) -> str:
    build_model(HYBRID, MODEL_CACHE)
    return HYBRID


@pytest.fixture(scope="module")
def windowed_caches(api_url) -> list[str]:
    for name in (WINDOWED, GPT_OSS):
        build_model(name, MODEL_CACHE)
    return [WINDOWED, GPT_OSS]


def fallback_lines(worker, model: str) -> list[str]:
    """The worker's log lines saying why `model` runs on the Generator."""
    lines = worker.log_path.read_text().splitlines()
    return [line for line in lines if "Generator runs it" in line and f"{model}:" in line]


def generator_answer(model: str, messages: list[dict], max_tokens: int, intra_op_threads: int) -> tuple[str, int]:
    """onnxruntime-genai alone, greedy: its chat template, Generator and decoder; (text, tokens)."""
    folder = MODEL_CACHE / model
    genai_model = og.Model(provider_config(str(folder), "cpu", intra_op_threads))
    tokenizer = og.Tokenizer(genai_model)
    prompt = tokenizer.apply_chat_template(
        json.dumps(messages), template_str=chat_template(folder), add_generation_prompt=True
    )
    tokens = tokenizer.encode(prompt)
    genai = json.loads((folder / "genai_config.json").read_text())["model"]
    eos = genai["eos_token_id"]
    # A windowed cache holds at least its window (onnxruntime refuses a shorter one).
    window = genai["decoder"].get("sliding_window", {}).get("window_size", 0)
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=max(len(tokens) + max_tokens, window), do_sample=False)
    generator = og.Generator(genai_model, params)
    generator.append_tokens(np.asarray(tokens, dtype=np.int32))
    stream, text, count = tokenizer.create_stream(), "", 0
    while not generator.is_done() and count < max_tokens:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in (eos if isinstance(eos, list) else [eos]):
            break
        text, count = text + stream.decode(token), count + 1
    return text, count


def test_chat_is_answered_by_the_generator_with_one_log_line_saying_why(hybrid, api_url, worker):
    body = {"model": hybrid, "messages": user("hi"), "max_tokens": 6, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
    lines = fallback_lines(worker, hybrid)
    assert len(lines) == 1 and "hybrid" in lines[0] and "convolution" in lines[0]


def assert_chat_is_the_generators_greedy_answer(model: str, api_url: str, settings) -> None:
    """The API's greedy chat answer for CONVERSATION: text and token count of the Generator run directly."""
    body = {"model": model, "messages": CONVERSATION, "max_tokens": 12, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    text, count = generator_answer(model, CONVERSATION, 12, settings.intra_op_threads)
    assert count > 0
    assert (answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]) == (text, count)


def test_a_hybrid_with_convolution_states_is_served_by_the_generator_as_it_answers_alone(
    hybrid, api_url, worker, settings
):
    assert_chat_is_the_generators_greedy_answer(hybrid, api_url, settings)
    lines = fallback_lines(worker, hybrid)
    assert len(lines) == 1 and "hybrid" in lines[0] and "convolution" in lines[0]


def test_windowed_caches_stay_on_the_continuous_engine_with_the_generators_answers(
    windowed_caches, api_url, worker, settings
):
    """gpt-oss (sinks, experts, the harmony template, a windowed layer beside a full one) and Mistral."""
    for model in windowed_caches:
        assert_chat_is_the_generators_greedy_answer(model, api_url, settings)
        assert fallback_lines(worker, model) == []


def test_completions_stream_from_the_generator(hybrid, api_url):
    body = {"model": hybrid, "prompt": "Once", "max_tokens": 5, "stream": True, "temperature": 0}
    response = requests.post(f"{api_url}/v1/completions", json=body, timeout=120, stream=True)
    assert response.status_code == 200
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_greedy_answers_are_the_same_on_every_call(hybrid, api_url):
    body = {"model": hybrid, "messages": user("Tell me a story."), "max_tokens": 8, "temperature": 0}
    first, second = (requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


# Structured output and tool calls on the Generator.


@pytest.fixture(scope="module")
def sdk(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def schema_format(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": strict}}


def test_json_schema_answers_from_the_generator_validate(hybrid, sdk):
    completion = sdk.chat.completions.create(
        model=hybrid,
        messages=user("hi"),
        response_format=schema_format(BOUNDED),
        n=3,
        max_tokens=120,
        temperature=1.0,  # sampled among the allowed tokens by the Generator's own sampler
        seed=3,
    )
    assert len(completion.choices) == 3
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), BOUNDED)


def test_json_object_answer_from_the_generator_parses(hybrid, sdk):
    completion = sdk.chat.completions.create(
        model=hybrid, messages=user("hi"), response_format={"type": "json_object"}, max_tokens=200, temperature=0
    )
    choice = completion.choices[0]
    # Any JSON object is allowed, so the random model may still be inside it at max_tokens.
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:
        assert choice.finish_reason == "length" and choice.message.content.lstrip().startswith("{")


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("choice", ["required", "auto", {"type": "function", "function": {"name": "pick"}}])
def test_every_tool_choice_gives_valid_calls_on_the_generator(hybrid, sdk, choice, parallel: bool):
    assert_tool_choice_answer(sdk, hybrid, choice, parallel)


def test_tool_choice_none_on_the_generator_answers_in_text(hybrid, sdk):
    completion = sdk.chat.completions.create(
        model=hybrid, messages=user("hi"), tools=[PICK], tool_choice="none", max_tokens=6, temperature=0
    )
    result = completion.choices[0]
    assert result.message.tool_calls is None and result.message.content
    assert result.finish_reason in ("stop", "length")


def stream_chunks(sdk: OpenAI, **request) -> list:
    return [c for c in sdk.chat.completions.create(stream=True, **request) if c.choices]


@pytest.mark.parametrize("tool", [PICK, NOW])
def test_streamed_calls_from_the_generator_join_to_the_answer(hybrid, sdk, tool: dict):
    request = {
        "model": hybrid,
        "messages": user("hi"),
        "tools": [tool],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 80,
        "temperature": 0,
    }
    whole = sdk.chat.completions.create(**request).choices[0]
    chunks = stream_chunks(sdk, **request)
    parts = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish == [whole.finish_reason] == ["tool_calls"]
    first = parts[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0,
        "function",
        tool["function"]["name"],
        "",
    )
    assert first.id.startswith("call_")
    assert all(p.id is None and p.function.name is None for p in parts[1:])
    assert "".join(p.function.arguments for p in parts) == whole.message.tool_calls[0].function.arguments
    assert_valid_calls(whole.message, [tool])


def test_streamed_json_from_the_generator_joins_to_the_answer(hybrid, sdk):
    request = {
        "model": hybrid,
        "messages": user("hi"),
        "response_format": schema_format(BOUNDED),
        "max_tokens": 120,
        "temperature": 0,
    }
    whole = sdk.chat.completions.create(**request).choices[0]
    chunks = stream_chunks(sdk, **request)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert (text, finish) == (whole.message.content, [whole.finish_reason])
    jsonschema.validate(json.loads(text), BOUNDED)


def test_constrained_and_free_requests_share_the_generator(hybrid, sdk):
    def free():
        return sdk.chat.completions.create(
            model=hybrid, messages=user("Tell me a story."), max_tokens=8, temperature=0
        ).choices[0]

    def constrained():
        return sdk.chat.completions.create(
            model=hybrid, messages=user("hi"), response_format=schema_format(BOUNDED), max_tokens=120, temperature=0
        ).choices[0]

    alone = free()
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(constrained) for _ in range(3)] + [pool.submit(free) for _ in range(3)]
        results = [f.result() for f in futures]
    for choice in results[:3]:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), BOUNDED)
    for choice in results[3:]:
        assert (choice.message.content, choice.finish_reason) == (alone.message.content, alone.finish_reason)


def test_max_tokens_inside_a_call_on_the_generator_is_length(hybrid, sdk):
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    called = sdk.chat.completions.create(
        model=hybrid, messages=user("hi"), tools=[weather], tool_choice="required", max_tokens=6, temperature=0
    ).choices[0]
    assert called.finish_reason == "length" and called.message.tool_calls is None


def test_strict_schema_with_an_unsupported_keyword_is_a_400_on_the_generator(hybrid, api_url):
    body = {
        "model": hybrid,
        "messages": user("hi"),
        "max_tokens": 6,
        "response_format": schema_format({"type": "object", "if": {}}),
    }
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "response_format.json_schema")
    assert '"if"' in error["message"]


def test_logprobs_on_the_generator_are_a_clear_400(hybrid, api_url):
    body = {"model": hybrid, "messages": user("hi"), "max_tokens": 6, "logprobs": True}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "logprobs" and "Generator" in error["message"]


# The other dialects answer chat on the Generator-served model as /v1 does: each greedy answer is
# the one OpenAI's route gives for the same conversation.
DIALECT_PROMPT = "Tell me a story."


def openai_answer(api_url: str, model: str) -> dict:
    body = {"model": model, "messages": user(DIALECT_PROMPT), "max_tokens": 8, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]  # something to compare
    return response.json()


def test_a_foundry_shaped_chat_is_answered_by_the_generator(hybrid, api_url):
    body = {
        "model": hybrid,
        "messages": user(DIALECT_PROMPT),
        "max_tokens": 8,
        "temperature": 0,
        "top_k": 1,
        "random_seed": 42,  # Foundry Local's name for seed
        "ep": "cpu",  # Foundry's execution provider
        "stream": True,
    }
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120, stream=True)
    assert response.status_code == 200, response.text
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and {c["model"] for c in chunks} == {hybrid}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == openai_answer(api_url, hybrid)["choices"][0]["message"]["content"]


def test_azure_ai_inference_chat_is_answered_by_the_generator(hybrid, api_url):
    client = ChatCompletionsClient(api_url, AzureKeyCredential("unused"), retry_total=0)  # sends api-version
    result = client.complete(messages=[UserMessage(DIALECT_PROMPT)], model=hybrid, max_tokens=8, temperature=0)
    assert result.model == hybrid and result.choices[0].finish_reason in ("stop", "length")
    assert result.choices[0].message.content == openai_answer(api_url, hybrid)["choices"][0]["message"]["content"]
    assert result.usage.completion_tokens > 0


def test_azure_chat_route_with_an_api_version_is_answered_by_the_generator(hybrid, api_url):
    body = {"model": hybrid, "messages": user(DIALECT_PROMPT), "max_tokens": 8, "temperature": 0}
    response = requests.post(
        f"{api_url}/chat/completions", params={"api-version": "2024-05-01-preview"}, json=body, timeout=120
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == hybrid
    assert answer["choices"][0]["message"] == openai_answer(api_url, hybrid)["choices"][0]["message"]


def test_a_databricks_serving_endpoint_query_is_answered_by_the_generator(hybrid, api_url):
    workspace = WorkspaceClient(host=api_url, token="unused")
    messages = [ChatMessage(role=ChatMessageRole.USER, content=DIALECT_PROMPT)]
    response = workspace.serving_endpoints.query(name=hybrid, messages=messages, max_tokens=8, temperature=0.0)
    assert response.object == QueryEndpointResponseObject.CHAT_COMPLETION
    assert response.served_model_name == hybrid
    assert response.choices[0].message.content == openai_answer(api_url, hybrid)["choices"][0]["message"]["content"]

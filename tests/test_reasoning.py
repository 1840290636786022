"""Models that think: the hand-wired tiny models of cli/thinking_model.py write `<think>` … `</think>`
then an answer, always the same, and cli/harmony_thinking_model.py's gpt-oss the same reasoning on
harmony's analysis channel then the answer on its final channel. Their reasoning comes back apart
from the answer through the official openai SDK against the real stack: as a `reasoning` output
item of the Responses API (created, streamed in OpenAI's event order, stored, continued) and as
chat's `reasoning_content`, with the reasoning tokens counted in usage; a model that does not think
answers as before."""

from __future__ import annotations

import json

import anthropic
import numpy as np
import onnxruntime_genai as og
import pytest
import requests
from openai import BadRequestError, OpenAI
from tokenizers import Tokenizer

from cli.harmony_thinking_model import HARMONY_THINKING_MODEL
from cli.harmony_thinking_model import OUTPUT as HARMONY_OUTPUT
from cli.model_build import build_model
from cli.thinking_model import ANSWER, REASONING
from contracts.jobs import GenerationJob, SamplingParams
from contracts.model_directory import ModelDirectory
from contracts.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.helpers import TINY, assert_error, user
from worker.models.chat_tokenizer import ChatTokenizer, chat_template
from worker.models.model_registry import ModelRegistry
from worker.models.prompts import prompt_texts
from worker.models.token_counter import TokenCounter

QWEN3 = "tiny-thinking-qwen3"  # writes `<think>` itself
R1 = "tiny-thinking-r1"  # its generation prompt opens the thinking
GPT_OSS = HARMONY_THINKING_MODEL  # harmony: `<|channel|>analysis<|message|>` … then the final channel
# Output tokens of the thinking: `<think>`, the reasoning's 9, `</think>` (R1's prompt holds `<think>`);
# gpt-oss's analysis message: its 3 header tokens, the reasoning's 9 and `<|end|>`.
REASONING_TOKENS = {QWEN3: 11, R1: 10, GPT_OSS: 13}
# Then "\n\n", the answer's 4 tokens and the end-of-text token; gpt-oss's final message:
# `<|start|>assistant<|channel|>final<|message|>` (6 tokens), the answer's 4 and `<|return|>`.
ANSWER_TOKENS = {QWEN3: 6, R1: 6, GPT_OSS: 11}
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def thinking_models() -> None:
    for name in (QWEN3, R1, GPT_OSS):
        build_model(name, MODEL_CACHE)


@pytest.fixture(scope="module")
def client(api_url: str, thinking_models) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def generator_text(name: str, skip_special_tokens: bool = True) -> str:
    """onnxruntime-genai's Generator, greedy, on the chat prompt of QUESTION (its stop token left out;
    `skip_special_tokens` false: the tokens spelled out, special ones included)."""
    folder = MODEL_CACHE / name
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(json.dumps(user(QUESTION)), add_generation_prompt=True)
    tokens = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokens) + 40, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(tokens, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    output = generator.get_sequence(0)[len(tokens) :]
    if skip_special_tokens:
        return tokenizer.decode(output)
    spelled = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return spelled.decode(output.tolist(), skip_special_tokens=False)


def ladle_result(name: str, job: GenerationJob):
    """The result of `job` in Ladle's engine (the continuous engine on CPU)."""
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    try:
        loaded = registry.get(name)
        request = loaded.prepare(job, emit=lambda event: None)
        loaded.engine.submit(request)
        assert request.finished.wait(timeout=120) and request.error is None
    finally:
        registry.close()
    return request.result


@pytest.mark.parametrize("name", [QWEN3, R1])
def test_the_hand_wired_model_thinks_the_same_in_onnxruntime_genai_and_ladles_engine(name: str, thinking_models):
    opened = "" if name == R1 else "<think>"
    assert generator_text(name) == f"{opened}{REASONING}</think>\n\n{ANSWER}"
    job = GenerationJob(job_id="j", model=name, messages=user(QUESTION), sampling=SamplingParams(temperature=0))
    result = ladle_result(name, job)
    [choice] = result.choices
    assert (choice.reasoning, choice.text, choice.finish_reason) == (REASONING, ANSWER, "stop")
    assert result.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS[name]


def test_the_hand_wired_harmony_model_thinks_the_same_in_onnxruntime_genai_and_ladles_engine(thinking_models):
    # Harmony's tokens are special: the Generator's tokens, spelled out, are the chain's.
    assert generator_text(GPT_OSS, skip_special_tokens=False) == HARMONY_OUTPUT.removesuffix("<|return|>")
    # Ladle's engine on the same prompt as raw text gives the same tokens (their text without the
    # special ones), and the chat job reads the analysis channel out as reasoning.
    folder = MODEL_CACHE / GPT_OSS
    prompt = og.Tokenizer(og.Model(str(folder))).apply_chat_template(
        json.dumps(user(QUESTION)), add_generation_prompt=True
    )
    raw = GenerationJob(job_id="r", model=GPT_OSS, prompts=[prompt], sampling=SamplingParams(temperature=0))
    [plain] = ladle_result(GPT_OSS, raw).choices
    assert plain.text == generator_text(GPT_OSS) == f"analysis{REASONING}assistantfinal{ANSWER}"
    assert plain.reasoning is None
    job = GenerationJob(job_id="j", model=GPT_OSS, messages=user(QUESTION), sampling=SamplingParams(temperature=0))
    result = ladle_result(GPT_OSS, job)
    [choice] = result.choices
    assert (choice.reasoning, choice.text, choice.finish_reason) == (REASONING, ANSWER, "stop")
    assert result.usage.completion_tokens == REASONING_TOKENS[GPT_OSS] + ANSWER_TOKENS[GPT_OSS]
    assert result.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS[GPT_OSS]


def rendered_prompts(name: str, effort: str | None) -> tuple[str, str]:
    """The chat prompt of QUESTION with `effort` as Ladle's renderer (jinja2: the CPU engine and token
    counts) and onnxruntime-genai's (the Generator path) write it."""
    folder = MODEL_CACHE / name
    template = chat_template(folder)
    job = GenerationJob(job_id="j", model=name, messages=user(QUESTION), reasoning_effort=effort)
    [ladle] = prompt_texts(ChatTokenizer(folder), template, job)
    [generator] = prompt_texts(og.Tokenizer(og.Model(str(folder))), template, job)
    return ladle, generator


@pytest.mark.parametrize(("effort", "line"), [("high", "Reasoning: high\n"), (None, "Reasoning: medium\n")])
def test_the_requested_effort_reaches_gpt_oss_chat_template(thinking_models, effort: str | None, line: str):
    # Without an effort the variable is left out and the template's own default ("medium") stands.
    ladle, generator = rendered_prompts(GPT_OSS, effort)
    assert line in ladle and ladle.count("Reasoning:") == 1
    assert generator == ladle
    # A token count renders the prompt the chat job does.
    counted = TokenCounter(ModelDirectory(MODEL_CACHE)).count(GPT_OSS, user(QUESTION), reasoning_effort=effort)
    assert counted == len(ChatTokenizer(MODEL_CACHE / GPT_OSS).encode(ladle))


def test_a_template_that_does_not_read_the_effort_renders_the_same_prompt_with_it(thinking_models):
    assert rendered_prompts(QWEN3, "high") == rendered_prompts(QWEN3, None)


def test_a_requested_effort_reaches_gpt_oss_through_responses_and_chat(client: OpenAI, api_url: str):
    # "xhigh" is one token longer than the template's default "medium" (the other efforts are as
    # long): the prompt the model saw, and the counts of it, show the effort reached the template.
    default = client.responses.create(model=GPT_OSS, input=QUESTION)
    response = client.responses.create(model=GPT_OSS, input=QUESTION, reasoning={"effort": "xhigh"})
    assert response.status == "completed" and response.output_text == ANSWER
    assert response.reasoning.effort == "xhigh" and response.output[0].content[0].text == REASONING
    assert response.usage.input_tokens == default.usage.input_tokens + 1
    counted = client.responses.input_tokens.count(model=GPT_OSS, input=QUESTION, reasoning={"effort": "xhigh"})
    assert counted.input_tokens == response.usage.input_tokens
    completion = client.chat.completions.create(model=GPT_OSS, messages=user(QUESTION), reasoning_effort="xhigh")
    message = completion.choices[0].message
    assert message.content == ANSWER and message.model_extra["reasoning_content"] == REASONING
    assert completion.usage.prompt_tokens == response.usage.input_tokens
    body = {"model": GPT_OSS, "messages": user(QUESTION), "reasoning_effort": "xhigh"}
    count = requests.post(f"{api_url}/v1/chat/completions/tokenizer/encode/count", json=body, timeout=30)
    assert count.json() == {"tokenCount": completion.usage.prompt_tokens}


def test_an_unknown_reasoning_effort_is_a_400_naming_it(client: OpenAI):
    with pytest.raises(BadRequestError) as chat:
        client.chat.completions.create(model=GPT_OSS, messages=user(QUESTION), reasoning_effort="extreme")
    assert (chat.value.body["param"], chat.value.body["code"]) == ("reasoning_effort", "invalid_value")
    assert chat.value.body["type"] == "invalid_request_error" and "reasoning_effort" in chat.value.body["message"]
    with pytest.raises(BadRequestError) as responses:
        client.responses.create(model=GPT_OSS, input=QUESTION, reasoning={"effort": "extreme"})
    assert responses.value.body["param"] == "reasoning.effort"


@pytest.mark.parametrize("name", [QWEN3, R1, GPT_OSS])
def test_a_response_holds_the_reasoning_item_before_the_answer(client: OpenAI, name: str):
    response = client.responses.create(model=name, input=QUESTION, reasoning={"effort": "high"})
    assert response.status == "completed" and response.output_text == ANSWER
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.status == "completed"
    assert reasoning.summary == [] and reasoning.encrypted_content is None
    assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", REASONING)]
    assert message.type == "message" and message.content[0].text == ANSWER
    usage = response.usage
    assert usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS[name]
    assert usage.output_tokens == REASONING_TOKENS[name] + ANSWER_TOKENS[name]
    assert response.reasoning.effort == "high"


@pytest.mark.parametrize("name", [QWEN3, GPT_OSS])
def test_a_streamed_response_sends_reasoning_deltas_in_openais_order(client: OpenAI, name: str):
    with client.responses.stream(model=name, input=QUESTION) as stream:
        events = list(stream)  # the SDK's helper raises on an event out of order
        final = stream.get_final_response()
    types = [e.type for e in events]
    reasoning_deltas = [e for e in events if e.type == "response.reasoning_text.delta"]
    text_deltas = [e for e in events if e.type == "response.output_text.delta"]
    first, last = types.index("response.reasoning_text.delta"), types.index("response.output_text.delta")
    assert types[:first] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[first + len(reasoning_deltas) : last] == [
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(types[first : first + len(reasoning_deltas)]) == {"response.reasoning_text.delta"}
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert {(e.output_index, e.item_id) for e in reasoning_deltas} == {(0, final.output[0].id)}
    assert {e.output_index for e in text_deltas} == {1}
    assert "".join(e.delta for e in reasoning_deltas) == REASONING
    assert "".join(e.delta for e in text_deltas) == ANSWER
    added = events[2].item
    assert added.type == "reasoning" and added.status == "in_progress" and added.content == []
    done = next(e for e in events if e.type == "response.reasoning_text.done")
    assert done.text == REASONING and done.content_index == 0
    assert final.output[0].content[0].text == REASONING and final.output_text == ANSWER
    assert final.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS[name]


@pytest.mark.parametrize("name", [QWEN3, GPT_OSS])
def test_a_stored_response_keeps_its_reasoning_and_the_next_turn_does_not_see_it(client: OpenAI, name: str):
    first = client.responses.create(model=name, input=QUESTION)
    stored = client.responses.retrieve(first.id)
    assert [item.type for item in stored.output] == ["reasoning", "message"]
    assert stored.output[0].content[0].text == REASONING
    # The earlier answer's reasoning is dropped from the prompt (as Qwen3's, DeepSeek-R1's and gpt-oss's
    # templates drop it): continuing the response shows the model what the bare conversation does.
    continued = client.responses.input_tokens.count(model=name, previous_response_id=first.id, input="Again?")
    conversation = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Again?"},
    ]
    bare = client.responses.input_tokens.count(model=name, input=conversation)
    assert continued.input_tokens == bare.input_tokens
    second = client.responses.create(model=name, previous_response_id=first.id, input="Again?")
    assert second.output_text == ANSWER and second.output[0].type == "reasoning"


def test_reasoning_items_sent_back_are_accepted_and_not_shown_to_the_model(client: OpenAI):
    first = client.responses.create(model=QWEN3, input=QUESTION)
    sent_back = [{"role": "user", "content": QUESTION}, *[item.model_dump() for item in first.output]]
    sent_back.append({"role": "user", "content": "Again?"})
    with_reasoning = client.responses.input_tokens.count(model=QWEN3, input=sent_back)
    without = client.responses.input_tokens.count(
        model=QWEN3, input=[i for i in sent_back if i.get("type") != "reasoning"]
    )
    assert with_reasoning.input_tokens == without.input_tokens
    second = client.responses.create(model=QWEN3, input=sent_back)
    assert second.output_text == ANSWER


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "reasoning", "summary": "thought"}, "input.0.summary"),
        ({"type": "reasoning"}, "input.0.summary"),
        ({"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text"}]}, "input.0.content.0.text"),
        (
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x", "extra": 1}]},
            "input.0.summary.0.extra",
        ),
    ],
)
def test_a_reasoning_input_item_of_a_bad_shape_is_a_400_naming_it(
    api_url: str, thinking_models, item: dict, param: str
):
    body = {"model": QWEN3, "input": [item, {"role": "user", "content": QUESTION}]}
    response = requests.post(f"{api_url}/v1/responses", json=body, timeout=30)
    assert assert_error(response, 400, param)["type"] == "invalid_request_error"


def test_max_output_tokens_inside_the_thinking_leaves_an_incomplete_reasoning_item(client: OpenAI):
    response = client.responses.create(model=QWEN3, input=QUESTION, max_output_tokens=5)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    [reasoning] = response.output
    assert reasoning.type == "reasoning" and reasoning.status == "incomplete"
    assert REASONING.startswith(reasoning.content[0].text) and reasoning.content[0].text
    assert response.usage.output_tokens_details.reasoning_tokens == 5 and response.output_text == ""


@pytest.mark.parametrize("name", [QWEN3, R1, GPT_OSS])
def test_a_chat_completion_has_reasoning_content_apart_from_its_content(client: OpenAI, name: str):
    completion = client.chat.completions.create(model=name, messages=user(QUESTION))
    message = completion.choices[0].message
    assert message.content == ANSWER and message.model_extra["reasoning_content"] == REASONING
    assert completion.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS[name]
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("name", [QWEN3, GPT_OSS])
def test_a_streamed_chat_completion_sends_reasoning_content_deltas_first(client: OpenAI, name: str):
    stream = client.chat.completions.create(
        model=name, messages=user(QUESTION), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas]
    content = [d.content for d in deltas]
    assert "".join(r for r in reasoning if r) == REASONING
    assert "".join(c for c in content if c) == ANSWER
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    assert min(i for i, c in enumerate(content) if c) > last_reasoning
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS[name]


def test_a_model_that_does_not_think_answers_as_before(client: OpenAI):
    completion = client.chat.completions.create(model=TINY, messages=user("hi"), max_tokens=4)
    assert "reasoning_content" not in completion.choices[0].message.model_extra
    assert completion.usage.completion_tokens_details is None
    response = client.responses.create(model=TINY, input="hi", max_output_tokens=4)
    assert [item.type for item in response.output] == ["message"]
    assert response.usage.output_tokens_details.reasoning_tokens == 0


@pytest.fixture(scope="module")
def claude(api_url: str, thinking_models) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=api_url, api_key="x", max_retries=0)


@pytest.mark.parametrize("name", [QWEN3, GPT_OSS])
def test_an_anthropic_message_shows_a_thinking_block_when_thinking_is_enabled(claude: anthropic.Anthropic, name: str):
    enabled = {"type": "enabled", "budget_tokens": 256}
    message = claude.messages.create(model=name, max_tokens=512, messages=user(QUESTION), thinking=enabled)
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", REASONING, "")
    assert (text.type, text.text) == ("text", ANSWER)
    plain = claude.messages.create(model=name, max_tokens=64, messages=user(QUESTION))
    assert [(block.type, block.text) for block in plain.content] == [("text", ANSWER)]  # the reasoning left out


def test_a_streamed_anthropic_message_sends_thinking_deltas_first(claude: anthropic.Anthropic):
    enabled = {"type": "enabled", "budget_tokens": 256}
    with claude.messages.stream(model=R1, max_tokens=512, messages=user(QUESTION), thinking=enabled) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    thinking = "".join(
        e.delta.thinking for e in events if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    )
    assert thinking == REASONING and final.content[0].thinking == REASONING and final.content[1].text == ANSWER

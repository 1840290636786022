"""Sampling knobs through HTTP, each checked against its definition: OpenAI's frequency and
presence penalties (from the answer's own logprobs, which are the raw logits'), logit_bias,
min_p, repetition_penalty; per row in a shared batch; on the Azure and Databricks routes too;
and the OpenAI fields that carry no meaning here, accepted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import onnxruntime_genai as og
import pytest
import requests
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from openai import OpenAI

from contracts.settings import Settings
from tests.helpers import ASYNC, SMOLLM2, TINY, assert_error, user, wait_for, wait_for_first_token
from tests.stack import ApiServer

REPEAT = user("Write the word apple ten times, separated by spaces.")
KEY = "knobs-test-key"


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(model_dir) -> og.Tokenizer:
    return og.Tokenizer(og.Model(str(model_dir / SMOLLM2)))


OPENAI_KNOBS = {"frequency_penalty", "presence_penalty", "logit_bias"}


def greedy(client: OpenAI, messages: list[dict], max_tokens: int = 30, **knobs):
    """A greedy SmolLM2 answer with the 20 most likely alternatives of each token (knobs the SDK
    has no argument for go in its extra_body)."""
    extra = {k: v for k, v in knobs.items() if k not in OPENAI_KNOBS}
    return client.chat.completions.create(
        model=SMOLLM2,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        logprobs=True,
        top_logprobs=20,
        extra_body=extra or None,
        **{k: v for k, v in knobs.items() if k in OPENAI_KNOBS},
    ).choices[0]


@pytest.mark.parametrize(("frequency", "presence"), [(1.2, 0.0), (0.0, 1.5), (0.6, 0.6), (-0.8, 0.0)])
def test_frequency_and_presence_penalties_follow_openais_definition(client, frequency, presence):
    """Each greedy token is the best of the alternatives once each has lost frequency x (times it
    came before in the output) + presence x (whether it did)."""
    plain = greedy(client, REPEAT)
    assert max(Counter(e.token for e in plain.logprobs.content).values()) >= 3  # the prompt makes it repeat
    choice = greedy(client, REPEAT, frequency_penalty=frequency, presence_penalty=presence)
    assert choice.message.content != plain.message.content
    seen: Counter[str] = Counter()
    for entry in choice.logprobs.content:

        def score(token: str, logprob: float) -> float:
            return logprob - frequency * seen[token] - presence * (seen[token] > 0)

        best = max(score(alt.token, alt.logprob) for alt in entry.top_logprobs)
        assert score(entry.token, entry.logprob) >= best - 1e-3, (entry.token, seen)
        seen[entry.token] += 1


def test_positive_penalties_repeat_less_and_negative_ones_more(client):
    def most_repeated(**knobs) -> int:
        return max(Counter(e.token for e in greedy(client, REPEAT, **knobs).logprobs.content).values())

    plain = most_repeated()
    assert most_repeated(frequency_penalty=1.5) < plain
    assert most_repeated(repetition_penalty=1.8) < plain
    assert most_repeated(presence_penalty=-2.0, frequency_penalty=-2.0) >= plain


def test_logit_bias_of_100_makes_the_token_every_token(client, tokenizer):
    (token,) = tokenizer.encode(" pear")[-1:]
    choice = client.chat.completions.create(
        model=SMOLLM2, messages=REPEAT, max_tokens=6, temperature=0, logit_bias={str(token): 100}
    ).choices[0]
    assert choice.message.content == tokenizer.decode([token] * 6)
    assert choice.finish_reason == "length"


def test_logit_bias_of_minus_100_takes_the_runner_up(client, tokenizer):
    question = user("What is the capital of France?")
    first = greedy(client, question, max_tokens=1).logprobs.content[0]
    banned, runner_up = first.top_logprobs[0].token, first.top_logprobs[1].token
    (banned_id,) = tokenizer.encode(banned)[-1:]
    assert tokenizer.decode([banned_id]) == banned
    biased = greedy(client, question, max_tokens=1, logit_bias={str(banned_id): -100}).logprobs.content[0]
    assert biased.token == runner_up


def test_min_p_of_one_samples_only_the_most_likely_token(client):
    expected = greedy(client, REPEAT, max_tokens=16).message.content
    for seed in (1, 2, 3):
        sampled = client.chat.completions.create(
            model=SMOLLM2, messages=REPEAT, max_tokens=16, temperature=1.5, seed=seed, extra_body={"min_p": 1.0}
        )
        assert sampled.choices[0].message.content == expected


def test_rows_without_knobs_decode_as_before_beside_rows_with_them(chat, api_url):
    request = {"model": SMOLLM2, "messages": REPEAT, "max_tokens": 24, "temperature": 0}
    alone = chat(request).json()["choices"][0]["message"]["content"]
    knobs = {"frequency_penalty": 1.0, "logit_bias": {"100": 5}, "repetition_penalty": 1.3, "max_tokens": 200}
    neighbour = chat({**request, **knobs, "temperature": 0.9, "seed": 3}, headers=ASYNC).json()["id"]
    wait_for_first_token(api_url, neighbour)
    beside = chat(request)
    assert beside.json()["choices"][0]["message"]["content"] == alone
    job = requests.get(f"{api_url}/v1/jobs/{beside.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] > 1  # decoded together with the neighbour
    wait_for(api_url, neighbour, {"succeeded"}, timeout_s=120)


def test_knobs_on_completions(api_url, tokenizer):
    (token,) = tokenizer.encode(" pear")[-1:]
    body = {"model": SMOLLM2, "prompt": "Fruit:", "max_tokens": 4, "temperature": 0, "logit_bias": {str(token): 100}}
    response = requests.post(f"{api_url}/v1/completions", json=body, timeout=60)
    assert response.json()["choices"][0]["text"] == tokenizer.decode([token] * 4)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"logit_bias": {"49152": 1}}, "logit_bias"),
        ({"logit_bias": {"cat": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_p": 1.5}, "min_p"),
        ({"modalities": ["text", "audio"]}, "modalities.1"),
        ({"service_tier": "fastest"}, "service_tier"),
    ],
)
def test_bad_knob_is_400_naming_it(chat, change, param):
    response = chat({"model": SMOLLM2, "messages": user("hi"), "max_tokens": 3, **change})
    error = assert_error(response, 400, param=param)
    if change.get("logit_bias") == {"49152": 1}:
        assert "49152" in error["message"] and "vocabulary" in error["message"]


def test_fields_with_no_meaning_here_are_accepted(chat):
    body = {
        "model": TINY,
        "messages": user("hi"),
        "max_tokens": 2,
        "service_tier": "auto",
        "prompt_cache_key": "conversation-42",
        "safety_identifier": "user-hash-1",
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "hello there"},
        "user": "u1",
    }
    response = chat(body)
    assert response.status_code == 200, response.text
    assert_error(chat({**body, "made_up_option": 1}), 400, param="made_up_option")


@pytest.fixture(scope="module")
def keyed(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with a key, as Azure and Databricks clients send one."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY,), rate_limit="off"))
    yield server.url
    server.stop()


def test_knobs_pass_through_azure_extra_parameters(keyed, tokenizer):
    (token,) = tokenizer.encode(" pear")[-1:]
    azure = ChatCompletionsClient(keyed, AzureKeyCredential(KEY), retry_total=0)
    result = azure.complete(
        messages=[UserMessage("Name a fruit.")],
        model=SMOLLM2,
        max_tokens=3,
        temperature=0,
        frequency_penalty=0.5,
        model_extras={"logit_bias": {str(token): 100}, "repetition_penalty": 1.1, "min_p": 0.1},
    )
    assert result.choices[0].message.content == tokenizer.decode([token] * 3)


def test_knobs_on_databricks_invocations(keyed, tokenizer):
    (token,) = tokenizer.encode(" pear")[-1:]
    body = {
        "messages": user("Name a fruit."),
        "max_tokens": 3,
        "temperature": 0,
        "presence_penalty": 0.5,
        "extra_params": {"logit_bias": f'{{"{token}": 100}}', "min_p": "0.1"},
    }
    url = f"{keyed}/serving-endpoints/{SMOLLM2}/invocations"
    response = requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == tokenizer.decode([token] * 3)

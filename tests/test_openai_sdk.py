"""The official openai SDK, unchanged, against Ladle."""

from __future__ import annotations

import pytest
from openai import NotFoundError, OpenAI

from tests.helpers import SMOLLM2, TINY, user


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def test_sdk_chat_completion(client: OpenAI):
    completion = client.chat.completions.create(
        model=SMOLLM2, messages=user("What is the capital of France?"), max_tokens=30, temperature=0
    )
    assert "Paris" in completion.choices[0].message.content
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_sdk_streaming(client: OpenAI):
    stream = client.chat.completions.create(
        model=TINY, messages=user("hi"), max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_sdk_lists_models(client: OpenAI):
    assert {TINY, SMOLLM2} <= {m.id for m in client.models.list()}


def test_sdk_sees_unknown_model_as_not_found(client: OpenAI):
    with pytest.raises(NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert raised.value.body["code"] == "model_not_found"

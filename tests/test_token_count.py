"""Foundry's token count: the prompt length the model would see, from a light-lane worker."""

from __future__ import annotations

import json
import time

import onnxruntime_genai as og
import pytest
import requests

from tests.helpers import ASYNC, MINILM, SMOLLM2, TINY, assert_error, wait_for

URL = "/v1/chat/completions/tokenizer/encode/count"
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ünïcödé 日本語 🎉, tabs\tand\nlines"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_count_equals_the_prompt_onnxruntime_genai_would_see(api_url, model_dir, messages):
    folder = model_dir / SMOLLM2
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    prompt = tokenizer.apply_chat_template(
        messages=json.dumps(messages),
        add_generation_prompt=True,
        template_str=(folder / "chat_template.jinja").read_text(),
    )
    response = requests.post(f"{api_url}{URL}", json={"model": SMOLLM2, "messages": messages}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"tokenCount": len(tokenizer.encode(prompt))}


def test_count_equals_usage_prompt_tokens(api_url):
    messages = CONVERSATIONS[1]
    usage = requests.post(
        f"{api_url}/v1/chat/completions", json={"model": TINY, "messages": messages, "max_tokens": 1}, timeout=30
    ).json()["usage"]
    count = requests.post(f"{api_url}{URL}", json={"model": TINY, "messages": messages}, timeout=30).json()
    assert count["tokenCount"] == usage["prompt_tokens"]


def test_count_does_not_wait_behind_long_generations(api_url):
    busy = [
        requests.post(
            f"{api_url}/v1/chat/completions",
            headers=ASYNC,
            timeout=30,
            json={"model": TINY, "messages": CONVERSATIONS[0], "max_tokens": 8000, "seed": i, "temperature": 1.0},
        ).json()["id"]
        for i in range(20)
    ]
    try:
        response = requests.post(f"{api_url}{URL}", json={"model": TINY, "messages": CONVERSATIONS[0]}, timeout=30)
        assert response.status_code == 200
        job = requests.get(f"{api_url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()
        assert "-light-" in job["worker"]  # ran on the light lane, while generations fill the compute lane
        statuses = [requests.get(f"{api_url}/v1/jobs/{j}", timeout=10).json()["status"] for j in busy]
        assert "queued" in statuses  # the compute lane really was full
    finally:
        for job_id in busy:
            requests.delete(f"{api_url}/v1/jobs/{job_id}", timeout=10)
        for job_id in busy:
            wait_for(api_url, job_id, {"cancelled", "succeeded"})
    time.sleep(0.2)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"messages": CONVERSATIONS[0]}, 400, "model"),
        ({"model": TINY}, 400, "messages"),
        ({"model": TINY, "messages": []}, 400, "messages"),
        ({"model": TINY, "messages": "hi"}, 400, "messages"),
        ({"model": "nope", "messages": CONVERSATIONS[0]}, 404, "model"),
        ({"model": MINILM, "messages": CONVERSATIONS[0]}, 400, "model"),
    ],
)
def test_bad_count_requests(api_url, body, status, param):
    assert_error(requests.post(f"{api_url}{URL}", json=body, timeout=30), status, param=param)

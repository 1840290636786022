"""What real clients send that Ladle used to refuse or answer oddly: embeddings of token ids
(LangChain's default), a sync request whose client went away, content null beside a cut tool call,
image parts, a model-less Azure request, databricks-sdk's host metadata probe."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import requests
import tiktoken
from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient
from azure.ai.inference.models import ImageContentItem, ImageUrl, TextContentItem, UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from databricks.sdk import WorkspaceClient
from langchain_openai import OpenAIEmbeddings
from openai import OpenAI
from tokenizers import Tokenizer

from contracts.settings import Settings
from tests.held_streams import post_request
from tests.helpers import ASYNC, MINILM, SMOLLM2, TINY, assert_error, user, wait_for, wait_for_first_token
from tests.stack import ApiServer, GunicornApi
from tests.tool_schemas import PICK

SENTENCES = ["The cat sits on the mat.", "Paris is the capital of France."]
AZURE_KEY = "friction-test-key"


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def minilm_tokenizer(model_dir) -> Tokenizer:
    """MiniLM's tokenizer as a client would use it: one text's ids, unpadded (its file pads to 128)."""
    tokenizer = Tokenizer.from_file(str(model_dir / MINILM / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


def text_vectors(client: OpenAI, texts: list[str]) -> np.ndarray:
    return np.array([d.embedding for d in client.embeddings.create(model=MINILM, input=texts).data])


# --- Embeddings of token ids ---------------------------------------------------------------------


def test_token_ids_of_the_models_tokenizer_embed_as_their_text(client: OpenAI, minilm_tokenizer: Tokenizer):
    """Ids without special tokens (as tiktoken-style clients send them) and ids with them alike."""
    bare = [minilm_tokenizer.encode(text, add_special_tokens=False).ids for text in SENTENCES]
    full = [minilm_tokenizer.encode(text).ids for text in SENTENCES]
    assert full[0][0] != bare[0][0] and len(full[0]) == len(bare[0]) + 2  # [CLS] ... [SEP]
    texts = text_vectors(client, SENTENCES)
    by_bare = client.embeddings.create(model=MINILM, input=bare)
    by_full = client.embeddings.create(model=MINILM, input=full)
    one = client.embeddings.create(model=MINILM, input=bare[1])  # one array of ints: one embedding
    assert np.allclose([d.embedding for d in by_bare.data], texts, atol=1e-6)
    assert np.allclose([d.embedding for d in by_full.data], texts, atol=1e-6)
    assert len(one.data) == 1 and np.allclose(one.data[0].embedding, texts[1], atol=1e-6)
    assert by_bare.usage.prompt_tokens == sum(len(ids) for ids in full)  # special tokens counted, as for text


def test_token_ids_outside_the_vocabulary_are_a_400_saying_whose_they_look_like(api_url: str):
    response = requests.post(
        f"{api_url}/v1/embeddings", json={"model": MINILM, "input": [[101, 2023], [15339, 100255]]}, timeout=60
    )
    error = assert_error(response, 400, param="input", code="invalid_value")
    assert "100255" in error["message"] and "input 1" in error["message"]
    assert "tiktoken" in error["message"] and "check_embedding_ctx_length=False" in error["message"]


@pytest.mark.parametrize("inputs", [[[]], [[1, -2]], [[1, 2], "text"], [1, 2.5], [True]])
def test_malformed_token_ids_are_a_400_naming_input(api_url: str, inputs: list):
    response = requests.post(f"{api_url}/v1/embeddings", json={"model": MINILM, "input": inputs}, timeout=60)
    assert_error(response, 400, param="input")


def test_an_instruction_with_token_ids_is_a_400(api_url: str):
    body = {"model": MINILM, "input": [101, 2023], "instruction": "Represent:"}
    assert_error(requests.post(f"{api_url}/v1/embeddings", json=body, timeout=60), 400, param="instruction")


# tiktoken's cl100k_base split pattern (tiktoken_ext.openai_public).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)


@pytest.fixture
def cl100k_stand_in(monkeypatch) -> tiktoken.Encoding:
    """A local stand-in for tiktoken's cl100k_base, which LangChain's OpenAIEmbeddings tokenizes with:
    its file cannot be downloaded here, and tiktoken refuses a cached copy whose sha256 is not the
    real file's. It splits as cl100k does and has its special tokens; its ids (one per byte) lie where
    many of cl100k's do, past MiniLM's vocabulary of 30,522. `tiktoken.get_encoding` returns an
    encoding registered in ENCODINGS before it looks for a constructor."""
    encoding = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=CL100K_PATTERN,
        mergeable_ranks={bytes([b]): 40_000 + b for b in range(256)},
        special_tokens={"<|endoftext|>": 100257},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", encoding)
    return encoding


def test_langchain_default_embeddings_get_a_400_telling_how_to_send_text(api_url: str, cl100k_stand_in):
    """OpenAIEmbeddings() tokenizes with tiktoken and sends the ids: foreign ones are refused, saying why."""
    embeddings = OpenAIEmbeddings(model=MINILM, base_url=f"{api_url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        embeddings.embed_query("hello world")
    message = raised.value.body["message"]
    assert "check_embedding_ctx_length=False" in message and "tiktoken" in message
    assert raised.value.body["param"] == "input"


def test_langchain_with_check_embedding_ctx_length_off_sends_text(api_url: str, client: OpenAI, cl100k_stand_in):
    embeddings = OpenAIEmbeddings(
        model=MINILM, base_url=f"{api_url}/v1", api_key="x", max_retries=0, check_embedding_ctx_length=False
    )
    assert np.allclose(embeddings.embed_documents(SENTENCES), text_vectors(client, SENTENCES), atol=1e-6)
    assert np.allclose(embeddings.embed_query(SENTENCES[0]), text_vectors(client, SENTENCES[:1])[0], atol=1e-6)


# --- A synchronous request whose client goes away --------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn_url(settings: Settings, api_url: str, tmp_path_factory) -> Iterator[str]:
    """The API as deployed (gunicorn, gevent), on the shared Redis and workers (`api_url` starts them)."""
    server = GunicornApi(settings, tmp_path_factory.mktemp("friction-logs") / "api.log")
    yield server.url
    server.stop()


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server_url(request, api_url: str) -> str:
    """Each server the API runs under: the test server in this process, and gunicorn's gevent worker."""
    return request.getfixturevalue("gunicorn_url") if request.param == "gunicorn" else api_url


def interactive_chat_jobs(url: str) -> list[dict]:
    """The newest chat jobs that are not batch lines (a batch of an earlier test may still add those)."""
    listed = requests.get(f"{url}/v1/jobs", params={"kind": "chat", "limit": 100}, timeout=10).json()["data"]
    return [job for job in listed if not job.get("batch")]


def recent_jobs(url: str) -> set[str]:
    return {job["id"] for job in interactive_chat_jobs(url)}


def new_chat_job(url: str, before: set[str], timeout_s: float = 30) -> str:
    """The ID of the chat job that appeared in the listing since `before` was taken."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [job["id"] for job in interactive_chat_jobs(url) if job["id"] not in before]
        if fresh:
            assert len(fresh) == 1, fresh
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError("the request's job never appeared in GET /v1/jobs")


def open_request(url: str, body: dict, headers: dict[str, str] | None = None) -> socket.socket:
    """Send a POST /v1/chat/completions on a raw connection, leaving the response unread."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    request = post_request("/v1/chat/completions", body)
    for name, value in (headers or {}).items():
        request = request.replace(b"\r\n\r\n", f"\r\n{name}: {value}\r\n\r\n".encode(), 1)
    sock.sendall(request)
    return sock


def test_a_sync_request_whose_client_goes_away_is_cancelled(server_url: str):
    before = recent_jobs(server_url)
    sock = open_request(server_url, {"model": TINY, "messages": user("hi"), "max_tokens": 6000})
    job_id = new_chat_job(server_url, before)
    wait_for_first_token(server_url, job_id)  # running: the worker checks for a cancel between steps
    sock.close()
    closed = time.monotonic()
    job = wait_for(server_url, job_id, {"cancelled", "succeeded", "failed"}, timeout_s=30)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - closed < 5  # about a second to see the close, then the worker's next step


def test_an_async_job_goes_on_when_its_submitting_connection_closes(server_url: str):
    sock = open_request(server_url, {"model": TINY, "messages": user("hi"), "max_tokens": 300}, ASYNC)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    sock.close()
    assert head.split(b" ", 2)[1] == b"202"
    job_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    assert wait_for(server_url, job_id, {"cancelled", "succeeded", "failed"})["status"] == "succeeded"


# --- content null beside tool calls ------------------------------------------------------------------


def test_a_forced_tool_call_cut_by_max_tokens_has_null_content(chat):
    body = {"model": TINY, "messages": user("hi"), "tools": [PICK], "tool_choice": "required", "max_tokens": 3}
    response = chat(body)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": None}


def test_a_complete_forced_tool_call_still_has_null_content_and_its_call(client: OpenAI):
    choice = client.chat.completions.create(
        model=TINY,
        messages=user("hi"),
        tools=[PICK],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
        seed=3,
    ).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls[0].function.name == "pick"


# --- Image, audio and file content parts ------------------------------------------------------------

NON_TEXT_PARTS = [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-abc"}},
]


@pytest.mark.parametrize("part", NON_TEXT_PARTS, ids=[p["type"] for p in NON_TEXT_PARTS])
def test_a_non_text_content_part_is_a_400_naming_its_type(chat, part: dict):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    error = assert_error(chat({"model": TINY, "messages": messages}), 400, param="messages.0.content")
    assert f"'{part['type']}'" in error["message"] and "text only" in error["message"]


@pytest.fixture(scope="module")
def keyed_azure(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with a key (as Azure clients send one), on the shared Redis and workers; the settings'
    default model is Ladle's own (not overridden)."""
    assert settings.default_model == Settings().default_model == SMOLLM2
    server = ApiServer(settings.with_overrides(api_keys=(AZURE_KEY,), rate_limit="off"))
    yield server.url
    server.stop()


def test_azure_sdk_image_part_is_a_400_in_azure_shape(keyed_azure: str):
    client = ChatCompletionsClient(keyed_azure, AzureKeyCredential(AZURE_KEY), retry_total=0)
    content = [TextContentItem(text="What is this?"), ImageContentItem(image_url=ImageUrl(url="https://x/cat.png"))]
    with pytest.raises(HttpResponseError) as raised:
        client.complete(messages=[UserMessage(content=content)], model=TINY, max_tokens=5)
    assert raised.value.status_code == 400
    assert raised.value.response.headers["x-ms-error-code"] == "invalid_value"
    error = raised.value.response.json()["error"]
    assert "'image_url'" in error["message"] and "text only" in error["message"]
    assert error["param"] == "messages.0.content"


def test_databricks_image_part_is_a_400_in_databricks_shape(api_url: str):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, NON_TEXT_PARTS[0]]}]}
    response = requests.post(f"{api_url}/serving-endpoints/{TINY}/invocations", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json().keys() == {"error_code", "message"}
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'image_url'" in response.json()["message"] and "text only" in response.json()["message"]


# --- The default model --------------------------------------------------------------------------------


def test_azure_model_info_without_a_model_is_the_default_chat_model(keyed_azure: str):
    info = ChatCompletionsClient(keyed_azure, AzureKeyCredential(AZURE_KEY), retry_total=0).get_model_info()
    assert (info.model_name, info.model_type) == (SMOLLM2, "chat_completion")


def test_azure_chat_without_a_model_is_served_by_the_default(keyed_azure: str):
    client = ChatCompletionsClient(keyed_azure, AzureKeyCredential(AZURE_KEY), retry_total=0)
    result = client.complete(messages=[UserMessage("hi")], max_tokens=3)
    assert result.model == SMOLLM2 and result.choices[0].message.content


def test_azure_embeddings_without_a_model_use_the_default_embedding_model(keyed_azure: str, client: OpenAI):
    embeddings = EmbeddingsClient(keyed_azure, AzureKeyCredential(AZURE_KEY), retry_total=0)
    result = embeddings.embed(input=SENTENCES)
    assert result.model == MINILM
    assert np.allclose([item.embedding for item in result.data], text_vectors(client, SENTENCES), atol=1e-6)


def test_a_default_model_not_in_the_directory_falls_back_to_naming_one(settings: Settings, api_url: str):
    """With several models and the default absent, a model-less request is the 400 it always was."""
    server = ApiServer(settings.with_overrides(default_model="not-built-here"))
    try:
        response = requests.get(f"{server.url}/info", timeout=30)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "model_required" and "not-built-here" in error["message"]
        chat = requests.post(f"{server.url}/chat/completions", json={"messages": user("hi")}, timeout=30)
        assert chat.json()["error"]["code"] == "model_required"
        embedded = requests.post(f"{server.url}/embeddings", json={"input": ["a cat"]}, timeout=60)
        assert embedded.status_code == 200 and embedded.json()["model"] == MINILM
    finally:
        server.stop()


# --- databricks-sdk's host metadata -------------------------------------------------------------------


def test_databricks_sdk_resolves_host_metadata_without_a_warning(api_url: str, caplog):
    caplog.set_level(logging.DEBUG, logger="databricks")
    workspace = WorkspaceClient(host=api_url, token="unused")
    names = [endpoint.name for endpoint in workspace.serving_endpoints.list()]
    assert TINY in names and MINILM in names
    complaints = [r for r in caplog.records if r.name.startswith("databricks") and r.levelno >= logging.WARNING]
    assert complaints == [], [r.getMessage() for r in complaints]


def test_host_metadata_document_reads_as_the_sdks(api_url: str):
    from databricks.sdk.oauth import HostMetadata

    response = requests.get(f"{api_url}/.well-known/databricks-config", timeout=10)
    assert response.status_code == 200
    body = response.json()
    metadata = HostMetadata.from_dict(body)
    assert metadata.oidc_endpoint == "" and metadata.account_id is None and metadata.cloud is None
    assert json.loads(json.dumps(metadata.as_dict())) == body

"""Hostile input on every route of the URL map: a specific 4xx in OpenAI's envelope, never a 5xx.

Routes, their path and query parameters and their body fields come from the app's own OpenAPI
document (built from `app.url_map`), so a new route or field is attacked without editing this file.
Requests go out over raw HTTP (http.client) so paths reach the server exactly as written.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

import pytest
import requests

from api.app import create_app
from api.openapi import is_static_files
from tests.helpers import MINILM, TINY, user
from tests.openapi_document import DOCUMENT, OPERATIONS

# A body each JSON route accepts, cheap to serve; one hostile value at a time replaces one field.
# The download's customDirPath lies outside the allowed roots, so nothing is ever downloaded.
VALID_BODIES = {
    "/v1/chat/completions": {"model": TINY, "messages": user("hi"), "max_tokens": 2},
    "/v1/completions": {"model": TINY, "prompt": "hi", "max_tokens": 2},
    "/v1/embeddings": {"model": MINILM, "input": "hi"},
    "/v1/chat/completions/tokenizer/encode/count": {"model": TINY, "messages": user("hi")},
    "/openai/download": {
        "model": {"Uri": "https://huggingface.co/org/repo", "Name": "probe", "Path": "cpu-int4"},
        "customDirPath": "/nonexistent-root/probe",
    },
    # No such file: a real one would run a batch for every attack.
    "/v1/batches": {"input_file_id": "file-none", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    "/v1/messages": {"model": TINY, "messages": user("hi"), "max_tokens": 2},
    "/v1/messages/count_tokens": {"model": TINY, "messages": user("hi")},
    "/v1/messages/batches": {
        "requests": [{"custom_id": "a", "params": {"model": TINY, "messages": user("hi"), "max_tokens": 2}}]
    },
    "/v1/responses": {"model": TINY, "input": "hi", "max_output_tokens": 2},
    "/v1/responses/input_tokens": {"model": TINY, "input": "hi"},
}

# JSON texts (not Python values: 1e400 and lone surrogates cannot be written by json.dumps).
HOSTILE_JSON = {
    "long": json.dumps("x" * 5000),
    "nul": '"a\\u0000b"',
    "control": '"\\u0001\\u001b[2J\\u007f\\n\\r"',
    "lone_surrogate": '"\\ud800"',
    "traversal": '"../../../../etc/passwd"',
    "absolute_path": '"/etc/passwd"',
    "huge_float": "1e400",
    "negative_huge_float": "-1e400",
    "big_int": str(2**70),
    "negative_big_int": str(-(2**70)),
    "nan": "NaN",
    "nested": "[" * 900 + "]" * 900,  # parses (below the parser's limit), so validation sees it
    "object": '{"a": {"b": []}}',
    "bool": "true",
    "empty_list": "[]",
}

# Values for path parameters, percent-encoded as sent.
HOSTILE_PATH_VALUES = {
    "long": "x" * 5000,
    "nul": "a%00b",
    "newline": "a%0D%0ASet-Cookie:%20x=y",
    "control": "%01%1B%7F",
    "dot_dot": "..",
    "encoded_traversal": "..%2F..%2Fetc%2Fpasswd",
    "encoded_dots": "%2E%2E",
    "hidden": ".git",
    "not_utf8": "%FF%FE",
    "overlong_utf8": "%C0%AE%C0%AE",
    "superscript_digit": quote("²"),
    "arabic_digit": quote("١"),
    "space": "%20",
    "backslash": "..%5C..%5Cwindows",
}

HOSTILE_QUERY_VALUES = {
    "long": "x" * 5000,
    "nul": "%00",
    "newline": "%0D%0A",
    "many_digits": "9" * 5000,
    "negative": "-1",
    "superscript_digit": quote("²"),
    "huge_float": "1e400",
    "nan": "NaN",
    "not_utf8": "%FF",
    "empty": "",
}

# Statuses a hostile request may get: rejected (400/404/405/409/413/415/422), or served when the
# value is one the field accepts (a 5,000-character `user` is fine).
CLIENT_ERRORS = {400, 404, 405, 409, 413, 415, 422}


def send(api_url: str, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    """The raw HTTP response (status, headers, body bytes) to exactly this request line and body."""
    address = urlsplit(api_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {**(headers or {}), "Content-Length": str(len(body or b""))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_rejected(status: int, headers: dict, body: bytes, allowed: set[int] = CLIENT_ERRORS) -> dict:
    """A 4xx in OpenAI's error envelope (Databricks' and Anthropic's on their routes); returns the error."""
    assert status in allowed, (status, body[:500])
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    document = json.loads(body)
    if "error_code" in document:  # Databricks' shape (/serving-endpoints): no type, no param
        assert set(document) == {"error_code", "message"}
        error = {"message": document["message"], "type": None, "param": None, "code": document["error_code"]}
    elif document.get("type") == "error":  # Anthropic's shape (/v1/messages): no param, no code
        assert set(document["error"]) == {"type", "message"}
        error = {**document["error"], "param": None, "code": None}
    else:
        error = document["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    return error


def assert_not_a_server_error(status: int, headers: dict, body: bytes) -> None:
    """Served (2xx) or a 4xx in the envelope; never 5xx."""
    if status >= 300:
        assert_rejected(status, headers, body)


def body_fields(path: str) -> list[str]:
    """Top-level fields of the route's request body, plus the nested leaves of its valid body."""
    schema = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[-1]
    fields = list(DOCUMENT["components"]["schemas"][name]["properties"])
    return fields + [leaf for leaf in _leaves(VALID_BODIES[path]) if "." in leaf]


def _leaves(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{prefix}{key}.")]
    if isinstance(value, list) and value:
        return _leaves(value[0], f"{prefix}0.")
    return [prefix.rstrip(".")]


def with_hostile(body: dict, field: str, hostile_json: str) -> bytes:
    """`body` as JSON text with `field` (dotted path) replaced by the raw JSON `hostile_json`."""
    copy = json.loads(json.dumps(body))
    *parents, last = field.split(".")
    target = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = "__HOSTILE__"
    return json.dumps(copy).replace('"__HOSTILE__"', hostile_json).encode()


JSON_ROUTES = sorted(path for method, path, op in OPERATIONS if "requestBody" in op)
PATH_PARAM_OPERATIONS = [
    (method, path) for method, path, op in OPERATIONS if any(p["in"] == "path" for p in op["parameters"])
]
QUERY_PARAMS = [
    (method, path, p["name"]) for method, path, op in OPERATIONS for p in op["parameters"] if p["in"] == "query"
]
HEADER_PARAMS = [
    (method, path, p["name"]) for method, path, op in OPERATIONS for p in op["parameters"] if p["in"] == "header"
]
HOSTILE_HEADER_VALUES = {
    "long": "x" * 5000,
    "repeated": "respond-async," * 400,
    "control": "\x01\x1b\x7f",
    "latin1": "respond-async\xff",
    "empty": "",
}


def test_every_json_route_has_a_valid_body_to_attack():
    assert JSON_ROUTES, "the document lists no JSON routes"
    assert set(JSON_ROUTES) == set(VALID_BODIES)


@pytest.fixture(scope="module")
def response_id(api_url) -> str:
    """A real stored response (OpenAI's Responses API)."""
    response = requests.post(f"{api_url}/v1/responses", json=VALID_BODIES["/v1/responses"], timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def job_id(api_url) -> str:
    """A real finished job (an embedding, submitted async)."""
    response = requests.post(
        f"{api_url}/v1/embeddings",
        json={"model": MINILM, "input": "hi"},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_valid_body_is_served(api_url, path):
    """The baseline the field attacks start from is accepted (so a 4xx below is the field's doing)."""
    body = VALID_BODIES[path]
    status, headers, raw = send(api_url, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    if path == "/openai/download":  # validated up to where it lands, which is outside the allowed roots
        assert assert_rejected(status, headers, raw, {400})["code"] == "path_not_allowed"
    elif path == "/v1/batches":  # validated up to the file it names, which does not exist
        assert assert_rejected(status, headers, raw, {404})["code"] == "file_not_found"
    else:
        assert status == 200, raw[:500]


@pytest.mark.parametrize(
    ("path", "field"),
    [(path, field) for path in JSON_ROUTES for field in body_fields(path)],
)
def test_hostile_body_field(api_url, path, field):
    for name, hostile in HOSTILE_JSON.items():
        body = with_hostile(VALID_BODIES[path], field, hostile)
        status, headers, raw = send(api_url, "POST", path, body, {"Content-Type": "application/json"})
        assert status < 500, (name, status, raw[:500])
        assert_not_a_server_error(status, headers, raw)
        if status == 400 and path != "/openai/download":
            error = assert_rejected(status, headers, raw, {400})
            assert error["param"] is None or error["param"].split(".")[0] == field.split(".")[0], (name, error)


RAW_BODIES = {
    "no_body": (None, {}),
    "empty_json": (b"", {"Content-Type": "application/json"}),
    "text_plain": (b"hello", {"Content-Type": "text/plain"}),
    "form": (b"model=x&messages=y", {"Content-Type": "application/x-www-form-urlencoded"}),
    "multipart": (
        b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--",
        {"Content-Type": "multipart/form-data"},
    ),
    "not_utf8": (b'{"model": "\xff\xfe"}', {"Content-Type": "application/json"}),
    "array": (b"[1, 2]", {"Content-Type": "application/json"}),
    "null": (b"null", {"Content-Type": "application/json"}),
    "string": (b'"model"', {"Content-Type": "application/json"}),
    "deep_arrays": (b"[" * 10_000 + b"]" * 10_000, {"Content-Type": "application/json"}),
    "deep_objects": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, {"Content-Type": "application/json"}),
    "deep_in_field": (b'{"model": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", {"Content-Type": "application/json"}),
    "truncated": (b'{"model": "x", "messages": [', {"Content-Type": "application/json"}),
    "nan_literal": (b'{"model": NaN}', {"Content-Type": "application/json"}),
    "lone_surrogate": (b'{"model": "x", "user": "\\ud800"}', {"Content-Type": "application/json"}),
    "lone_surrogate_key": (b'{"\\udfff": 1}', {"Content-Type": "application/json"}),
}


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("kind", RAW_BODIES)
def test_unparseable_body_is_400(api_url, path, kind):
    body, headers = RAW_BODIES[kind]
    status, response_headers, raw = send(api_url, "POST", path, body, headers)
    assert_rejected(status, response_headers, raw, {400})


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_oversized_body_is_413(api_url, path, settings):
    body = b'{"model": "' + b"x" * (settings.max_body_bytes + 1) + b'"}'
    status, headers, raw = send(api_url, "POST", path, body, {"Content-Type": "application/json"})
    assert_rejected(status, headers, raw, {413})


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("size", ["small", "oversized"])
def test_chunked_body_is_read_and_limited(api_url, path, settings, size):
    """A body without Content-Length (chunked) is parsed like any other, and past the limit is a 413."""
    # A 404 once parsed: no such model (a batch's body already names no such file; a Message Batch's
    # request naming no such model is a 400).
    body = dict(VALID_BODIES[path]) if path == "/v1/batches" else dict(VALID_BODIES[path], model="no-such-model")
    parsed = 400 if path == "/v1/messages/batches" else 404
    if path == "/v1/messages/batches":
        body = {"requests": [{"custom_id": "a", "params": dict(VALID_BODIES["/v1/messages"], model="no-such-model")}]}
    if size == "oversized":
        body["padding"] = "x" * settings.max_body_bytes
    raw = json.dumps(body).encode()
    address = urlsplit(api_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        pieces = (raw[i : i + 65536] for i in range(0, len(raw), 65536))
        headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        connection.request("POST", path, body=pieces, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        status, response_headers, content = response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
    assert_rejected(status, response_headers, content, {413} if size == "oversized" else {parsed})


@pytest.mark.parametrize(("method", "path"), PATH_PARAM_OPERATIONS)
@pytest.mark.parametrize("value", HOSTILE_PATH_VALUES)
def test_hostile_path_parameter(api_url, method, path, value):
    target = path
    for parameter in [p["name"] for p in DOCUMENT["paths"][path][method.lower()]["parameters"] if p["in"] == "path"]:
        target = target.replace("{" + parameter + "}", HOSTILE_PATH_VALUES[value])
    status, headers, raw = send(api_url, method, target)
    error = assert_rejected(status, headers, raw, {400, 404})
    assert "\n" not in headers.get("X-Request-Id", "")
    assert error["type"] in ("invalid_request_error", "not_found_error", None if "/serving-endpoints" in path else "")


@pytest.mark.parametrize(("method", "path", "parameter"), QUERY_PARAMS)
@pytest.mark.parametrize("value", HOSTILE_QUERY_VALUES)
def test_hostile_query_parameter(api_url, job_id, response_id, method, path, parameter, value):
    target = path.replace("{name}", TINY).replace("{job_id}", job_id).replace("{response_id}", response_id)
    status, headers, raw = send(api_url, method, f"{target}?{parameter}={HOSTILE_QUERY_VALUES[value]}")
    if status < 300:  # e.g. `force=` empty: the default
        return
    error = assert_rejected(status, headers, raw, {400})
    if path.startswith("/v1/messages"):  # Anthropic's envelope has no param: its message names it
        assert parameter in error["message"]
    else:
        assert error["param"] == parameter


@pytest.mark.parametrize(("method", "path", "header"), HEADER_PARAMS)
@pytest.mark.parametrize("value", HOSTILE_HEADER_VALUES)
def test_hostile_header_parameter(api_url, method, path, header, value):
    body = json.dumps(VALID_BODIES[path]).encode()
    headers = {"Content-Type": "application/json", header: HOSTILE_HEADER_VALUES[value]}
    status, response_headers, raw = send(api_url, method, path, body, headers)
    assert status < 500, raw[:500]
    assert_not_a_server_error(status, response_headers, raw)


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999-0", "1-99999999999999999999", "abc", "1-2-3", "-1", "x" * 5000, "1\x7f"],
)
def test_hostile_last_event_id_is_400(api_url, job_id, value):
    status, headers, raw = send(api_url, "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": value})
    assert_rejected(status, headers, raw, {400})


def test_long_and_odd_model_names_are_404_not_500(api_url):
    for name in ["x" * 5000, "a\x00b", "../" * 40 + "etc", "é" * 200, "\x01\x7f", "C:\\Windows"]:
        for path in ("/v1/embeddings", "/v1/chat/completions/tokenizer/encode/count", "/v1/chat/completions"):
            body = dict(VALID_BODIES[path], model="__HOSTILE__")
            raw_body = json.dumps(body).replace('"__HOSTILE__"', json.dumps(name))
            status, headers, raw = send(api_url, "POST", path, raw_body.encode(), {"Content-Type": "application/json"})
            error = assert_rejected(status, headers, raw, {404})
            assert error["code"] == "model_not_found" and error["param"] == "model"


def test_document_lists_every_rule_of_the_url_map(settings):
    rules = create_app(settings).url_map.iter_rules()
    listed = {(m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item}
    for rule in rules:
        if is_static_files(rule.endpoint):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in listed


@pytest.mark.parametrize("path", sorted(DOCUMENT["paths"]))
def test_undeclared_method_is_405(api_url, path):
    target = path.replace("{name}", TINY).replace("{job_id}", "0" * 32).replace("{device_id}", "0")
    status, headers, raw = send(api_url, "PATCH", target, b"{}", {"Content-Type": "application/json"})
    assert_rejected(status, headers, raw, {405})


@pytest.mark.parametrize("value", HOSTILE_PATH_VALUES)
def test_hostile_unknown_route_is_404(api_url, value):
    status, headers, raw = send(api_url, "GET", f"/v1/{HOSTILE_PATH_VALUES[value]}/x")
    assert_rejected(status, headers, raw, {404})


def test_served_document_matches(api_url):
    assert requests.get(f"{api_url}/openapi.json", timeout=10).json() == json.loads(json.dumps(DOCUMENT))


EXTREME_SAMPLING = {
    "smallest_temperature": {"temperature": 5e-324},
    "smallest_top_p": {"top_p": 5e-324, "temperature": 2},
    "huge_top_k": {"top_k": 2**62, "temperature": 1},
    "lowest_seed": {"seed": -(2**63), "temperature": 1},
    "highest_seed": {"seed": 2**63 - 1, "temperature": 1},
    "most_copies": {"n": 16, "temperature": 1},
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("case", EXTREME_SAMPLING)
def test_extreme_valid_sampling_values_are_served(api_url, path, case):
    """Values at the edges of what the schema allows reach the sampler and are served."""
    body = {**VALID_BODIES[path], **EXTREME_SAMPLING[case]}
    response = requests.post(f"{api_url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == body.get("n", 1)


@pytest.mark.parametrize("below", ["", "/sub", "/sub/deeper"])
def test_download_into_a_file_is_400(api_url, settings, below):
    target = f"{settings.model_dir / TINY / 'genai_config.json'}{below}"
    body = {**VALID_BODIES["/openai/download"], "customDirPath": target}
    response = requests.post(f"{api_url}/openai/download", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "customDirPath"


@pytest.mark.parametrize(
    "uri",
    [
        "org/a--b",
        "org/a..b",
        "org/repo.git",
        "org/-repo",
        "org/" + "x" * 97,
        "https://huggingface.co/org/r%C3%A9po",
        "hf://org/repo\u0000",
        "https://huggingface.co/" + "x" * 5000,
    ],
)
def test_repository_id_the_hub_would_refuse_is_400(api_url, uri):
    body = {**VALID_BODIES["/openai/download"], "model": {"Uri": uri, "Name": "probe"}}
    response = requests.post(f"{api_url}/openai/download", json=body, timeout=30)
    error = response.json()["error"]
    assert response.status_code == 400, response.text
    assert (error["param"], error["code"]) == ("model.Uri", "invalid_uri")

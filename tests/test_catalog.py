"""GET /foundry/list, user catalog entries, and aliases resolved to the best local variant."""

from __future__ import annotations

import json

import pytest
import requests

from tests.helpers import MINILM, SMOLLM2, TINY, assert_error, user

FOUNDRY_FIELDS = {
    "name",
    "displayName",
    "providerType",
    "uri",
    "version",
    "modelType",
    "promptTemplate",
    "publisher",
    "task",
    "runtime",
    "fileSizeMb",
    "modelSettings",
    "alias",
    "supportsToolCalling",
    "license",
    "licenseDescription",
    "parentModelUri",
}


def entry(name: str, display: str, alias: str, provider: str = "CPUExecutionProvider") -> dict:
    return {
        "name": name,
        "displayName": display,
        "providerType": "Local",
        "uri": "file:///models/" + display,
        "version": "1",
        "modelType": "ONNX",
        "promptTemplate": {"assistant": "", "prompt": ""},
        "publisher": "me",
        "task": "chat-completion",
        "runtime": {"deviceType": "CPU", "executionProvider": provider},
        "fileSizeMb": 6,
        "modelSettings": {"parameters": []},
        "alias": alias,
        "supportsToolCalling": False,
        "license": "MIT",
        "licenseDescription": "MIT",
        "parentModelUri": "",
    }


@pytest.fixture
def user_catalog(settings):
    path = settings.user_catalog_dir / "mine.json"
    yield path
    path.unlink(missing_ok=True)


def catalog(api_url: str) -> list[dict]:
    return requests.get(f"{api_url}/foundry/list", timeout=10).json()


def test_catalog_entries_have_foundrys_fields(api_url):
    entries = catalog(api_url)
    assert all(FOUNDRY_FIELDS <= set(e) for e in entries)
    by_display = {e["displayName"]: e for e in entries}
    assert by_display[SMOLLM2]["alias"] == "smollm2-135m" and by_display[MINILM]["task"] == "embeddings"
    phi = [e for e in entries if e["alias"] == "phi-3-mini-4k"]
    assert {e["runtime"]["executionProvider"] for e in phi} == {"CPUExecutionProvider", "CUDAExecutionProvider"}
    assert all(e["uri"].startswith("https://huggingface.co/microsoft/") for e in phi)


def test_user_entries_are_added_and_replace_shipped_ones(api_url, user_catalog):
    replaced = entry("smollm2-135m-instruct-generic-cpu:1", SMOLLM2, "smollm2-135m")
    replaced["publisher"] = "someone else"
    user_catalog.write_text(json.dumps([entry("tiny:1", TINY, "tiny"), replaced]))
    entries = catalog(api_url)
    assert any(e["name"] == "tiny:1" for e in entries)
    assert [e["publisher"] for e in entries if e["displayName"] == SMOLLM2] == ["someone else"]


def test_a_broken_user_file_is_skipped(api_url, user_catalog):
    user_catalog.write_text("{not json")
    assert any(e["displayName"] == SMOLLM2 for e in catalog(api_url))


def test_alias_and_entry_name_resolve_to_the_local_variant(chat):
    for name in ("smollm2-135m", "smollm2-135m-instruct-generic-cpu:1"):
        response = chat({"model": name, "messages": user("hi"), "max_tokens": 2})
        assert response.status_code == 200
        assert response.json()["model"] == SMOLLM2


def test_alias_picks_a_variant_the_workers_can_run(chat, user_catalog):
    user_catalog.write_text(
        json.dumps(
            [
                entry("tiny-gpu:1", TINY, "tiny-gpu-only", "CUDAExecutionProvider"),
                entry("tiny-cpu:1", TINY, "tiny-any"),
                entry("tiny-cuda:1", SMOLLM2, "tiny-any", "CUDAExecutionProvider"),
            ]
        )
    )
    assert chat({"model": "tiny-gpu-only", "messages": user("hi"), "max_tokens": 2}).status_code == 404
    assert chat({"model": "tiny-any", "messages": user("hi"), "max_tokens": 2}).json()["model"] == TINY


def test_load_accepts_an_alias(api_url):
    assert requests.get(f"{api_url}/openai/load/smollm2-135m", timeout=60).json()["name"] == SMOLLM2


def test_a_malformed_entry_is_left_out_and_pulling_it_is_invalid_catalog_entry(api_url, user_catalog):
    bad_revision = {**entry("bad:1", "bad-revision", "bad-revision"), "revision": 7}
    no_repo = entry("norepo:1", "no-repo", "no-repo")
    del no_repo["uri"]
    listed_name = {**entry("x:1", "x", "x"), "name": ["not", "a", "string"]}
    user_catalog.write_text(json.dumps([bad_revision, no_repo, listed_name, entry("tiny:1", TINY, "tiny")]))
    names = {e["name"] for e in catalog(api_url)}
    assert "tiny:1" in names and not {"bad:1", "norepo:1"} & names  # the file's good entry stays
    for alias, field in (("bad-revision", "revision"), ("no-repo", "uri")):
        response = requests.post(f"{api_url}/openai/download", json={"model": alias}, timeout=30)
        error = assert_error(response, 400, "model", "invalid_catalog_entry")
        assert field in error["message"] and alias in error["message"]


def test_listed_entries_show_ladles_optional_fields_only_when_set(api_url, user_catalog):
    pinned = {**entry("pinned:1", "pinned", "pinned"), "revision": "v1", "ignore": ["*.md"]}
    user_catalog.write_text(json.dumps([pinned]))
    listed = {e["name"]: e for e in catalog(api_url)}
    assert listed["pinned:1"]["revision"] == "v1" and listed["pinned:1"]["ignore"] == ["*.md"]
    assert all("revision" not in e for name, e in listed.items() if name != "pinned:1")

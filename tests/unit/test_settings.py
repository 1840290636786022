"""Settings read from the environment and written back to it for child processes."""

import dataclasses
from pathlib import Path

from contracts.settings import _VARIABLES, Settings

NON_DEFAULT = Settings(
    redis_url="redis://example:6380/2",
    events_ttl_s=45,
    redis_sentinel_master="ladle-primary",
    model_dir=Path("/srv/models"),
    data_dir=Path("/srv/data"),
    catalog_dir=Path("/srv/catalog"),
    host="0.0.0.0",
    port=8080,
    job_ttl_s=60,
    sync_timeout_s=12.5,
    worker_wait_s=0.25,
    visibility_timeout_s=7,
    max_deliveries=5,
    lost_job_sweep_s=30.0,
    max_body_bytes=1000,
    max_batch_rows=3,
    batch_window_ms=1.5,
    prefill_chunk=64,
    prefix_cache_tokens=0,
    batch_invariant=False,
    responses_ttl_s=60,
    embedding_batch=4,
    embedding_window_ms=0.5,
    embedding_runners=3,
    max_embedding_inputs=9,
    worker_concurrency=2,
    model_ttl_s=30.0,
    intra_op_threads=1,
    cpu_workers=2,
    heartbeat_s=0.3,
    download_roots=(Path("/a"), Path("/b")),
    secret_key="s3cret",
    model_memory_mb=512,
    drain_s=2.5,
    metrics=False,
    log_format="json",
    api_keys=("key-one", "key-two"),
    api_keys_file=Path("/srv/keys.txt"),
    rate_limit="10 per 2 seconds",
    default_model="phi-4-mini",
    files_dir=Path("/srv/files"),
    max_file_bytes=2048,
    batch_share=0.5,
    batch_lease_s=3.0,
    batch_completion_window_s=60.0,
)


def test_every_field_is_set_to_a_non_default_value_in_this_test():
    defaults = Settings()
    assert all(getattr(NON_DEFAULT, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(Settings))


def test_every_field_has_a_variable():
    assert set(_VARIABLES) == {f.name for f in dataclasses.fields(Settings)}


def test_to_env_then_from_env_gives_the_same_settings():
    assert Settings.from_env(NON_DEFAULT.to_env()) == NON_DEFAULT


def test_defaults_survive_the_round_trip_too():
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_unset_optional_values_become_empty_variables_that_override_the_parents():
    env = {"LADLE_CATALOG_DIR": "/parent/catalog", **Settings().to_env()}
    assert Settings.from_env(env).catalog_dir is None


def test_redis_url_is_read_when_ladle_redis_url_is_not_set():
    assert Settings.from_env({"REDIS_URL": "redis://other:1/0"}).redis_url == "redis://other:1/0"


def test_ladle_redis_url_wins_over_redis_url():
    env = {"REDIS_URL": "redis://other:1/0", "LADLE_REDIS_URL": "redis://mine:2/0"}
    assert Settings.from_env(env).redis_url == "redis://mine:2/0"


def test_download_roots_are_separated_by_the_path_separator():
    assert Settings.from_env({"LADLE_DOWNLOAD_ROOTS": "/a:/b:"}).download_roots == (Path("/a"), Path("/b"))

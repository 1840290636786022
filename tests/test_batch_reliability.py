"""A batch outlives a worker SIGKILLed mid-batch and an API restart: every line once in the output."""

from __future__ import annotations

import io
import json
import time

import redis
import requests
from openai import OpenAI

from contracts import keys
from tests.helpers import TINY, user
from tests.stack import ApiServer, start_fleet, stop_fleet


def test_a_batch_survives_its_drivers_sigkill_and_an_api_restart(tmp_path, model_dir):
    fleet = start_fleet(
        tmp_path, model_dir, workers=2, worker_concurrency=4, batch_lease_s=1.0, data_dir=tmp_path / "data"
    )
    try:
        sdk = OpenAI(base_url=f"{fleet.api_url}/v1", api_key="x", max_retries=0)
        lines = [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": TINY, "messages": user(f"line {i}"), "max_tokens": 150},
            }
            for i in range(14)
        ]
        text = "".join(json.dumps(line) + "\n" for line in lines).encode()
        source = sdk.files.create(file=("in.jsonl", io.BytesIO(text)), purpose="batch")
        batch = sdk.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
        client = redis.Redis.from_url(fleet.settings.redis_url)
        deadline = time.monotonic() + 90

        def driver_running_lines() -> tuple[str, list[str]]:
            driver = (client.get(keys.batch_lease_key(batch.id)) or b"").decode()
            params = {"batch": batch.id, "status": "running", "limit": 100}
            running = requests.get(f"{fleet.api_url}/v1/jobs", params=params, timeout=10).json()["data"]
            return driver, [job["id"] for job in running if job["worker"] == driver]

        while sdk.batches.retrieve(batch.id).request_counts.completed < 2 or not driver_running_lines()[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        driver, killed_lines = driver_running_lines()
        fleet.worker_named(driver).kill()  # the batch's driver, running lines too
        fleet.api.stop()  # and the API goes away meanwhile
        fleet.api = ApiServer(fleet.settings)
        sdk = OpenAI(base_url=f"{fleet.api.url}/v1", api_key="x", max_retries=0)
        while (done := sdk.batches.retrieve(batch.id)).status not in ("completed", "failed") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert done.status == "completed", done
        output = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
        assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(14))
        assert done.request_counts.completed == 14 and done.request_counts.failed == 0
        assert done.usage.output_tokens == 14 * 150
        assert done.error_file_id is None
        assert int(client.hget(keys.batch_key(batch.id), "epoch")) >= 2  # another driver took over
        assert all(fleet.deliveries(job_id) >= 2 for job_id in killed_lines)  # and reran the lost lines
    finally:
        stop_fleet(fleet)

"""The invariants a scenario must keep, checked from what the clients saw and what Redis holds.

Each check returns (name, passed, evidence); evidence names the requests or jobs that broke it.
"""

from __future__ import annotations

import json
import logging
import math
import time

import redis

from bench.chaos.workload import BATCH_LINES, TERMINAL, Outcome, Workload

log = logging.getLogger(__name__)

Check = tuple[str, bool, list]
# Streams may end with their final event or an error event (worker_restarted, job_lost, ...).
VISIBLE_ENDINGS = frozenset({"done", "error_event"})
# A rejected request must say why, in the error envelope, with one of these statuses.
CLEAR_REJECTIONS = frozenset({429, 503, 504})
EMBEDDING_COSINE = 0.9999
# Jobs still open when the workload ends get this long (five visibility timeouts) to end.
SETTLE_S = 30.0


def batch_job_ids(client: redis.Redis, batch_id: str) -> list[str]:
    """The job IDs of a batch's lines (`<batch id>-<line>`), from their records."""
    found = set()
    for key in client.scan_iter(match=f"ladle:job:{batch_id}-*", count=1000):
        name = key.decode()
        if name.count(":") == 2:
            found.add(name.split(":", 2)[2])
    return sorted(found)


def check_all(workload: Workload, baseline: dict | None, client: redis.Redis) -> tuple[list[Check], dict, dict]:
    """Every invariant for this scenario's workload; with the answers it gave (the next baseline)."""
    accepted = [o for o in workload.outcomes if o.accepted and o.job_id]
    job_ids = [o.job_id for o in accepted]
    if workload.batch.get("id"):
        job_ids += batch_job_ids(client, workload.batch["id"])
    records, settle_s = _settled_records(client, job_ids)
    answers = answers_of(workload)
    checks = [
        _jobs_end(records, job_ids),
        _clients_told_the_outcome(accepted, records),
        _failures_are_clear(records),
        _batch_exactly_once(workload),
        _streams_end_visibly(workload.outcomes),
        _rejections_are_clear(workload.outcomes),
        _answers_match(answers, baseline),
        _no_stale_writes(client, records),
    ]
    return checks, answers, {**job_summary(client, records), "settle_s": settle_s}


def job_summary(client: redis.Redis, records: dict[str, dict]) -> dict:
    """How many jobs each worker finished; which were delivered more than once, and to whom."""
    by_worker: dict[str, int] = {}
    deliveries = [int(r.get("deliveries") or 0) for r in records.values()]
    for record in records.values():
        by_worker[record.get("worker") or "none"] = by_worker.get(record.get("worker") or "none", 0) + 1
    again = [(job_id, r) for job_id, r in records.items() if int(r.get("deliveries") or 0) > 1]
    # Jobs whose queue message was lost, failed by the lost-job sweep (a clear error, but no answer).
    lost = [job_id for job_id, r in records.items() if '"job_lost"' in (r.get("error") or "")]
    return {
        "total": len(records),
        "lost_messages": lost,
        "by_worker": by_worker,
        "delivered_more_than_once": len(again),
        "most_deliveries": max(deliveries, default=0),
        "redelivered": [
            {
                "job_id": job_id,
                "deliveries": int(record["deliveries"]),
                "status": record.get("status"),
                "started_on": [e["worker"] for _, e in job_events(client, job_id) if e.get("type") == "started"],
            }
            for job_id, record in again[:20]
        ],
    }


def _settled_records(client: redis.Redis, job_ids: list[str]) -> tuple[dict[str, dict], float]:
    """The jobs' records once all ended, or as they are after SETTLE_S; and how long that took."""
    began = time.monotonic()
    while True:
        records = _records(client, job_ids)
        if all(records[j].get("status") in TERMINAL for j in job_ids) or time.monotonic() - began > SETTLE_S:
            return records, round(time.monotonic() - began, 2)
        time.sleep(0.5)


def _records(client: redis.Redis, job_ids: list[str]) -> dict[str, dict]:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(f"ladle:job:{job_id}")
    return {
        job_id: {k.decode(): v.decode() for k, v in fields.items()}
        for job_id, fields in zip(job_ids, pipe.execute(), strict=True)
    }


def _jobs_end(records: dict[str, dict], job_ids: list[str]) -> Check:
    open_jobs = [(j, records.get(j, {}).get("status", "missing")) for j in job_ids]
    open_jobs = [(j, s) for j, s in open_jobs if s not in TERMINAL]
    return "every accepted job ended", not open_jobs, open_jobs[:20]


def _clients_told_the_outcome(accepted: list[Outcome], records: dict[str, dict]) -> Check:
    """What a client was told (succeeded, failed, ...) is what the job's record says in the end."""
    differ = []
    for outcome in accepted:
        final = records.get(outcome.job_id, {}).get("status", "missing")
        if outcome.status in TERMINAL and final != outcome.status:
            differ.append((outcome.kind, outcome.key, outcome.job_id, f"told {outcome.status}, record {final}"))
    return "clients were told the jobs' final outcome", not differ, differ[:20]


def _failures_are_clear(records: dict[str, dict]) -> Check:
    unclear = []
    for job_id, record in records.items():
        if record.get("status") == "failed":
            error = json.loads(record.get("error") or "{}")
            if not (error.get("code") and error.get("message")):
                unclear.append((job_id, error))
    return "failed jobs carry a clear error", not unclear, unclear[:20]


def _batch_exactly_once(workload: Workload) -> Check:
    batch = dict(workload.batch)  # its thread may still be running (then it timed out)
    if batch.get("status") != "completed":
        return "batch lines exactly once", False, [f"batch ended {batch.get('status')}: {batch.get('error', '')}"]
    seen: dict[str, int] = {}
    for lines in batch.get("output", {}).values():
        for line in lines:
            seen[line["custom_id"]] = seen.get(line["custom_id"], 0) + 1
    expected = {f"line-{i}" for i in range(BATCH_LINES)}
    missing = sorted(expected - set(seen))
    twice = sorted(c for c, n in seen.items() if n > 1)
    extra = sorted(set(seen) - expected)
    evidence = (
        [{"missing": missing[:20], "twice": twice[:20], "unknown": extra[:20]}] if missing or twice or extra else []
    )
    return "batch lines exactly once", not evidence, evidence


def _streams_end_visibly(outcomes: list[Outcome]) -> Check:
    silent = [(o.key, o.job_id, o.ending) for o in outcomes if o.kind == "stream" and o.accepted]
    silent = [s for s in silent if s[2] not in VISIBLE_ENDINGS]
    return "streams end with their final event or an error event", not silent, silent


def _rejections_are_clear(outcomes: list[Outcome]) -> Check:
    unclear = []
    for outcome in outcomes:
        if outcome.status != "rejected" or not outcome.error:
            continue  # not rejected, or the host could not be reached at all (notes say how)
        if outcome.error.get("status") not in CLEAR_REJECTIONS or not outcome.error.get("code"):
            unclear.append((outcome.kind, outcome.key, outcome.error))
    return "rejections are retryable errors in the envelope", not unclear, unclear


def answers_of(workload: Workload) -> dict:
    """Each succeeded request's answer by key (batch lines by custom_id)."""
    answers = {o.key: o.answer for o in workload.outcomes if o.status == "succeeded" and o.kind != "download"}
    for line in workload.batch.get("output", {}).get("output_file_id", []):
        body = (line.get("response") or {}).get("body") or {}
        if body.get("choices"):
            answers[line["custom_id"]] = body["choices"][0]["message"]["content"]
    return answers


def _answers_match(answers: dict, baseline: dict | None) -> Check:
    if baseline is None:
        return "answers equal the fault-free run's", True, ["this is the fault-free run"]
    different = []
    for key, answer in answers.items():
        if key not in baseline:
            continue
        if key.startswith("embeddings-"):
            if not all(_cosine(a, b) >= EMBEDDING_COSINE for a, b in zip(answer, baseline[key], strict=True)):
                different.append(key)
        elif answer != baseline[key]:
            different.append(key)
    return "answers equal the fault-free run's", not different, different[:20]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


def job_events(client: redis.Redis, job_id: str) -> list[tuple[int, dict]]:
    """A job's stored events as (delivery, event), from its Stream (several events per entry)."""
    events = []
    for entry_id, fields in client.xrange(f"ladle:job:{job_id}:events"):
        delivery = int(entry_id.decode().split("-")[0])
        for line in fields.get(b"events", b"").decode().split("\n"):
            if line:
                events.append((delivery, json.loads(line)))
    return events


def _no_stale_writes(client: redis.Redis, records: dict[str, dict]) -> Check:
    """The end of each job comes from its latest delivery, and its record names that delivery's worker."""
    stale = []
    for job_id, record in records.items():
        events = job_events(client, job_id)
        if not events:
            continue
        ends = [(d, e) for d, e in events if e.get("type") in ("done", "error")]
        starts = [(d, e) for d, e in events if e.get("type") == "started"]
        if len(ends) != 1 or events[-1][1] is not ends[0][1]:
            stale.append((job_id, f"{len(ends)} terminal events, last event {events[-1][1].get('type')}"))
            continue
        if starts:
            latest, started = max(starts, key=lambda s: s[0])
            if ends[0][0] < latest:
                stale.append((job_id, f"ended by delivery {ends[0][0]} after delivery {latest} started"))
            elif record.get("worker") and record["worker"] != started["worker"]:
                stale.append((job_id, f"record names {record['worker']}, latest delivery ran on {started['worker']}"))
    return "no job record written by a stale delivery", not stale, stale[:20]

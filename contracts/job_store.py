"""Ladle's own job records and event streams in Redis (Celery's result backend is not used).

Every event of a job has an ID "delivery-sequence" (the job's delivery count, then 1, 2, ...
within that delivery), which is also its SSE `id:`; IDs only grow, a rerun's events follow the
dead delivery's. Workers announce events on one pub/sub channel for all jobs as they happen and
append them to the job's Stream in chunks (one entry holds several events; its ID is its last
event's ID). Finishing is guarded by HSETNX on `finished_at`: exactly one writer (worker or
API) records the outcome and emits the terminal event, and from then on the Stream is kept only
`events_ttl_s`; the record, with the result, stays `ttl_s`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis
from redis.client import Pipeline
from redis.commands.core import Script

from contracts import keys
from contracts.events import TERMINAL_EVENT_TYPES, DoneEvent, ErrorEvent
from contracts.jobs import JobKind, JobStatus

# Record queued jobs and send their task: one command instead of a MULTI of five or more.
# KEYS: the recent-jobs index, the task's queue (the index again when none), then each job's
# record. ARGV: kind, model, now, task ID ('' = each job's own ID), record TTL, task message
# ('' = none to send), how many of the newest jobs the index keeps (0 = do not trim it now), the
# ID of the API key that submitted the jobs ('' = none), then each job's ID.
_CREATE = """
local index = {}
for i = 3, #KEYS do
  local job_id = ARGV[i + 6]
  local task = ARGV[4]
  if task == '' then task = job_id end
  local record = {'kind', ARGV[1], 'model', ARGV[2], 'status', 'queued', 'created_at', ARGV[3], 'task', task}
  if ARGV[8] ~= '' then
    record[#record + 1] = 'owner'
    record[#record + 1] = ARGV[8]
  end
  redis.call('HSET', KEYS[i], unpack(record))
  redis.call('EXPIRE', KEYS[i], ARGV[5])
  index[#index + 1] = ARGV[3]
  index[#index + 1] = job_id
end
redis.call('ZADD', KEYS[1], unpack(index))
if ARGV[7] ~= '0' then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[7]) - 1) end
if ARGV[6] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[6]) end
"""

# What finishing a job answers when its writer's delivery is not the job's latest (_FINISH spells it too).
STALE = "stale"

# Finish jobs: for each, unless another writer finished it first (or it left the only-if
# status), record the outcome and store its terminal event; then announce all of those in one
# message. KEYS: each job's record and events Stream, in pairs. ARGV: events TTL, now, channel, then
# eight per job: event JSON, status, outcome field, its document, event ID ('' = after any delivery:
# the API finishing a job no worker runs), job ID, only-if status ('' = any), the events right
# before it not stored yet ('' or JSON lines, each ending in a newline: they go into the terminal
# event's Stream entry). Returns each job's event ID ('' where nothing was written, STALE where the
# event's delivery is older than the job's latest: the job was delivered again, to another worker).
_FINISH = """
local announced, ids = {}, {}
for j = 1, #KEYS / 2 do
  local record, events, a = KEYS[2 * j - 1], KEYS[2 * j], 3 + 8 * (j - 1)
  local id = ''
  local delivery = tonumber(string.match(ARGV[a + 5], '^(%d+)-') or '0')
  if delivery > 0 and delivery < tonumber(redis.call('HGET', record, 'deliveries') or '0') then
    id = 'stale'
  elseif (ARGV[a + 7] == '' or redis.call('HGET', record, 'status') == ARGV[a + 7])
      and redis.call('HSETNX', record, 'finished_at', ARGV[2]) == 1 then
    id = ARGV[a + 5]
    if id == '' then id = (tonumber(redis.call('HGET', record, 'deliveries') or '0') + 1) .. '-0' end
    redis.call('HSET', record, 'status', ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], 'last_event', id)
    redis.pcall('XADD', events, id, 'events', ARGV[a + 8] .. ARGV[a + 1])
    redis.call('EXPIRE', events, ARGV[1])
    announced[#announced + 1] = ARGV[a + 6] .. ' ' .. id .. ' ' .. ARGV[a + 1]
  end
  ids[j] = id
end
if #announced > 0 then redis.call('PUBLISH', ARGV[3], table.concat(announced, '\\n')) end
return ids
"""

# Start a delivered job: count the delivery in its record; {0} if the job already finished
# (cancelled while queued) or its record expired; past ARGV[3] deliveries that count (those not
# handed back by a stopping worker) {minus the count} (the job keeps killing workers); else mark it
# running and return {the count, kind, model, created_at}: the count numbers the delivery's events,
# the rest spare the worker reading the record back for its metrics when the job ends.
_START = """
local record = redis.call('HMGET', KEYS[1], 'kind', 'finished_at', 'deliveries', 'handed_back', 'model', 'created_at')
if not record[1] or record[2] then return {0} end
local deliveries = tonumber(record[3] or '0') + 1
if deliveries - tonumber(record[4] or '0') > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'deliveries', deliveries)
  return {-deliveries, record[1], record[5], record[6]}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2], 'deliveries', deliveries)
return {deliveries, record[1], record[5], record[6]}
"""

# Hand a started job back to the queue (its worker is stopping): the delivery is not counted
# against it (no worker died; it still numbers its events), and it shows as queued again; unless
# it finished meanwhile.
_HAND_BACK = """
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'handed_back', 1)
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'started_at', 'worker')
return 1
"""


# Claim a shared job (e.g. one download per model folder): the job already holding KEYS[1] if it
# is still unfinished, else ARGV[1] (which then holds the key).
_CLAIM_SHARED = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  local record = ARGV[3] .. current
  if redis.call('EXISTS', record) == 1 and redis.call('HEXISTS', record, 'finished_at') == 0 then
    return current
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""


# The recent-jobs index is trimmed to RECENT_JOBS_LIMIT once every this many creates of a store,
# not on every one: it briefly holds a few more (listings read only the newest).
RECENT_TRIM_EVERY = 16


@dataclass(frozen=True)
class Ending:
    """A job's end for `JobStore.finish_many`: its terminal event and status, the event's ID ('' =
    after any delivery) and the events before it not stored yet."""

    job_id: str
    event: DoneEvent | ErrorEvent
    status: JobStatus
    event_id: str = ""
    unstored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobStart:
    """A delivered job as `JobStore.start` found it: its delivery count (0: it had finished; below
    0: it was delivered too often) and what its record says of it (empty when there is none)."""

    deliveries: int
    kind: str = ""
    model: str = ""
    created_at: float | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: what `GET /v1/jobs/{id}` shows."""

    job_id: str
    kind: str
    model: str
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    result: dict | None
    error: dict | None
    # Long jobs (downloads): the latest progress report.
    progress: dict | None = None
    # The non-secret ID of the API key that submitted the job (None: submitted without keys, or
    # shared by every key, like model downloads); only that key may read or cancel it.
    owner: str | None = None

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str]) -> JobRecord:
        def number(name: str) -> float | None:
            return float(fields[name]) if name in fields else None

        def document(name: str) -> dict | None:
            return json.loads(fields[name]) if name in fields else None

        return cls(
            job_id=job_id,
            kind=fields.get("kind", ""),
            model=fields.get("model", ""),
            status=JobStatus(fields.get("status", "queued")),
            created_at=float(fields.get("created_at", 0)),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            worker=fields.get("worker"),
            result=document("result"),
            error=document("error"),
            progress=document("progress"),
            owner=fields.get("owner"),
        )


EventId = tuple[int, int]


def _is_stream_number(part: str) -> bool:
    """ASCII digits that fit a Stream ID's 64-bit part."""
    return part.isascii() and part.isdigit() and len(part) <= 19


def parse_event_id(event_id: str) -> EventId:
    """Order of an event ID ("delivery-sequence"); ValueError if it is not one."""
    delivery, separator, sequence = event_id.partition("-")
    if not separator or not _is_stream_number(delivery) or not _is_stream_number(sequence):
        raise ValueError(f"not an event ID: {event_id[:100]!r}")
    return int(delivery), int(sequence)


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def follows(last: EventId | None, event_id: EventId) -> bool:
    """Whether `event_id` comes right after `last`: the next in its delivery, or the first of a later one."""
    if last is None:
        return event_id[1] <= 1
    return event_id == (last[0], last[1] + 1) or (event_id[0] > last[0] and event_id[1] <= 1)


def live_lines(events: list[tuple[str, str, str]]) -> str:
    """One pub/sub message announcing (job ID, event ID, event JSON) triples; JSON holds no newline."""
    return "\n".join(f"{job_id} {event_id} {data}" for job_id, event_id, data in events)


def parse_live_lines(message: str) -> list[tuple[str, str, str]]:
    """The (job ID, event ID, event JSON) triples of a message made by `live_lines`."""
    triples = []
    for line in message.split("\n"):
        job_id, _, rest = line.partition(" ")
        event_id, _, data = rest.partition(" ")
        triples.append((job_id, event_id, data))
    return triples


@dataclass(frozen=True)
class Replay:
    """What a job's Stream holds after a point: events in order, and whether the job ended before it."""

    events: list[tuple[str, str]]
    ended: bool = False


class JobStore:
    """Reads and writes job records and events; shared by the API and the workers."""

    def __init__(self, client: redis.Redis, ttl_s: int, events_ttl_s: int = 300) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.events_ttl_s = events_ttl_s
        self._create = client.register_script(_CREATE)
        self._creates = 0  # jobs created here: the recent-jobs index is trimmed every RECENT_TRIM_EVERY
        self._finish = client.register_script(_FINISH)
        self._start = client.register_script(_START)
        self._claim_shared = client.register_script(_CLAIM_SHARED)
        self._hand_back = client.register_script(_HAND_BACK)

    def create(
        self,
        job_ids: list[str],
        kind: JobKind,
        model: str,
        task_id: str | None = None,
        message: tuple[str, str] | None = None,
        owner: str | None = None,
    ) -> None:
        """Record queued jobs, sent in the Celery task `task_id` (default: the job's ID), in one
        command for all: with `message` (queue, payload), the script also pushes the task message
        on its queue, so no worker sees a task before its jobs' records exist.
        """
        self._creates += 1
        trim = keys.RECENT_JOBS_LIMIT if self._creates % RECENT_TRIM_EVERY == 0 else 0
        queue, payload = message or ("", "")
        job_keys = [keys.job_key(job_id) for job_id in job_ids]
        args = [kind.value, model, time.time(), task_id or "", self.ttl_s, payload, trim, owner or "", *job_ids]
        _run_script(self._create, [keys.RECENT_JOBS, queue or keys.RECENT_JOBS, *job_keys], args)

    def claim_shared(self, share_key: str, job_id: str) -> str:
        """The unfinished job holding `share_key`, or `job_id` after it took the key."""
        owner = self._claim_shared(keys=[share_key], args=[job_id, self.ttl_s, keys.job_key("")])
        return _text(owner)

    def recent(self, limit: int) -> list[JobRecord]:
        """The newest `limit` jobs still on record, newest first (two round trips)."""
        ids = [_text(i) for i in self.client.zrevrange(keys.RECENT_JOBS, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job_key(job_id), *LISTED_FIELDS)
        records = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            fields = {name: _text(v) for name, v in zip(LISTED_FIELDS, values, strict=True) if v is not None}
            if fields:
                records.append(JobRecord.from_hash(job_id, fields))
        return records

    def delete(self, job_id: str) -> None:
        self.client.delete(keys.job_key(job_id))

    def get(self, job_id: str) -> JobRecord | None:
        fields = self.client.hgetall(keys.job_key(job_id))
        return JobRecord.from_hash(job_id, _decode(fields)) if fields else None

    def start(self, job_ids: list[str], worker: str, max_deliveries: int) -> list[JobStart]:
        """Count a delivery of each job and mark it running (one round trip for all).

        For each job a JobStart: its delivery count once it is running; 0 if it had already finished
        (e.g. cancelled while queued); minus the count when it was delivered more than
        `max_deliveries` times; with the kind, model and times its record holds.
        """
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            _run_script(self._start, [keys.job_key(job_id)], [now, worker, max_deliveries], pipe)
        starts = []
        for deliveries, *record in pipe.execute():
            kind, model, created = [*record, None, None, None][:3]
            started = now if deliveries > 0 else None
            starts.append(JobStart(int(deliveries), _text(kind or ""), _text(model or ""), _float(created), started))
        return starts

    def hand_back(self, job_ids: list[str]) -> None:
        """Undo `start` for jobs going back to the queue unfinished (their worker is stopping)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            _run_script(self._hand_back, [keys.job_key(job_id)], [], pipe)
        pipe.execute()

    def append_events(self, pipe, job_id: str, last_id: str, events: list[str], first: bool) -> None:
        """Queue on `pipe` one Stream entry holding `events` (consecutive, the last one `last_id`).
        The delivery's first entry also sets the Stream's expiry (a job that never finishes still goes).
        """
        pipe.xadd(keys.job_events_key(job_id), {"events": "\n".join(events)}, id=last_id)
        if first:
            pipe.expire(keys.job_events_key(job_id), self.ttl_s)

    def announce(self, pipe, events: list[tuple[str, str, str]]) -> None:
        """Queue on `pipe` one message announcing (job ID, event ID, event JSON) triples of any jobs."""
        pipe.publish(keys.JOB_EVENTS_CHANNEL, live_lines(events))

    def finish(
        self,
        job_id: str,
        event: DoneEvent | ErrorEvent,
        status: JobStatus,
        client=None,
        only_if: JobStatus | None = None,
        event_id: str = "",
        unstored: list[str] | None = None,
    ):
        """Record the outcome and emit the terminal event unless another writer finished first
        (or, with `only_if`, unless the job has left that status: a worker started it meanwhile).

        `event_id` is the worker's next event ID; without it the event follows any delivery.
        `unstored`: the events (JSON, already announced) right before it that are not in the
        Stream yet; they are stored in one entry with it (as `append_events` would, one command
        fewer). Returns the event ID, or None when nothing was written (via a pipeline: the
        pipeline's result holds [the ID or '']).
        """
        written = self.finish_many([Ending(job_id, event, status, event_id, unstored or [])], client, only_if)
        return written[0] if isinstance(written, list) else written

    def finish_many(self, endings: list[Ending], client=None, only_if: JobStatus | None = None):
        """`finish` for several jobs in one command, their terminal events announced in one message.

        Returns each job's event ID, or None where nothing was written (via a pipeline: the
        pipeline's result holds the IDs, '' for None, STALE where the job was delivered again since).
        """
        args: list = [self.events_ttl_s, time.time(), keys.JOB_EVENTS_CHANNEL]
        job_keys = []
        for ending in endings:
            event = ending.event
            outcome, document = ("result", event.result) if isinstance(event, DoneEvent) else ("error", event.error)
            args += [
                event.model_dump_json(),
                ending.status.value,
                outcome,
                document.model_dump_json(),
                ending.event_id,
                ending.job_id,
                only_if.value if only_if is not None else "",
                "".join(f"{data}\n" for data in ending.unstored),
            ]
            job_keys += [keys.job_key(ending.job_id), keys.job_events_key(ending.job_id)]
        written = _run_script(self._finish, job_keys, args, client)
        return [_written_id(i) for i in written] if isinstance(written, list) else written

    def replay(self, job_id: str, after: EventId | None) -> Replay:
        """Stored events (event ID, JSON) after `after` (exclusive), oldest first.

        Once the job finished and its Stream expired, the terminal event is rebuilt from the record
        (with its original ID); `ended` when the job's terminal event is not after `after`.
        """
        pipe = self.client.pipeline(transaction=False)
        # The record first: a job seen finished has its terminal event stored, unless it expired.
        pipe.hmget(keys.job_key(job_id), ["finished_at", "last_event", "result", "error"])
        pipe.xrange(keys.job_events_key(job_id), f"({format_event_id(after)}" if after else "-", "+")
        (finished_at, last_event, result, error), entries = pipe.execute()
        events = []
        for entry_id, fields in entries:
            last = parse_event_id(_text(entry_id))
            chunk = _text(fields[b"events"]).split("\n")
            for offset, data in enumerate(chunk):
                event_id = (last[0], last[1] - len(chunk) + 1 + offset)
                if after is None or event_id > after:
                    events.append((format_event_id(event_id), data))
        if finished_at is None or (events and json.loads(events[-1][1])["type"] in TERMINAL_EVENT_TYPES):
            return Replay(events)
        terminal_id = _text(last_event) if last_event else "0-0"
        if after is not None and last_event and parse_event_id(terminal_id) <= after:
            return Replay([], ended=True)
        # The same JSON as the DoneEvent / ErrorEvent the finishing writer emitted.
        if result:
            terminal = f'{{"type":"done","result":{_text(result)}}}'
        else:
            terminal = f'{{"type":"error","error":{_text(error)}}}'
        return Replay([*events, (terminal_id, terminal)])

    def request_cancel(self, job_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.job_cancel_key(job_id), 1, ex=self.ttl_s)
        pipe.publish(keys.CANCEL_CHANNEL, job_id)
        pipe.execute()

    def is_cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.exists(keys.job_cancel_key(job_id)))


def _run_script(script: Script, script_keys: list[str], args: list, client=None):
    """Run a registered script directly (EVALSHA) or queue it on a pipeline as EVAL: a pipeline
    holding scripts would first ask Redis whether they exist (another round trip, every time)."""
    if isinstance(client, Pipeline):
        return client.eval(script.script, len(script_keys), *script_keys, *args)
    return script(keys=script_keys, args=args, client=client)


# What a listing of jobs shows (results stay out: they can be large).
LISTED_FIELDS = (
    "kind",
    "model",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "worker",
    "progress",
    "error",
    "batch",
    "owner",
)


def _float(value: bytes | str | None) -> float | None:
    return float(value) if value else None


def _written_id(value: bytes | str) -> str | None:
    """A finished job's event ID as the finish script returns it; None where nothing was written."""
    text = _text(value)
    return text if text and text != STALE else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}

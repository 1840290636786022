"""Running a response as a chat job: its context (`previous_response_id`, `truncation`), the job, its
answer whole or streamed, and how a stored response stands when the request that ran it is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from flask import Response

from api.access.owner import current_owner
from api.chat.protocol import ChatCompletionRequest
from api.errors import ApiError, bad_request
from api.queue.client import new_job_id
from api.queue.events import JobEventFeed, JobTimeout
from api.queue.responses import EventStream, stream_job, wait_for_result
from api.responses.convert import (
    chat_body,
    chat_messages,
    chat_tools,
    echoed_fields,
    failed_outcome,
    input_items,
    outcome_of,
)
from api.responses.protocol import ConversationInput, FunctionTool, ResponseRequest
from api.responses.render import pending_outcome, response_frames, response_object
from api.responses.store import StoredResponse, response_id_of, responses
from api.services import new_request_job_id, services
from api.sse import sse_response
from contracts import fleet_metrics
from contracts.errors import ErrorInfo, job_cancelled, server_error
from contracts.events import ErrorEvent, GenerationResult, StartedEvent
from contracts.jobs import JobKind, JobStatus, TokenCountJob
from contracts.queues import COUNT_TOKENS_TASK, DEFAULT_DEVICE, GENERATE_TASK, LIGHT_LANE

# Chat's parameter names in errors a job or the chat checks report, as the Responses API names them.
PARAM_NAMES = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
}
# How a response that has not ended shows its job's status.
PENDING_STATUS = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "in_progress"}
# How long cancelling a running background response waits for its job to stop (it stops at its next step).
CANCEL_WAIT_S = 10.0


def renamed(error: ApiError) -> ApiError:
    """`error` naming the Responses API's parameter where chat's differs."""
    param = PARAM_NAMES.get(error.param or "", error.param)
    return ApiError(error.status, error.message, type=error.type, param=param, code=error.code, headers=error.headers)


def visible_response(response_id: str, param: str = "response_id") -> StoredResponse:
    """The stored response, if the request's API key may see it; else a 404 naming `param`."""
    stored = responses().get(response_id)
    if stored is None or not stored.visible_to(current_owner()):
        raise ApiError(
            404,
            f"No response found with id '{response_id[:200]}' (it may have expired, been deleted, "
            "or been created with store: false).",
            param=param,
            code="response_not_found",
        )
    return stored


def settled(stored: StoredResponse) -> tuple[StoredResponse, dict]:
    """The response and its outcome; one the request that ran it did not record (its API process
    stopped, or it timed out) is read from its job, and recorded once the job has ended."""
    if stored.outcome is not None:
        return stored, stored.outcome
    record = services().store.get(stored.job_id)
    if record is None:
        outcome = failed_outcome(server_error("job_lost", "The job running this response is gone (it expired)."))
    elif record.status == JobStatus.SUCCEEDED and record.result is not None:
        outcome = outcome_of(stored.job_id, GenerationResult(**record.result))
    elif record.status.is_terminal:
        details = {k: v for k, v in (record.error or {}).items() if k in ErrorInfo.model_fields}
        outcome = failed_outcome(
            ErrorInfo(**{"status": 500, "message": "The job failed.", "type": "server_error", **details})
        )
    else:
        return stored, pending_outcome(PENDING_STATUS.get(record.status, "in_progress"))
    responses().finish(stored.id, outcome)
    return replace(stored, outcome=outcome), outcome


def previous_context(previous_id: str) -> list[dict]:
    """The items a response continuing `previous_id` starts from: that response's context (without its
    instructions), then its output."""
    previous = visible_response(previous_id, "previous_response_id")
    if previous.context_dropped:
        raise bad_request(
            f"Response '{previous_id}' cannot be continued: its conversation was too large to store. "
            "Send the conversation in `input` instead.",
            "previous_response_id",
            "previous_response_too_large",
        )
    previous, outcome = settled(previous)
    if outcome["status"] in PENDING_STATUS.values():
        raise bad_request(
            f"Response '{previous_id}' is still {outcome['status']}; continue it once it has ended.",
            "previous_response_id",
            "previous_response_not_ended",
        )
    return previous.context + outcome["output"]


def count_tokens(
    model: str,
    messages: list[dict],
    functions: list[FunctionTool],
    reasoning_effort: str | None = None,
    job_id: str | None = None,
) -> int:
    """The prompt length of `messages` and the function tools in `model`'s tokens (as a chat job
    shows them, with the reasoning effort it gives the template), counted by a light-lane worker."""
    ctx = services()
    job_id = job_id or new_job_id()
    tools = chat_tools(functions) or None
    payload = TokenCountJob(
        job_id=job_id, model=model, messages=messages, tools=tools, reasoning_effort=reasoning_effort
    ).model_dump()
    feed = ctx.jobs.submit(
        COUNT_TOKENS_TASK, JobKind.TOKEN_COUNT, model, payload, DEFAULT_DEVICE, True, LIGHT_LANE, owner=current_owner()
    )
    try:
        return wait_for_result(feed, ctx.settings.sync_timeout_s).token_count
    except ApiError as error:
        raise renamed(error) from None


def fit_items(request: ConversationInput, model: str, items: list[dict], room: int) -> list[dict]:
    """The newest items that, with the instructions, fit `room` tokens (`truncation: auto`): the
    fewest oldest items are dropped (found by bisection, a token count each step)."""

    def fits(start: int) -> bool:
        messages = chat_messages(request.instructions, items[start:])
        return bool(messages) and count_tokens(model, messages, request.offered_tools, request.reasoning_effort) <= room

    if fits(0):
        return items
    low, high = 1, len(items) - 1
    if high < low or not fits(high):
        raise bad_request(
            f"The input does not fit the model's context ({room} tokens left for it) even with only its last item.",
            "input",
            "context_length_exceeded",
        )
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return items[low:]


@dataclass
class ResponseRun:
    """A response whose chat job is submitted: answer it whole or streamed, and record how it ended
    (a background response has no feed: it is answered queued, or streamed from its job's events)."""

    stored: StoredResponse
    feed: JobEventFeed | None

    @property
    def kept(self) -> bool:
        return bool(self.stored.fields["store"])

    def finish(self, outcome: dict) -> dict:
        """Record the outcome (when stored) and return the final Response object."""
        if self.kept:
            responses().finish(self.stored.id, outcome)
        return response_object(self.stored, outcome)

    def _failed(self, error: ApiError) -> ApiError:
        """Record a job that failed before answering: a 4xx means no response was made (as OpenAI's);
        a timeout leaves it running (GET shows it when it ends)."""
        if self.kept and error.status < 500:
            responses().delete(self.stored.id)
        elif self.kept and error.status != 504:
            self.finish(failed_outcome(error.info))
        return renamed(error)

    def answer(self) -> dict:
        """The final Response object, once the job has ended (a 4xx or 5xx if it failed before answering)."""
        try:
            result = wait_for_result(self.feed, services().settings.sync_timeout_s, cancel_on_disconnect=True)
        except ApiError as error:
            raise self._failed(error) from None
        return self.finish(outcome_of(self.stored.job_id, result))

    def queued(self) -> dict:
        """A background response as it stands once submitted."""
        return response_object(self.stored, pending_outcome("queued"))

    def stream(self) -> Response:
        """The response's events as SSE (a background one's rebuilt from its job's events)."""
        if self.feed is None:
            return replay(self.stored)
        pending = response_object(self.stored)
        try:
            return stream_job(
                self.feed,
                services().settings.sync_timeout_s,
                lambda events: response_frames(events, self.stored.job_id, pending, self.finish),
            )
        except ApiError as error:
            raise self._failed(error) from None


def start(request: ResponseRequest) -> ResponseRun:
    """Check the request, build its context, store it (unless `store: false`) and submit its chat job."""
    ctx = services()
    if request.background and request.store is False:
        raise bad_request("A background response must be stored: leave out `store: false`.", "store", "invalid_value")
    model = ctx.require_model(request.model, request.max_output_tokens, limit_param="max_output_tokens")
    job_id = new_request_job_id()
    prior = previous_context(request.previous_response_id) if request.previous_response_id else []
    items = input_items(request.input or [], job_id)
    body = chat_body(request, model, [])  # tools and tool_choice checked before any token is counted
    context = prior + items
    if request.truncation == "auto":
        room = ctx.models.context_length(model) - (request.max_output_tokens or 1)
        context = fit_items(request, model, context, room)
    body["messages"] = chat_messages(request.instructions, context)
    if not body["messages"]:
        raise bad_request("The input holds nothing to answer: send a message.", "input", "invalid_value")
    try:
        payload = ChatCompletionRequest.model_validate(body).to_job(job_id).model_dump()
    except ApiError as error:
        raise renamed(error) from None
    stored = StoredResponse(
        id=response_id_of(job_id),
        job_id=job_id,
        created_at=int(time.time()),
        fields=echoed_fields(request, model),
        prior=prior,
        input=items,
        owner=current_owner(),
        left_out=request.left_out_tools,
    )
    if stored.fields["store"]:
        stored = responses().create(stored)
    try:
        follow = not request.background
        feed = ctx.jobs.submit(
            GENERATE_TASK, JobKind.CHAT, model, payload, DEFAULT_DEVICE, follow, owner=current_owner()
        )
    except BaseException:
        if stored.fields["store"]:
            responses().delete(stored.id)
        raise
    return ResponseRun(stored, feed)


def replay(stored: StoredResponse, starting_after: int = -1) -> Response:
    """A background response's events, rebuilt from its job's events (the same frames each time), after
    the sequence number `starting_after`. A client that goes away leaves the response running."""
    ctx = services()
    feed = ctx.jobs.follow(stored.job_id)
    pending = response_object(stored, pending_outcome("queued"))

    def job_events() -> EventStream:
        started = False
        for event_id, event in feed.events(deadline=time.monotonic() + ctx.settings.sync_timeout_s):
            if isinstance(event, StartedEvent) and not started:  # later ones are restarts: the stream fails
                started = True
                continue
            yield event_id, event

    def frames() -> Iterator[str]:
        try:
            # The outcome is recorded from the job itself (`settled`), never from a replay.
            yield from response_frames(
                job_events(), stored.job_id, pending, lambda outcome: response_object(stored, outcome), starting_after
            )
        except JobTimeout:
            return  # the client resumes with `starting_after`
        finally:
            feed.close()

    return sse_response(frames())


def cancel(stored: StoredResponse) -> dict:
    """Cancel a background response: a queued job never runs, a running one stops at its next step
    (awaited up to CANCEL_WAIT_S); one that has ended is returned as it is."""
    if not stored.fields.get("background"):
        raise ApiError(400, "Only responses created with background=true can be cancelled.", code="invalid_request")
    stored, outcome = settled(stored)
    if outcome["status"] not in PENDING_STATUS.values():
        return response_object(stored, outcome)
    ctx = services()
    ctx.store.request_cancel(stored.job_id)
    ended = ctx.store.finish(
        stored.job_id, ErrorEvent(error=job_cancelled()), JobStatus.CANCELLED, only_if=JobStatus.QUEUED
    )
    if ended and ctx.settings.metrics:  # no worker will count this job's end
        fleet_metrics.count_job_end(ctx.store.client, stored.fields["model"], JobKind.CHAT.value, "cancelled")
    feed = ctx.jobs.follow(stored.job_id)
    try:
        for _ in feed.events(deadline=time.monotonic() + CANCEL_WAIT_S):
            pass  # the feed ends with the job's terminal event
    except JobTimeout:
        pass  # still stopping: the response shows in_progress until it has
    finally:
        feed.close()
    return response_object(*settled(stored))

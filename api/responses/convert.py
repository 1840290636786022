"""From the Responses API to the chat machinery and back: input items to chat messages, the request's
tools, tool_choice and text.format to the chat request's, and a chat job's result to output items.

Items are kept in the Responses API's own shape (dicts, each with its ID): that is what is stored,
listed by `GET /v1/responses/{id}/input_items` and carried into the next turn by `previous_response_id`.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from api.errors import bad_request
from api.responses.protocol import (
    AllowedToolsChoice,
    ConversationInput,
    CustomChoice,
    CustomTool,
    CustomToolCallItem,
    CustomToolCallOutputItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    HostedTool,
    HostedToolChoice,
    InputItem,
    MessageItem,
    ResponseRequest,
)
from contracts.errors import ErrorInfo
from contracts.events import Choice, GenerationResult, ToolCall, Usage

# The ID prefix of each kind of item (OpenAI's).
ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}
# The output items that are calls, of a function or of a custom tool.
CALL_ITEMS = ("function_call", "custom_tool_call")
# Error codes that mean the job was cancelled, not that it failed.
CANCELLED_CODES = ("cancelled",)


def input_items(given: str | list, job_id: str) -> list[dict]:
    """The request's input as items in the Responses API's shape, each with an ID (its own, if sent)."""
    if isinstance(given, str):
        given = [MessageItem(role="user", content=given)]
    return [_item(item, f"{ID_PREFIXES[item.type]}_{job_id}_{index}") for index, item in enumerate(given)]


def _item(item: InputItem, default_id: str) -> dict:
    if isinstance(item, MessageItem):
        kind = "output_text" if item.role == "assistant" else "input_text"
        content = (
            [{"type": kind, "text": item.content, **({"annotations": []} if kind == "output_text" else {})}]
            if isinstance(item.content, str)
            else [part.model_dump(exclude_none=True) for part in item.content]
        )
        return {
            "id": item.id or default_id,
            "type": "message",
            "role": item.role,
            "status": "completed",
            "content": content,
        }
    if isinstance(item, FunctionCallItem):
        fields = item.model_dump(include={"call_id", "name", "arguments"})
        return {"id": item.id or default_id, "type": "function_call", "status": "completed", **fields}
    if isinstance(item, CustomToolCallItem):
        fields = item.model_dump(include={"call_id", "name", "input"})
        return {"id": item.id or default_id, "type": "custom_tool_call", "status": "completed", **fields}
    if isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem):
        output = item.output if isinstance(item.output, str) else [part.model_dump() for part in item.output]
        status = {"status": "completed"} if item.type == "function_call_output" else {}
        return {"id": item.id or default_id, "type": item.type, "call_id": item.call_id, "output": output, **status}
    fields = item.model_dump(exclude_none=True)
    return {**fields, "id": item.id or default_id}


def _text_of(parts: list[dict] | str) -> str:
    """Plain text of content parts (refusals are not shown to the model, as chat's `refusal` is not)."""
    if isinstance(parts, str):
        return parts
    return "".join(part.get("text", "") for part in parts)


def chat_messages(instructions: str | None, items: list[dict]) -> list[dict]:
    """The chat messages the items stand for: instructions first (a system message), an answer's text
    and its function calls as one assistant message, each call's output as a tool message.
    Reasoning items are left out: a thinking model reasons afresh each turn (as OpenAI and vLLM do for
    models whose templates, as DeepSeek-R1's and Qwen3's, drop earlier thinking)."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": _text_of(item["content"])})
        elif item["type"] in CALL_ITEMS:
            kind, payload = (
                ("function", {"name": item["name"], "arguments": item["arguments"]})
                if item["type"] == "function_call"
                else ("custom", {"name": item["name"], "input": item["input"]})
            )
            call = {"id": item["call_id"], "type": kind, kind: payload}
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "assistant":
                previous.setdefault("tool_calls", []).append(call)  # an answer's text and calls: one turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item["type"] in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text_of(item["output"])})
    return messages


def _chat_tool_choice(request: ConversationInput) -> tuple[list, str | dict | None]:
    """The tools offered (functions and custom tools) and chat's tool_choice for them; a 400 naming
    tool_choice when it asks for what cannot be done."""
    offered, choice = request.offered_tools, request.tool_choice
    if isinstance(choice, HostedToolChoice):
        raise bad_request(
            f"tool_choice asks for a '{choice.type}' tool, which Ladle does not run; only function and custom "
            "tools run here.",
            "tool_choice",
            "invalid_value",
        )
    if isinstance(choice, FunctionChoice | CustomChoice):
        kind = "function" if choice.type == "function" else "custom tool"
        if not any(t.type == choice.type and t.name == choice.name for t in offered):
            raise bad_request(
                f"tool_choice names the {kind} '{choice.name}', which is not in tools.", "tool_choice", "invalid_value"
            )
        return offered, {"type": choice.type, choice.type: {"name": choice.name}}
    if isinstance(choice, AllowedToolsChoice):
        allowed = [(t.get("type"), t.get("name")) for t in choice.tools if t.get("type") in ("function", "custom")]
        known = {(t.type, t.name) for t in offered}
        unknown = [name for kind, name in allowed if (kind, name) not in known]
        if unknown:
            raise bad_request(
                f"tool_choice.tools names the tool '{unknown[0]}', which is not in tools.",
                "tool_choice.tools",
                "invalid_value",
            )
        offered, choice = [t for t in offered if (t.type, t.name) in allowed], choice.mode
    if not offered:
        if choice == "required":
            raise bad_request(
                "tool_choice 'required' needs a function or custom tool; Ladle runs no other kind of tool.",
                "tool_choice",
                "invalid_value",
            )
        return [], None
    return offered, choice


def chat_tools(offered: list[FunctionTool | CustomTool]) -> list[dict]:
    """Function and custom tools as chat's `tools` (and as a chat job shows them to the model)."""
    return [_chat_tool(tool) for tool in offered]


def _chat_tool(tool: FunctionTool | CustomTool) -> dict:
    if isinstance(tool, CustomTool):
        custom = {"name": tool.name, "description": tool.description, "format": tool.chat_format}
        return {"type": "custom", "custom": {k: v for k, v in custom.items() if v is not None}}
    function = tool.model_dump(include={"name", "description", "parameters"}, exclude_none=True)
    return {"type": "function", "function": {**function, "strict": tool.enforced}}


def chat_body(request: ResponseRequest, model: str, messages: list[dict]) -> dict:
    """The chat completion request the response runs as (api/chat/protocol.py validates it)."""
    offered, choice = _chat_tool_choice(request)
    body: dict = {"model": model, "messages": messages}
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if offered:
        body["tools"] = chat_tools(offered)
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    text_format = request.text.format if request.text else None
    if text_format is not None and text_format.type == "json_schema":
        schema = text_format.model_dump(by_alias=True, exclude_none=True, exclude={"type"})
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif text_format is not None:
        body["response_format"] = {"type": text_format.type}
    return body


def echoed_fields(request: ResponseRequest, model: str) -> dict:
    """The request's parameters as the Response object repeats them (OpenAI's defaults where not sent)."""
    text_format = request.text.format if request.text and request.text.format else None
    reasoning = request.reasoning
    tool_choice = request.tool_choice
    return {
        "background": bool(request.background),
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": None,
        "model": model,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",  # every request is served alike here
        "store": request.store is not False,
        "temperature": request.temperature,
        "text": {
            "format": text_format.model_dump(by_alias=True, exclude_none=True) if text_format else {"type": "text"},
            "verbosity": (request.text.verbosity if request.text else None) or "medium",
        },
        "tool_choice": tool_choice.model_dump() if isinstance(tool_choice, BaseModel) else tool_choice or "auto",
        "tools": [_echoed_tool(tool) for tool in request.tools or []],
        "top_logprobs": 0,
        "top_p": request.top_p,
        "truncation": request.truncation or "disabled",
        "user": request.user,
        "metadata": request.metadata or {},
    }


def _echoed_tool(tool: FunctionTool | CustomTool | HostedTool) -> dict:
    if isinstance(tool, CustomTool):
        return tool.model_dump(exclude_none=True) | {"description": tool.description}
    if tool.type != "function":
        return tool.model_dump()
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.enforced,
    }


def message_item(job_id: str, text: str, status: str = "completed") -> dict:
    """The answer's text as an output message."""
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": f"msg_{job_id}", "type": "message", "status": status, "role": "assistant", "content": [part]}


def call_item(job_id: str, index: int, call: ToolCall, status: str = "completed") -> dict:
    """One of the answer's calls (of a function or a custom tool) as an output item."""
    if call.type == "custom":
        return {
            "id": f"ctc_{job_id}_{index}",
            "type": "custom_tool_call",
            "status": status,
            "call_id": call.id,
            "input": call.arguments,
            "name": call.name,
        }
    return {
        "id": f"fc_{job_id}_{index}",
        "type": "function_call",
        "status": status,
        "arguments": call.arguments,
        "call_id": call.id,
        "name": call.name,
    }


def reasoning_item(job_id: str, text: str, status: str = "completed") -> dict:
    """A thinking model's reasoning as an output item: its text as `content`, no summary (Ladle writes
    none), nothing encrypted (`include: ["reasoning.encrypted_content"]` leaves it null)."""
    return {
        "id": f"rs_{job_id}",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "encrypted_content": None,
        "status": status,
    }


def usage_body(usage: Usage) -> dict:
    """The chat usage in the Responses API's terms."""
    details = usage.completion_tokens_details
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": details.reasoning_tokens if details else 0},
        "total_tokens": usage.total_tokens,
    }


def output_of(job_id: str, choice: Choice) -> list[dict]:
    """The answer's output items: a thinking model's reasoning, its text (left out when it is only
    whitespace before calls, or when max_output_tokens cut the reasoning), then its calls, and a call
    max_output_tokens cut, as far as it came (incomplete)."""
    calls = choice.tool_calls or []
    cut = choice.finish_reason == "length" and not calls and choice.cut_call is None
    began = calls or choice.cut_call is not None
    # Reasoning cut before any answer came: the reasoning is incomplete and there is no message.
    cut_thinking = cut and bool(choice.reasoning) and not choice.text.strip()
    items = (
        [reasoning_item(job_id, choice.reasoning, "incomplete" if cut_thinking else "completed")]
        if choice.reasoning
        else []
    )
    items += (
        [message_item(job_id, choice.text, "incomplete" if cut else "completed")]
        if (not began or choice.text.strip()) and not cut_thinking
        else []
    )
    items += [call_item(job_id, index, call) for index, call in enumerate(calls)]
    if choice.cut_call is not None:
        items.append(call_item(job_id, len(calls), choice.cut_call, "incomplete"))
    return items


def outcome_of(job_id: str, result: GenerationResult) -> dict:
    """How a response whose job finished ended: status, output, usage."""
    choice = result.choices[0]
    status = {"length": "incomplete", "cancelled": "cancelled"}.get(choice.finish_reason, "completed")
    return {
        "status": status,
        "output": output_of(job_id, choice),
        "usage": usage_body(result.usage),
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "completed_at": int(time.time()) if status == "completed" else None,
    }


def failed_outcome(error: ErrorInfo, output: list[dict] | None = None) -> dict:
    """How a response whose job failed (or was cancelled) ended; `output`: what it had produced."""
    cancelled = error.code in CANCELLED_CODES
    return {
        "status": "cancelled" if cancelled else "failed",
        "output": output or [],
        "usage": None,
        "error": None if cancelled else {"code": error.code or error.type, "message": error.message},
        "incomplete_details": None,
        "completed_at": None,
    }

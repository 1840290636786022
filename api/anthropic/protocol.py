"""Anthropic's Messages API requests (pydantic) and the chat request Ladle runs for them.

Unknown top-level fields are accepted and ignored: the SDK keeps adding some (`container`,
`context_management`, `inference_geo`, `speed`...) and ignoring them leaves the answer the one
Ladle's model gives. A field that would change the answer in a way Ladle cannot honour is a 400
naming it instead; they are listed in `UNHONOURED` (`mcp_servers` with servers in it: tools that
Anthropic's servers would call during the answer). Unknown fields of blocks and tools
(`cache_control`, `citations`...) are ignored likewise.

How a conversation becomes chat messages:
- the system prompt (a string or text blocks) is the first message; the text blocks of one message
  are joined by a blank line, and consecutive turns of one role are joined into one (as Anthropic does);
- a `tool_use` block is an assistant tool call, a `tool_result` block a tool message (its text
  blocks joined; `is_error` prefixes "Error: ");
- `thinking` and `redacted_thinking` blocks are accepted and left out (a model that thinks reasons
  afresh each turn, as its template drops earlier thinking); `thinking` in the request (enabled or
  adaptive) shows a thinking model's reasoning as a `thinking` block, and changes nothing else;
- `image` and `document` blocks are a 400: the models take text only;
- a conversation ending with an assistant turn (prefill) is a 400, as Anthropic answers for models
  without prefill: the chat template always opens a new assistant turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from api.chat.grammars import answer_grammar
from api.chat.protocol import ChatCompletionRequest, job_messages
from api.chat.structured import MAX_TOOLS, NAME_PATTERN
from api.errors import bad_request
from contracts.jobs import TokenCountJob

# Between the text blocks of one message, and between turns of one role joined into one.
BLOCK_SEPARATOR = "\n\n"
# Ladle's limit on stop strings (as on the chat route).
MAX_STOP_SEQUENCES = 4

# Top-level fields that are a 400 when the predicate holds for their value: the answer would depend
# on something Ladle cannot do.
UNHONOURED: dict[str, tuple[Callable[[object], bool], str]] = {
    "mcp_servers": (bool, "Ladle cannot call tools on remote MCP servers; pass their tools in 'tools' instead."),
}


def _text_or_blocks(value: object) -> str:
    """Which of a string-or-blocks field's forms `value` is, so an error names what is wrong in that form
    (the tag is one api/errors.py leaves out of the parameter's path)."""
    return "str" if isinstance(value, str) else "list[blocks]"


def text_or(blocks: object) -> object:
    """A field holding a string or a list of `blocks`."""
    return Annotated[
        Annotated[str, Tag("str")] | Annotated[list[blocks], Tag("list[blocks]")], Discriminator(_text_or_blocks)
    ]


class Lenient(BaseModel):
    """Types are checked strictly; fields Ladle does not know are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class TextBlock(Lenient):
    """Text (`cache_control` and `citations` are ignored)."""

    type: Literal["text"]
    text: str


class MediaBlock(Lenient):
    """An image or a document: the models take text only, so reading one is a 400."""

    type: Literal["image", "document"]


class ToolUseBlock(Lenient):
    """A call the assistant made in an earlier turn."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict


class ThinkingBlock(Lenient):
    """Thinking a client sends back with an earlier answer: accepted, never shown to the model."""

    type: Literal["thinking", "redacted_thinking"]


ResultPart = Annotated[TextBlock | MediaBlock, Field(discriminator="type")]


class ToolResultBlock(Lenient):
    """The result of a call, sent back in a user turn (text, or text blocks)."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: text_or(ResultPart) = ""
    is_error: bool = False


ContentBlock = Annotated[
    TextBlock | MediaBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class Message(Lenient):
    """A turn of the conversation: a string, or content blocks."""

    # Claude Code also sends system turns within the conversation (reminders): their text joins the
    # system prompt, which chat templates take only first.
    role: Literal["user", "assistant", "system"]
    content: text_or(ContentBlock)


class ToolDefinition(Lenient):
    """A client tool; Anthropic's own tool types (`bash_...`, `web_search_...`) are a 400."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    input_schema: dict
    strict: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _client_tools_only(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") not in (None, "custom"):
            kind = str(data["type"])[:60]
            raise ValueError(f"Ladle runs client tools (name, description, input_schema), not '{kind}' tools")
        return data

    @model_validator(mode="after")
    def _enforceable(self) -> ToolDefinition:
        answer_grammar(self.input_schema, bool(self.strict))  # ValueError: what the engine cannot enforce
        return self

    def function(self) -> dict:
        """The tool as an OpenAI function tool."""
        fields = {
            "name": self.name,
            "description": self.description,
            "parameters": self.input_schema,
            "strict": self.strict,
        }
        return {"type": "function", "function": {k: v for k, v in fields.items() if v is not None}}


class AutoChoice(Lenient):
    """The model decides whether to call tools (OpenAI's `auto`)."""

    type: Literal["auto"]
    disable_parallel_tool_use: bool = False

    def chat_fields(self) -> dict:
        return {"tool_choice": "auto", **_parallel(self.disable_parallel_tool_use)}


class AnyChoice(Lenient):
    """The model calls one tool or more (OpenAI's `required`)."""

    type: Literal["any"]
    disable_parallel_tool_use: bool = False

    def chat_fields(self) -> dict:
        return {"tool_choice": "required", **_parallel(self.disable_parallel_tool_use)}


class NamedChoice(Lenient):
    """The model calls the named tool, once."""

    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool = False

    def chat_fields(self) -> dict:
        # One call of the named tool (it is never parallel).
        return {"tool_choice": {"type": "function", "function": {"name": self.name}}}


class NoneChoice(Lenient):
    """The model calls no tool (the tools are not shown to it)."""

    type: Literal["none"]

    def chat_fields(self) -> dict:
        return {"tool_choice": "none"}


def _parallel(disabled: bool) -> dict:
    return {"parallel_tool_calls": False} if disabled else {}


ToolChoice = Annotated[AutoChoice | AnyChoice | NamedChoice | NoneChoice, Field(discriminator="type")]


class ThinkingConfig(Lenient):
    """Accepted in any of its forms (enabled with budget_tokens, disabled, adaptive...): enabled or
    adaptive shows a thinking model's reasoning; `budget_tokens` has no effect."""

    type: str


class Metadata(Lenient):
    """Who asks (passed on as the chat request's `user`: no effect on the answer)."""

    user_id: str | None = None


class JsonOutputFormat(Lenient):
    """Structured outputs: the answer is JSON valid against `schema` (run as a strict json_schema)."""

    type: Literal["json_schema"]
    schema_: dict = Field(alias="schema")


# Claude's effort levels that a chat template's `reasoning_effort` (gpt-oss's) has too.
TEMPLATE_EFFORTS = ("low", "medium", "high")


class OutputConfig(Lenient):
    """Output options: `format` is honoured; `effort` reaches the chat template as
    `reasoning_effort` when the template knows the level (low, medium, high), else it is ignored."""

    format: JsonOutputFormat | None = None
    effort: str | None = None


class MessagesInput(Lenient):
    """What /v1/messages and /v1/messages/count_tokens both read: the conversation, its tools, its format."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: text_or(TextBlock) | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None  # the structured-outputs beta's name for output_config.format

    @model_validator(mode="before")
    @classmethod
    def _honourable(cls, data: object) -> object:
        if isinstance(data, dict):
            for name, (matters, why) in UNHONOURED.items():
                if name in data and matters(data[name]):
                    raise bad_request(f"'{name}' is not supported: {why}", name, "unsupported_parameter")
        return data

    @property
    def shows_thinking(self) -> bool:
        """Whether a thinking model's reasoning is shown (as `thinking` blocks)."""
        return self.thinking is not None and self.thinking.type in ("enabled", "adaptive")

    @property
    def output_schema(self) -> dict | None:
        chosen = (self.output_config.format if self.output_config else None) or self.output_format
        return chosen.schema_ if chosen else None

    def chat_fields(self) -> dict:
        """The chat request's fields for the conversation, the tools and the output format."""
        fields: dict = {"model": self.model, "messages": chat_messages(self.system, self.messages)}
        if self.tools:
            fields["tools"] = [tool.function() for tool in self.tools]
        if self.tool_choice is not None:
            fields |= self.tool_choice.chat_fields()
        if self.output_schema is not None:
            json_schema = {"name": "output", "schema": self.output_schema, "strict": True}
            fields["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        effort = self.output_config.effort if self.output_config else None
        if effort in TEMPLATE_EFFORTS:
            fields["reasoning_effort"] = effort
        return fields

    def count_job(self, job_id: str, model: str) -> TokenCountJob:
        """A token count of the prompt the model would see: the messages, and the tools shown in the
        system message as the worker shows them (none with tool_choice none)."""
        chat = ChatCompletionRequest.model_validate(self.chat_fields())
        tools = chat.structured_job_fields().get("tools")
        return TokenCountJob(
            job_id=job_id,
            model=model,
            messages=job_messages(chat.messages),
            tools=tools,
            reasoning_effort=chat.reasoning_effort,
        )


class MessagesRequest(MessagesInput):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None
    service_tier: str | None = None  # every request is served alike
    stream: bool = False

    def to_chat(self) -> ChatCompletionRequest:
        """The chat request Ladle runs for this one."""
        return ChatCompletionRequest.model_validate(self.chat_body())

    def chat_body(self) -> dict:
        """The body of that chat request (a Message Batch's lines are written as such bodies)."""
        last = len(self.messages) - 1
        if self.messages[last].role == "assistant":
            raise bad_request(
                "Prefilling the assistant message is not supported: the conversation must end with a user message.",
                f"messages.{last}",
                "prefill_not_supported",
            )
        fields = {**self.chat_fields(), "max_tokens": self.max_tokens, "stream": self.stream}
        fields["stop"] = self.stop_sequences or []
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.top_p == 0:  # only the most likely token: greedy
            fields["temperature"] = 0.0
        elif self.top_p is not None:
            fields["top_p"] = self.top_p
        if self.top_k:  # 0: no top-k
            fields["top_k"] = self.top_k
        if self.metadata is not None and self.metadata.user_id is not None:
            fields["user"] = self.metadata.user_id
        return fields


def chat_messages(system: str | list[TextBlock] | None, messages: list[Message]) -> list[dict]:
    """The conversation as chat messages (see the module's docstring)."""
    converted: list[dict] = []
    system_text = system if isinstance(system, str) else BLOCK_SEPARATOR.join(b.text for b in system or [])
    turns = [system_text, *(_text_of(m.content) for m in messages if m.role == "system")]
    if any(turns):
        converted.append({"role": "system", "content": BLOCK_SEPARATOR.join(t for t in turns if t)})
    for index, message in enumerate(messages):
        if message.role == "system":
            continue
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        turn = _assistant_turn(index, blocks) if message.role == "assistant" else _user_turn(index, blocks)
        for chat_message in turn:
            _append(converted, chat_message)
    return converted


def _text_of(content: str | list) -> str:
    """A system turn's text (its text blocks; nothing else is shown from it)."""
    if isinstance(content, str):
        return content
    return BLOCK_SEPARATOR.join(b.text for b in content if isinstance(b, TextBlock))


def _append(messages: list[dict], message: dict) -> None:
    """Add `message`, joined to the previous one when both are plain turns of one role."""
    previous = messages[-1] if messages else None
    if (
        previous is not None
        and previous["role"] == message["role"]
        and message["role"] in ("user", "assistant")
        and "tool_calls" not in previous  # text after calls would be shown before them
    ):
        texts = [t for t in (previous["content"], message["content"]) if t]
        messages[-1] = {**message, "content": BLOCK_SEPARATOR.join(texts)}
        return
    messages.append(message)


def _user_turn(index: int, blocks: list) -> list[dict]:
    turn: list[dict] = []
    texts: list[str] = []
    for position, block in enumerate(blocks):
        where = f"messages.{index}.content.{position}"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            if texts:
                turn.append({"role": "user", "content": BLOCK_SEPARATOR.join(texts)})
                texts = []
            turn.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block, where)})
        elif isinstance(block, ToolUseBlock):
            raise bad_request("A tool_use block belongs in an assistant message.", where, "invalid_value")
        else:
            _left_out(block, where)
    if texts:
        turn.append({"role": "user", "content": BLOCK_SEPARATOR.join(texts)})
    return turn


def _assistant_turn(index: int, blocks: list) -> list[dict]:
    texts: list[str] = []
    calls: list[dict] = []
    for position, block in enumerate(blocks):
        where = f"messages.{index}.content.{position}"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, ToolResultBlock):
            raise bad_request("A tool_result block belongs in a user message.", where, "invalid_value")
        else:
            _left_out(block, where)
    message: dict = {"role": "assistant", "content": BLOCK_SEPARATOR.join(texts)}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _left_out(block: MediaBlock | ThinkingBlock, where: str) -> None:
    """Thinking is left out of the prompt; media are a 400."""
    if isinstance(block, MediaBlock):
        raise text_only(block.type, where)


def text_only(kind: str, where: str):
    """The 400 for a block of another modality than text."""
    return bad_request(
        f"'{kind}' blocks are not supported: Ladle's models take text only.", where, "unsupported_content"
    )


def _result_text(block: ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        text = block.content
    else:
        for position, part in enumerate(block.content):
            if isinstance(part, MediaBlock):
                raise text_only(part.type, f"{where}.content.{position}")
        text = BLOCK_SEPARATOR.join(part.text for part in block.content)
    return f"Error: {text}" if block.is_error else text

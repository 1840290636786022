"""The Responses API request (`POST /v1/responses`, `POST /v1/responses/input_tokens`) as pydantic models.

Unknown fields are 400s naming them. Input items are `message` (a `type` may be left out, as
OpenAI's "easy" messages do), `function_call`, `function_call_output`, `custom_tool_call`,
`custom_tool_call_output` and `reasoning` (checked, kept, never shown to the model: a thinking model's
chat template drops earlier turns' thinking too, as Qwen3's and DeepSeek-R1's do, and as OpenAI and
vLLM do for such models). Tools are function
tools, custom tools (their input is text: free, or in a lark or regex grammar the decoding follows),
or tool types OpenAI hosts (web_search, file_search, mcp, ...) that Ladle does not run: those are
accepted and left out of the prompt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from api.chat.grammars import answer_grammar, custom_input_grammar
from api.chat.protocol import ReasoningEffort
from api.chat.structured import MAX_GRAMMAR, MAX_TOOLS, NAME_PATTERN, by_type
from api.errors import ApiError, bad_request
from api.sampling_protocol import StrictModel

# OpenAI's limits on metadata: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA = 16
# What a tool type Ladle does not run looks like (it goes into a response header: no odd characters).
TOOL_TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
ITEM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


class InputText(StrictModel):
    """Text the user (or a tool's output) gives."""

    type: Literal["input_text"]
    text: str


class OutputText(StrictModel):
    """An answer's text sent back in a later turn; its annotations and logprobs are not shown to the model."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict] = []
    logprobs: list[dict] | None = None


class Refusal(StrictModel):
    """An earlier answer's refusal sent back; not shown to the model."""

    type: Literal["refusal"]
    refusal: str


ContentPart = by_type(InputText, OutputText, Refusal, why=" (the models Ladle serves take text only)")


class MessageItem(StrictModel):
    """A message of the conversation; `type` may be left out."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    # Sent back with an earlier answer's message:
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(StrictModel):
    """A function call of an earlier answer."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(StrictModel):
    """What the client's function returned for the call `call_id`."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[InputText]
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class CustomToolCallItem(StrictModel):
    """A custom tool's call of an earlier answer."""

    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1)
    input: str
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    namespace: str | None = None


class CustomToolCallOutputItem(StrictModel):
    """What the client's custom tool returned for the call `call_id`."""

    type: Literal["custom_tool_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[InputText]
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)


class SummaryText(StrictModel):
    """A part of a reasoning item's summary."""

    type: Literal["summary_text"]
    text: str


class ReasoningText(StrictModel):
    """A part of a reasoning item's reasoning."""

    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(StrictModel):
    """An earlier answer's reasoning, in OpenAI's shape: kept with the conversation, never shown to the
    model (its next answer thinks afresh; the prompt holds the earlier answers only)."""

    type: Literal["reasoning"]
    summary: list[SummaryText]
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    id: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "reasoning",
)


def _item_type(value: Any) -> str | None:
    """An input item's type; a message may leave it out."""
    if isinstance(value, dict):
        kind = value.get("type", "message" if "role" in value else None)
    else:
        kind = getattr(value, "type", None)
    return f"#{kind}" if kind in ITEM_TYPES else None


InputItem = Annotated[
    Annotated[MessageItem, Tag("#message")]
    | Annotated[FunctionCallItem, Tag("#function_call")]
    | Annotated[FunctionCallOutputItem, Tag("#function_call_output")]
    | Annotated[CustomToolCallItem, Tag("#custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("#custom_tool_call_output")]
    | Annotated[ReasoningItem, Tag("#reasoning")],
    Discriminator(
        _item_type,
        custom_error_type="invalid_item",
        custom_error_message="an input item is a message (with a role), function_call, function_call_output, "
        "custom_tool_call, custom_tool_call_output or reasoning",
    ),
]


class FunctionTool(StrictModel):
    """A function the model may call (the client runs it)."""

    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict | None = None
    # OpenAI's Responses API enforces a function's parameters unless told not to.
    strict: bool | None = None

    @model_validator(mode="after")
    def _enforceable(self) -> FunctionTool:
        if self.parameters is not None:
            answer_grammar(self.parameters, self.enforced)
        return self

    @property
    def enforced(self) -> bool:
        """Whether its parameters are enforced (`strict`, true unless sent false)."""
        return self.strict is not False


class TextInputFormat(StrictModel):
    """A custom tool's input is free text."""

    type: Literal["text"]


class GrammarInputFormat(StrictModel):
    """A custom tool's input follows a grammar: lark (llguidance's dialect) or a regex."""

    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str = Field(min_length=1, max_length=MAX_GRAMMAR)


class CustomTool(StrictModel):
    """A tool whose input is text, not JSON arguments (Codex CLI's apply_patch is one)."""

    type: Literal["custom"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    format: by_type(TextInputFormat, GrammarInputFormat) | None = None
    defer_loading: bool | None = None  # accepted: every tool is shown to the model

    @model_validator(mode="after")
    def _readable_grammar(self) -> CustomTool:
        custom_input_grammar(self.chat_format)
        return self

    @property
    def chat_format(self) -> dict | None:
        """The format in chat's shape (a grammar's fields under `grammar`)."""
        if isinstance(self.format, GrammarInputFormat):
            return {"type": "grammar", "grammar": {"definition": self.format.definition, "syntax": self.format.syntax}}
        return self.format.model_dump() if self.format else None


class HostedTool(BaseModel):
    """A tool OpenAI runs itself (web_search, file_search, code_interpreter, mcp, ...): accepted, not run."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(pattern=TOOL_TYPE_PATTERN)


def _tool_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"#{kind}" if kind in ("function", "custom") else "#hosted"


ToolParam = Annotated[
    Annotated[FunctionTool, Tag("#function")]
    | Annotated[CustomTool, Tag("#custom")]
    | Annotated[HostedTool, Tag("#hosted")],
    Discriminator(_tool_type),
]


class FunctionChoice(StrictModel):
    """Call this function."""

    type: Literal["function"]
    name: str


class CustomChoice(StrictModel):
    """Call this custom tool."""

    type: Literal["custom"]
    name: str


class AllowedToolsChoice(StrictModel):
    """Only these tools may be called (`mode` auto or required)."""

    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict] = Field(max_length=MAX_TOOLS)


class HostedToolChoice(BaseModel):
    """A choice of a tool OpenAI runs (web_search_preview, file_search, mcp, ...): Ladle cannot honour it."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(pattern=TOOL_TYPE_PATTERN)


def _choice_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"#{kind}" if kind in ("function", "custom", "allowed_tools") else "#hosted"


ToolChoiceParam = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[FunctionChoice, Tag("#function")]
        | Annotated[CustomChoice, Tag("#custom")]
        | Annotated[AllowedToolsChoice, Tag("#allowed_tools")]
        | Annotated[HostedToolChoice, Tag("#hosted")],
        Discriminator(_choice_type),
    ]
)


class TextFormatText(StrictModel):
    """Free text (the default)."""

    type: Literal["text"]


class TextFormatJsonObject(StrictModel):
    """Any JSON object."""

    type: Literal["json_object"]


class TextFormatJsonSchema(StrictModel):
    """One JSON value valid against `schema` (enforced by grammar; `strict` refuses what cannot be)."""

    type: Literal["json_schema"]
    name: str = Field(pattern=NAME_PATTERN)
    schema_: dict = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _enforceable(self) -> TextFormatJsonSchema:
        answer_grammar(self.schema_, bool(self.strict))
        return self


TextFormat = by_type(TextFormatText, TextFormatJsonObject, TextFormatJsonSchema)


class TextConfig(StrictModel):
    """The answer's format and verbosity."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted; small models do not follow it


class ReasoningConfig(StrictModel):
    """Echoed back. `effort` is passed to the chat template as `reasoning_effort`: gpt-oss's reads it
    (its system message says how hard to think), models whose templates do not, ignore it. A model
    that thinks (worker/engines/reasoning.py, harmony's in worker/engines/harmony_reasoning.py)
    otherwise thinks as its weights do, and one that does not never will; `summary` is accepted,
    none is written."""

    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseStreamOptions(StrictModel):
    """Options of a streamed response."""

    include_obfuscation: bool | None = None  # nothing is obfuscated: there is no padding to turn off


class ConversationInput(StrictModel):
    """What a request shows the model: shared by responses and their input-token counts."""

    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[ToolParam] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoiceParam | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _something_to_answer(self) -> ConversationInput:
        if self.input is None and self.previous_response_id is None:
            raise bad_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
        names = [t.name for t in self.offered_tools]
        if len(set(names)) < len(names):
            raise bad_request("Tool names in tools must be unique.", "tools", "invalid_value")
        return self

    @property
    def reasoning_effort(self) -> str | None:
        """The reasoning effort the chat template is given (None: the template's own default)."""
        return self.reasoning.effort if self.reasoning else None

    @property
    def offered_tools(self) -> list[FunctionTool | CustomTool]:
        """The tools the model may call (functions and custom tools)."""
        return [t for t in self.tools or [] if isinstance(t, FunctionTool | CustomTool)]

    @property
    def left_out_tools(self) -> list[str]:
        """Types of the request's tools Ladle does not run, each once, in order."""
        return list(dict.fromkeys(t.type for t in self.tools or [] if isinstance(t, HostedTool)))


class ResponseRequest(ConversationInput):
    """Every accepted field of `POST /v1/responses`; anything else is a 400 naming it."""

    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=MAX_METADATA)
    include: list[str] | None = Field(None, max_length=32)  # accepted: nothing Ladle returns is left out by default
    stream: bool | None = None
    stream_options: ResponseStreamOptions | None = None
    background: bool | None = None
    # No effect on output (as with chat): echoed back.
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    # Codex CLI's description of itself (installation, session): accepted, not used.
    client_metadata: dict | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ResponseRequest:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true.", "stream_options")
        for key in self.metadata or {}:
            if len(key) > 64:
                raise bad_request("metadata keys are at most 64 characters.", "metadata", "invalid_value")
        return self


class InputTokensRequest(ConversationInput):
    """`POST /v1/responses/input_tokens`: the fields that shape the prompt (others are not accepted)."""


class InputItemsQuery(BaseModel):
    """A page of a response's input items."""

    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, pattern=ITEM_ID_PATTERN)
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"


class RetrieveQuery(BaseModel):
    """`GET /v1/responses/{id}`: OpenAI's query parameters (streaming a response back needs background mode)."""

    model_config = ConfigDict(extra="ignore")

    stream: Literal["true", "false"] | None = None
    starting_after: int | None = Field(None, ge=0)
    include_obfuscation: Literal["true", "false"] | None = None


def param_name(location: tuple) -> str | None:
    """A parameter's location, dotted as chat's errors name theirs (`input.0.content.1.text`), without
    pydantic's union members and tags (`#<type>` here)."""
    return ".".join(str(part) for part in location if not _is_union_member(part)) or None


def _is_union_member(part: str | int) -> bool:
    if isinstance(part, int):
        return False
    prefixes = ("#", "list[", "dict[", "literal[", "function-", "tagged-union[")
    return part.startswith(prefixes) or part in {"str", "int", "float", "bool"}


def invalid_body(error: ValidationError) -> ApiError:
    """A 400 naming the first invalid parameter, or every unknown one (OpenAI's wording)."""
    problems = error.errors(include_url=False)
    unknown = [param_name(p["loc"]) for p in problems if p["type"] == "extra_forbidden"]
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        return bad_request(
            f"Unknown parameter{'s' if len(unknown) > 1 else ''}: {names}.", unknown[0], "unknown_parameter"
        )
    # In a union every member reports its error: the deepest one is about what the client meant.
    first = max(problems, key=lambda p: sum(1 for part in p["loc"] if not _is_union_member(part)))
    param = param_name(first["loc"])
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    message = first["msg"].removeprefix("Value error, ")
    return bad_request(f"Invalid value for '{param}': {message}" if param else message, param, "invalid_value")

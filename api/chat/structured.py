"""Structured output fields (OpenAI's): `response_format`, `tools` (functions, and custom tools whose
input is text: free, or in a lark or regex grammar), `tool_choice`, `parallel_tool_calls`, and the
deprecated `functions` and `function_call` (run as tools and tool_choice, one call at most).

Each is checked when the request is read: a schema the engine cannot enforce with `strict: true`
is a 400 naming the keyword (with `strict` false or absent, such keywords are ignored), and the
grammar the worker will run is built here (api/chat/grammars.py).
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from api.chat.grammars import answer_grammar, custom_input_grammar, tool_name, tools_grammar
from api.errors import bad_request
from api.sampling_protocol import StrictModel

# OpenAI's limits: function and schema names, and tools per request.
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
# The longest custom tool grammar accepted (Codex CLI's apply_patch grammar is under 1 KB).
MAX_GRAMMAR = 100_000
ANY_OBJECT = {"type": "object"}


class JsonSchemaFormat(StrictModel):
    name: str = Field("response", pattern=NAME_PATTERN)  # OpenAI requires it; Ladle does not need it
    description: str | None = None
    schema_: dict = Field(alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _enforceable(self) -> JsonSchemaFormat:
        answer_grammar(self.schema_, bool(self.strict))
        return self


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only allowed with it")
        return self

    @property
    def answer(self) -> tuple[dict, bool] | None:
        """The schema the answer must match and whether it is strict; None for free text."""
        if self.type == "json_object":
            return ANY_OBJECT, False
        if self.type == "json_schema":
            return self.json_schema.schema_, bool(self.json_schema.strict)
        return None

    def grammar(self) -> str | None:
        answer = self.answer
        return answer_grammar(*answer) if answer else None


class FunctionDefinition(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _enforceable(self) -> FunctionDefinition:
        if self.parameters is not None:
            answer_grammar(self.parameters, bool(self.strict))
        return self


def by_type(*members: type[StrictModel], why: str = "") -> Any:
    """A union of `members` told apart by their `type` field, each tagged `#<type>` (so an error's
    location names the parameter, not the member: api/errors.py and the Responses API's errors leave
    such tags out); `why` ends the message naming the types a `type` must be."""
    kinds = {m.model_fields["type"].annotation.__args__[0]: m for m in members}

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return f"#{kind}" if isinstance(kind, str) and kind in kinds else None

    message = f"type must be one of {', '.join(kinds)}{why}"
    tagged = tuple(Annotated[m, Tag(f"#{k}")] for k, m in kinds.items())
    return Annotated[
        reduce(operator.or_, tagged), Discriminator(tag, custom_error_type="invalid_type", custom_error_message=message)
    ]


class Tool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


class TextInput(StrictModel):
    """A custom tool's input is free text."""

    type: Literal["text"]


class GrammarDefinition(StrictModel):
    definition: str = Field(min_length=1, max_length=MAX_GRAMMAR)
    syntax: Literal["lark", "regex"]


class GrammarInput(StrictModel):
    """A custom tool's input follows a grammar (llguidance reads lark and regex)."""

    type: Literal["grammar"]
    grammar: GrammarDefinition


class CustomToolDefinition(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    format: by_type(TextInput, GrammarInput) | None = None

    @model_validator(mode="after")
    def _readable_grammar(self) -> CustomToolDefinition:
        custom_input_grammar(self.format.model_dump() if self.format else None)
        return self


class CustomTool(StrictModel):
    """A tool whose input is text, not JSON arguments (OpenAI's custom tools)."""

    type: Literal["custom"]
    custom: CustomToolDefinition


ToolParam = by_type(Tool, CustomTool)


class FunctionName(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: FunctionName


class NamedCustomChoice(StrictModel):
    type: Literal["custom"]
    custom: FunctionName


class FunctionCall(StrictModel):
    name: str
    arguments: str


class CustomCall(StrictModel):
    name: str
    input: str


class ToolCallMessage(StrictModel):
    """A call in an assistant message sent back in a later turn."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomCallMessage(StrictModel):
    """A custom tool's call in an assistant message sent back in a later turn."""

    id: str
    type: Literal["custom"]
    custom: CustomCall


CallMessage = by_type(ToolCallMessage, CustomCallMessage)


class StructuredOutputFields(StrictModel):
    response_format: ResponseFormat | None = None
    tools: list[ToolParam] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | by_type(NamedToolChoice, NamedCustomChoice) | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI's deprecated spellings of tools and tool_choice, still sent by older LangChain and
    # scripts; such a request is answered in their shape too (`function_call`, api/chat/render.py).
    functions: list[FunctionDefinition] | None = Field(None, max_length=MAX_TOOLS)
    function_call: Literal["none", "auto"] | FunctionName | None = None

    @model_validator(mode="after")
    def _choice_among_tools(self) -> StructuredOutputFields:
        self._check_legacy_fields()
        tools_param = "functions" if self.legacy_functions else "tools"
        choice_param = "function_call" if self.legacy_functions else "tool_choice"
        names = [tool_name(t) for t in self._tools]
        if len(set(names)) < len(names):
            raise bad_request(f"Tool names in {tools_param} must be unique.", tools_param, "invalid_value")
        if not self.tools and self.tool_choice not in (None, "none"):
            raise bad_request("tool_choice is only allowed when tools are specified.", "tool_choice", "invalid_value")
        choice = self._choice
        if isinstance(choice, NamedToolChoice | NamedCustomChoice):
            kind = "function" if choice.type == "function" else "custom tool"
            if not any(t["type"] == choice.type and tool_name(t) == self._named for t in self._tools):
                raise bad_request(
                    f"{choice_param} names the {kind} '{self._named}', which is not in {tools_param}.",
                    choice_param,
                    "invalid_value",
                )
        return self

    def _check_legacy_fields(self) -> None:
        """The deprecated fields are alternatives to the current ones, never mixed with them."""
        if self.functions is not None and self.tools is not None:
            raise bad_request(
                "functions and tools cannot both be specified; functions is deprecated in favor of tools.",
                "functions",
                "invalid_value",
            )
        if self.function_call is not None and self.tool_choice is not None:
            raise bad_request(
                "function_call and tool_choice cannot both be specified; "
                "function_call is deprecated in favor of tool_choice.",
                "function_call",
                "invalid_value",
            )
        if self.function_call is not None and not self.functions:
            raise bad_request(
                "function_call is only allowed when functions are specified.", "function_call", "invalid_value"
            )

    @property
    def legacy_functions(self) -> bool:
        """True when functions come in the deprecated `functions` field: the answer then carries
        at most one call, as `function_call` (OpenAI's legacy shape)."""
        return self.functions is not None

    @property
    def _tools(self) -> list[dict]:
        """The tools offered in chat's shape, whichever field they came in."""
        if self.functions is not None:
            return [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in self.functions]
        return [t.model_dump(exclude_none=True) for t in self.tools or []]

    @property
    def _named(self) -> str | None:
        """The tool the choice names, if it names one."""
        choice = self._choice
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        return choice.custom.name if isinstance(choice, NamedCustomChoice) else None

    @property
    def _choice(self) -> Literal["none", "auto", "required"] | NamedToolChoice | NamedCustomChoice | None:
        """tool_choice, or function_call as the tool_choice it stands for."""
        if isinstance(self.function_call, FunctionName):
            return NamedToolChoice(type="function", function=self.function_call)
        return self.function_call or self.tool_choice

    @property
    def tool_mode(self) -> Literal["auto", "required", "named"] | None:
        """How the answer may call tools; None when it may not (no tools, or tool_choice none)."""
        choice = self._choice
        if not self._tools or choice == "none":
            return None
        if isinstance(choice, NamedToolChoice | NamedCustomChoice):
            return "named"
        return choice or "auto"

    @property
    def free_text(self) -> bool:
        """True when the answer may hold free text, the only place stop strings apply: not with a
        response_format schema (the answer, or its alternative to calls, is JSON) nor when only calls may come."""
        answer = self.response_format.answer if self.response_format else None
        return answer is None and self.tool_mode in (None, "auto")

    def structured_job_fields(self) -> dict:
        """GenerationJob's grammar, tools and tool_calls for these fields."""
        mode = self.tool_mode
        answer = self.response_format.answer if self.response_format else None
        if mode is None:
            return {"grammar": answer_grammar(*answer) if answer else None}
        tools = self._tools
        # OpenAI's legacy answer holds one function_call, never several.
        parallel = self.parallel_tool_calls is not False and not self.legacy_functions
        try:
            grammar = tools_grammar(tools, mode, parallel, self._named, answer)
        except ValueError as error:
            param = "functions" if self.legacy_functions else "tools"
            raise bad_request(f"Invalid value for '{param}': {error}", param, "invalid_value") from error
        return {"grammar": grammar, "tools": tools, "tool_calls": mode}

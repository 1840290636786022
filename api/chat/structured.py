"""Structured output fields (OpenAI's): `response_format`, `tools`, `tool_choice`, `parallel_tool_calls`.

Each is checked when the request is read: a schema the engine cannot enforce with `strict: true`
is a 400 naming the keyword (with `strict` false or absent, such keywords are ignored), and the
grammar the worker will run is built here (api/chat/grammars.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from api.chat.grammars import answer_grammar, tools_grammar
from api.errors import bad_request
from api.sampling_protocol import StrictModel

# OpenAI's limits: function and schema names, and tools per request.
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
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


class Tool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(StrictModel):
    name: str
    arguments: str


class ToolCallMessage(StrictModel):
    """A call in an assistant message sent back in a later turn."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class StructuredOutputFields(StrictModel):
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _choice_among_tools(self) -> StructuredOutputFields:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) < len(names):
            raise bad_request("Function names in tools must be unique.", "tools", "invalid_value")
        if not self.tools and self.tool_choice not in (None, "none"):
            raise bad_request("tool_choice is only allowed when tools are specified.", "tool_choice", "invalid_value")
        if not self.tools and self.parallel_tool_calls is not None:
            raise bad_request(
                "parallel_tool_calls is only allowed when tools are specified.", "parallel_tool_calls", "invalid_value"
            )
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise bad_request(
                f"tool_choice names the function '{self.tool_choice.function.name}', which is not in tools.",
                "tool_choice",
                "invalid_value",
            )
        return self

    @property
    def tool_mode(self) -> Literal["auto", "required", "named"] | None:
        """How the answer may call tools; None when it may not (no tools, or tool_choice none)."""
        if not self.tools or self.tool_choice == "none":
            return None
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

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
        named = self.tool_choice.function.name if mode == "named" else None
        tools = [t.model_dump(exclude_none=True) for t in self.tools]
        parallel = self.parallel_tool_calls is not False
        try:
            grammar = tools_grammar(tools, mode, parallel, named, answer)
        except ValueError as error:
            raise bad_request(f"Invalid value for 'tools': {error}", "tools", "invalid_value") from error
        return {"grammar": grammar, "tools": tools, "tool_calls": mode}

"""Structured output fields (OpenAI's): `response_format`, `tools`, `tool_choice`, `parallel_tool_calls`,
and the deprecated `functions` and `function_call` (run as tools and tool_choice, one call at most).

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
    # OpenAI's deprecated spellings of tools and tool_choice, still sent by older LangChain and
    # scripts; such a request is answered in their shape too (`function_call`, api/chat/render.py).
    functions: list[FunctionDefinition] | None = Field(None, max_length=MAX_TOOLS)
    function_call: Literal["none", "auto"] | FunctionName | None = None

    @model_validator(mode="after")
    def _choice_among_tools(self) -> StructuredOutputFields:
        self._check_legacy_fields()
        tools_param = "functions" if self.legacy_functions else "tools"
        choice_param = "function_call" if self.legacy_functions else "tool_choice"
        names = [f.name for f in self._functions]
        if len(set(names)) < len(names):
            raise bad_request(f"Function names in {tools_param} must be unique.", tools_param, "invalid_value")
        if not self.tools and self.tool_choice not in (None, "none"):
            raise bad_request("tool_choice is only allowed when tools are specified.", "tool_choice", "invalid_value")
        choice = self._choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise bad_request(
                f"{choice_param} names the function '{choice.function.name}', which is not in {tools_param}.",
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
    def _functions(self) -> list[FunctionDefinition]:
        """The functions offered, whichever field they came in."""
        if self.functions is not None:
            return self.functions
        return [t.function for t in self.tools or []]

    @property
    def _choice(self) -> Literal["none", "auto", "required"] | NamedToolChoice | None:
        """tool_choice, or function_call as the tool_choice it stands for."""
        if isinstance(self.function_call, FunctionName):
            return NamedToolChoice(type="function", function=self.function_call)
        return self.function_call or self.tool_choice

    @property
    def tool_mode(self) -> Literal["auto", "required", "named"] | None:
        """How the answer may call tools; None when it may not (no tools, or tool_choice none)."""
        choice = self._choice
        if not self._functions or choice == "none":
            return None
        if isinstance(choice, NamedToolChoice):
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
        named = self._choice.function.name if mode == "named" else None
        tools = [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in self._functions]
        # OpenAI's legacy answer holds one function_call, never several.
        parallel = self.parallel_tool_calls is not False and not self.legacy_functions
        try:
            grammar = tools_grammar(tools, mode, parallel, named, answer)
        except ValueError as error:
            param = "functions" if self.legacy_functions else "tools"
            raise bad_request(f"Invalid value for '{param}': {error}", param, "invalid_value") from error
        return {"grammar": grammar, "tools": tools, "tool_calls": mode}

"""llguidance grammars for structured output: a JSON schema, or tool calls (contracts.tool_markup).

Built and checked here, at the HTTP edge, so a schema the engine cannot enforce is a 400 naming
what it lacks (strict), never a silently unconstrained answer; the worker only runs them.
"""

from __future__ import annotations

import json

import llguidance

from contracts.tool_markup import AFTER_JSON, BEFORE_JSON, OPEN, SEPARATOR, call_head, custom_head

# Whitespace between JSON tokens of an answer: up to 4 characters at each place (none is fine), so
# a small model cannot pad its way to max_tokens. Tool calls are compact (no whitespace at all).
ANSWER_WHITESPACE = r"[\x20\x0A\x0D\x09]{1,4}"
# What a function without `parameters` takes: no arguments ({}).
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
# Free text before a call, which cannot itself contain the start of a call.
_TEXT = r"TEXT: /(.|\n)*/ & ~/(.|\n)*" + OPEN.replace("/", "\\/") + r"(.|\n)*/"


def checked(grammar: str) -> str:
    """`grammar`, or ValueError with what llguidance cannot compile or enforce in it."""
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise ValueError(f"the schema cannot be enforced: {error}")
    return grammar


def _schema(schema: dict, strict: bool, compact: bool) -> dict:
    """The schema with llguidance's options: not strict ignores keywords it cannot enforce."""
    options: dict = {"lenient": not strict}
    options |= {"whitespace_flexible": False} if compact else {"whitespace_pattern": ANSWER_WHITESPACE}
    return {**schema, "x-guidance": options}


def answer_grammar(schema: dict, strict: bool) -> str:
    """An answer that is one JSON value valid against `schema`."""
    return checked(llguidance.LLMatcher.grammar_from_json_schema(_schema(schema, strict, compact=False)))


def _lark_string(text: str) -> str:
    return json.dumps(text)


def _regex_rule(pattern: str) -> str:
    """`pattern` as a lark regex terminal (its unescaped slashes escaped)."""
    out, escaped = [], False
    for char in pattern:
        out.append("\\/" if char == "/" and not escaped else char)
        escaped = char == "\\" and not escaped
    return "/" + "".join(out) + "/"


def custom_input_grammar(format_: dict | None) -> str | None:
    """The lark grammar a custom tool's input must match (OpenAI's `format`: lark or regex), or None
    for free text; ValueError with what llguidance cannot read in it."""
    if not format_ or format_["type"] == "text":
        return None
    grammar = format_["grammar"]
    lark = grammar["definition"] if grammar["syntax"] == "lark" else "start: " + _regex_rule(grammar["definition"])
    error = llguidance.LLMatcher.validate_grammar(json.dumps({"grammars": [{"lark_grammar": lark}]}))
    if error:
        raise ValueError(f"its {grammar['syntax']} grammar cannot be used: {error.strip()}")
    return lark


def _call_rule(index: int, tool: dict, inputs: list[dict]) -> list[str]:
    """The rules of one tool's call, from after its opening tag to its closing tag; a custom tool's
    input grammar goes into `inputs` (a grammar of its own, referenced by name)."""
    if tool["type"] == "custom":
        custom = tool["custom"]
        head = _lark_string(custom_head(custom["name"]))
        try:
            lark = custom_input_grammar(custom.get("format"))
        except ValueError as error:
            raise ValueError(f"custom tool '{custom['name']}': {error}") from None
        if lark is None:  # free text, up to the closing tag
            return [
                f"call_{index}: {head} input_{index}",
                f"input_{index}[lazy]: /(.|\\n)*/ {_lark_string(AFTER_JSON)}",
            ]
        inputs.append({"name": f"input_{index}", "lark_grammar": lark})
        return [f"call_{index}: {head} @input_{index} {_lark_string(AFTER_JSON)}"]
    function = tool["function"]
    parameters = _schema(function.get("parameters") or NO_PARAMETERS, bool(function.get("strict")), compact=True)
    return [
        f"call_{index}: {_lark_string(call_head(function['name']))} %json {json.dumps(parameters)} "
        f'"}}" {_lark_string(AFTER_JSON)}'
    ]


def tool_name(tool: dict) -> str:
    """The name of a chat tool (a function or a custom tool)."""
    return tool[tool["type"]]["name"]


def tools_grammar(
    tools: list[dict], mode: str, parallel: bool, named: str | None = None, answer: tuple[dict, bool] | None = None
) -> str:
    """Output holding tool calls of `tools` (OpenAI's chat tools: functions, with `strict`, and
    custom tools, whose input is free text or follows their lark or regex grammar).

    `auto`: free text, or text followed by calls (the first `<tool_call>` starts them, and from
    there the output is calls only); with `answer` (a response_format schema) the alternative to
    calls is that JSON answer instead of free text. `required`: one call or more. `named`: one call
    of that tool. Without `parallel`, at most one call.
    """
    offered = [t for t in tools if mode != "named" or tool_name(t) == named]
    inputs: list[dict] = []
    rules = [line for index, tool in enumerate(offered) for line in _call_rule(index, tool, inputs)]
    lines = [
        "call: " + " | ".join(f"call_{i}" for i in range(len(offered))),
        *rules,
        f"more: ({_lark_string(SEPARATOR + OPEN + BEFORE_JSON)} call)*" if parallel and mode != "named" else "more: ",
    ]
    calls = f"{_lark_string(OPEN + BEFORE_JSON)} call more"
    if mode == "auto" and answer is None:
        lines += [
            "start: TEXT | lead " + _lark_string(BEFORE_JSON) + " call more",
            f"lead[lazy]: TEXT {_lark_string(OPEN)}",
            _TEXT,
        ]
    elif mode == "auto":
        lines += [f"start: {calls} | answer", "answer: %json " + json.dumps(_schema(answer[0], answer[1], False))]
    else:
        lines += [f"start: {calls}"]
    return checked(json.dumps({"grammars": [{"lark_grammar": "\n".join(lines)}, *inputs]}))

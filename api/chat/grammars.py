"""llguidance grammars for structured output: a JSON schema, or tool calls (contracts.tool_markup).

Built and checked here, at the HTTP edge, so a schema the engine cannot enforce is a 400 naming
what it lacks (strict), never a silently unconstrained answer; the worker only runs them.
"""

from __future__ import annotations

import json

import llguidance

from contracts.tool_markup import AFTER_JSON, BEFORE_JSON, OPEN, SEPARATOR, call_head

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


def tools_grammar(
    tools: list[dict], mode: str, parallel: bool, named: str | None = None, answer: tuple[dict, bool] | None = None
) -> str:
    """Output holding tool calls of `tools` (OpenAI function definitions, with `strict`).

    `auto`: free text, or text followed by calls (the first `<tool_call>` starts them, and from
    there the output is calls only); with `answer` (a response_format schema) the alternative to
    calls is that JSON answer instead of free text. `required`: one call or more. `named`: one call
    of that function. Without `parallel`, at most one call.
    """
    functions = [t["function"] for t in tools if mode != "named" or t["function"]["name"] == named]
    rules = [
        f"call_{i}: {_lark_string(call_head(f['name']))} %json "
        + json.dumps(_schema(f.get("parameters") or NO_PARAMETERS, bool(f.get("strict")), compact=True))
        + ' "}"'
        for i, f in enumerate(functions)
    ]
    lines = [
        "call_json: " + " | ".join(f"call_{i}" for i in range(len(functions))),
        *rules,
        f"call_end: call_json {_lark_string(AFTER_JSON)}",
        f"more: ({_lark_string(SEPARATOR + OPEN + BEFORE_JSON)} call_end)*"
        if parallel and mode != "named"
        else "more: ",
    ]
    calls = f"{_lark_string(OPEN + BEFORE_JSON)} call_end more"
    if mode == "auto" and answer is None:
        lines += [
            "start: TEXT | lead " + _lark_string(BEFORE_JSON) + " call_end more",
            f"lead[lazy]: TEXT {_lark_string(OPEN)}",
            _TEXT,
        ]
    elif mode == "auto":
        lines += [f"start: {calls} | answer", "answer: %json " + json.dumps(_schema(answer[0], answer[1], False))]
    else:
        lines += [f"start: {calls}"]
    return checked(llguidance.LLMatcher.grammar_from_lark("\n".join(lines)))

"""How tool calls are written in a model's output and prompts (Hermes style, for models with no format of their own).

    <tool_call>
    {"name":"get_weather","arguments":{"city":"Paris"}}
    </tool_call>

A custom tool (OpenAI's freeform tools: its input is text, free or in a grammar) is called with its
input as it is, on the lines after its name:

    <tool_call>
    {"name":"apply_patch"}
    *** Begin Patch
    ...
    </tool_call>

Calls follow each other separated by a newline. The API's grammars force exactly this text (compact
JSON, `name` first), the worker reads calls back from it, and past calls in a conversation are
rendered the same way, so the model sees its own format.
"""

from __future__ import annotations

import json

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# What precedes the JSON of a call (after OPEN), and what follows it.
BEFORE_JSON = "\n"
AFTER_JSON = "\n" + CLOSE
SEPARATOR = "\n"


def call_head(name: str) -> str:
    """The JSON of a call up to its arguments."""
    return '{"name":' + json.dumps(name) + ',"arguments":'


def custom_head(name: str) -> str:
    """A custom tool's call up to its input."""
    return '{"name":' + json.dumps(name) + "}\n"


def custom_call_text(name: str, text: str) -> str:
    """A whole call of a custom tool as the model writes it."""
    return OPEN + BEFORE_JSON + custom_head(name) + text + AFTER_JSON


def call_text(name: str, arguments: str) -> str:
    """A whole call as the model writes it; `arguments` (JSON text) is made compact when it parses."""
    try:
        arguments = json.dumps(json.loads(arguments), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        pass
    return OPEN + BEFORE_JSON + call_head(name) + arguments + "}" + AFTER_JSON

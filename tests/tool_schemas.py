"""JSON schemas and tools the structured-output tests share (test modules never import each other)."""

from __future__ import annotations

# Every value bounded, so even the tiny random model's constrained answer closes within a few tokens.
BOUNDED = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "digit": {"type": "integer", "minimum": 0, "maximum": 9},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["ok", "digit", "color"],
    "additionalProperties": False,
}
PICK = {"type": "function", "function": {"name": "pick", "parameters": BOUNDED}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CAPITAL = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}

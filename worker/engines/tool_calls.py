"""Reads tool calls out of a row's text as it is generated (the markup of contracts.tool_markup).

The row's grammar guarantees the text's shape, so a small state machine over characters is enough:
text before a call is content (a suffix that may start a call's opening tag is held back until it
is clear), a call's head gives its name, then each character of its arguments is an `arguments`
fragment until their braces close; a custom tool's input is a fragment up to the call's closing tag
(a suffix that may start the tag is held back). Streamed fragments and the final `arguments` are the
same text.
"""

from __future__ import annotations

import re
import secrets
import string

from contracts.events import ToolCall, ToolCallDelta
from contracts.tool_markup import AFTER_JSON, OPEN

_HEAD = re.compile(r'\s*\{"name":"([A-Za-z0-9_-]+)"(,"arguments":|\}\n)')
_ALPHABET = string.ascii_letters + string.digits


def call_id() -> str:
    """An id in OpenAI's shape: call_ and 24 random letters and digits."""
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def _held_prefix(text: str, tag: str) -> int:
    """How many of `text`'s last characters may be the start of `tag` (held back until it is clear)."""
    return next((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-n:])), 0)


class ToolCallParser:
    """Feed text in; get content text back and the tool-call deltas it completed.

    `forced`: the answer is calls only (tool_choice required or a named function), so no text of it
    is content, not even the start of a tag that max_tokens cut before it was whole.
    """

    def __init__(self, forced: bool = False) -> None:
        self.forced = forced
        self.calls: list[ToolCall] = []  # complete ones
        self._state = "text"
        self._buffer = ""
        self._current: ToolCall | None = None
        self._depth = 0
        self._in_string = False
        self._escaped = False

    @property
    def in_call(self) -> bool:
        """True once the output has begun its first call (it holds only calls from then on)."""
        return bool(self.calls) or self._current is not None or self._state != "text"

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._buffer += text
        content, deltas = "", []
        while self._buffer:
            before = (self._state, len(self._buffer))
            if self._state == "text":
                content += self._text()
            elif self._state == "head":
                self._head(deltas)
            elif self._state == "arguments":
                self._arguments(deltas)
            elif self._state == "input":
                self._input(deltas)
            else:
                self._tail()
            if (self._state, len(self._buffer)) == before:
                break  # waiting for more text
        return content, deltas

    @property
    def unfinished(self) -> ToolCall | None:
        """The call being written, as far as it came (the output ended inside it)."""
        return self._current.model_copy() if self._current is not None else None

    def finish(self) -> str:
        """The output ended: held-back text that never became a call is content."""
        held, self._buffer = self._buffer, ""
        return held if self._state == "text" and not self.in_call and not self.forced else ""

    def _text(self) -> str:
        start = self._buffer.find(OPEN)
        if start >= 0:
            content, self._buffer = self._buffer[:start], self._buffer[start + len(OPEN) :]
            self._state = "head"
            return "" if self.calls or self.forced else content
        keep = _held_prefix(self._buffer, OPEN)
        content, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
        # Between calls only separators can come (the grammar allows nothing else): not content.
        return "" if self.calls or self.forced else content

    def _head(self, deltas: list[ToolCallDelta]) -> None:
        match = _HEAD.match(self._buffer)
        if match is None:
            return
        kind = "function" if match.group(2).startswith(",") else "custom"
        self._current = ToolCall(id=call_id(), name=match.group(1), arguments="", type=kind)
        delta = ToolCallDelta(index=len(self.calls), id=self._current.id, name=self._current.name, type=kind)
        deltas.append(delta)
        self._buffer = self._buffer[match.end() :]
        self._state = "arguments" if kind == "function" else "input"
        self._depth, self._in_string, self._escaped = 0, False, False

    def _input(self, deltas: list[ToolCallDelta]) -> None:
        """A custom tool's input, up to the call's closing tag."""
        end = self._buffer.find(AFTER_JSON)
        if end >= 0:
            fragment, self._buffer = self._buffer[:end], self._buffer[end + len(AFTER_JSON) :]
        else:
            keep = _held_prefix(self._buffer, AFTER_JSON)
            fragment, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
        if fragment:
            self._current.arguments += fragment
            deltas.append(ToolCallDelta(index=len(self.calls), arguments=fragment, type="custom"))
        if end >= 0:
            self.calls.append(self._current)
            self._current = None
            self._state = "text"

    def _arguments(self, deltas: list[ToolCallDelta]) -> None:
        end = None
        for position, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = position + 1
                    break
        fragment = self._buffer if end is None else self._buffer[:end]
        self._buffer = "" if end is None else self._buffer[end:]
        self._current.arguments += fragment
        deltas.append(ToolCallDelta(index=len(self.calls), arguments=fragment))
        if end is not None:
            self.calls.append(self._current)
            self._current = None
            self._state = "tail"

    def _tail(self) -> None:
        """Swallow the call's closing brace and tag."""
        closing = "}" + AFTER_JSON
        end = self._buffer.find(closing)
        if end < 0:
            return
        self._buffer = self._buffer[end + len(closing) :]
        self._state = "text"

"""Reads a thinking model's reasoning out of a row's text as it is generated: DeepSeek-R1's and
Qwen3's `<think>` … `</think>`.

A model thinks when its chat template knows the closing tag (it writes it, or strips earlier turns'
thinking at it). Its output then starts inside the thinking when the prompt ends with the opening
tag (DeepSeek-R1's generation prompt), else the thinking is there only when the output opens it
(Qwen3, after leading whitespace). What comes before the closing tag is reasoning, what follows it
the answer; whitespace around either is dropped (the `\\n` after `<think>`, the `\\n\\n` after
`</think>`), and a suffix that may start the closing tag is held back until it is clear. Output that
does not open the thinking is all answer.
"""

from __future__ import annotations

from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Where a thinking row's reasoning starts: the prompt opened it, or the output may open it.
ThinkingStart = Literal["opened", "may_open"]


def thinks(chat_template: str) -> bool:
    """Whether a model with this chat template thinks in `<think>` tags."""
    return THINK_CLOSE in chat_template


def thinking_start(chat_template: str, prompt_text: str) -> ThinkingStart | None:
    """How a chat prompt's output may think (None: the model does not think)."""
    if not thinks(chat_template):
        return None
    return "opened" if prompt_text.rstrip().endswith(THINK_OPEN) else "may_open"


def _held_prefix(text: str, tag: str) -> int:
    """How many of `text`'s last characters may be the start of `tag`."""
    return next((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-n:])), 0)


class ReasoningParser:
    """Feed a row's text in, a token's at a time; get back its reasoning and its answer text.

    `reasoning_tokens`: the tokens of the thinking, its tags included (0 when the output did not think).
    """

    def __init__(self, start: ThinkingStart) -> None:
        self.thought = start == "opened"  # whether the output thinks
        self._state = "reasoning" if self.thought else "start"
        self._buffer = ""
        self._fed = 0  # tokens fed before the thinking ended
        self._reasoned = False  # whether any reasoning text came (whitespace before it is dropped)

    @property
    def thinking(self) -> bool:
        """True while the output may still be (or is) reasoning."""
        return self._state in ("start", "reasoning")

    @property
    def reasoning_tokens(self) -> int:
        return self._fed if self.thought else 0

    def feed(self, text: str) -> tuple[str, str]:
        """One token's text: (reasoning, answer) it completes."""
        if self.thinking:
            self._fed += 1
        self._buffer += text
        reasoning, answer = "", ""
        while self._buffer:
            before = (self._state, len(self._buffer))
            if self._state == "start":
                self._start()
            elif self._state == "reasoning":
                reasoning += self._reasoning()
            elif self._state == "after":
                self._after()
            else:
                answer, self._buffer = answer + self._buffer, ""
            if (self._state, len(self._buffer)) == before:
                break  # waiting for more text
        return reasoning, answer

    def feed_token(self, token: int, text: str) -> tuple[str, str]:
        """A token and its text, as the Row feeds its reader (the tags are text: the id is not needed)."""
        return self.feed(text)

    def finish(self) -> tuple[str, str]:
        """The output ended: held-back text is reasoning (inside the thinking) or answer."""
        held, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return held.rstrip(), ""
        return "", held if self._state in ("start", "answer") else ""

    def _start(self) -> None:
        stripped = self._buffer.lstrip()
        if stripped.startswith(THINK_OPEN):
            self.thought, self._state = True, "reasoning"
            self._buffer = stripped[len(THINK_OPEN) :]
        elif not THINK_OPEN.startswith(stripped):
            self._state = "answer"  # no thinking: the whole output is the answer

    def _reasoning(self) -> str:
        if not self._reasoned:
            self._buffer = self._buffer.lstrip()
        if not self._buffer.strip() and THINK_CLOSE not in self._buffer:
            return ""  # whitespace only: it may end the reasoning
        end = self._buffer.find(THINK_CLOSE)
        if end >= 0:
            text, self._buffer = self._buffer[:end], self._buffer[end + len(THINK_CLOSE) :]
            self._state = "after"
            self._reasoned = True
            return text.rstrip()
        keep = _held_prefix(self._buffer, THINK_CLOSE)
        body = self._buffer[: len(self._buffer) - keep]
        released = body.rstrip()
        self._buffer = self._buffer[len(released) :]
        self._reasoned = self._reasoned or bool(released)
        return released

    def _after(self) -> None:
        self._buffer = self._buffer.lstrip()
        if self._buffer:
            self._state = "answer"

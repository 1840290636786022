"""Reads gpt-oss's reasoning out of its harmony output, token by token: the `analysis` channel's
messages are reasoning, the others' the answer.

After the generation prompt (`<|start|>assistant`) a gpt-oss answer reads
`<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>`.
Harmony's markers are special tokens, which the detokenizer drops from the text, so the reader
follows the token ids: a message's header (its role, a ` to=…` recipient, the channel after
`<|channel|>`, a `<|constrain|>` format) runs up to `<|message|>`, its content up to `<|end|>`, and
`<|start|>` opens the next. Only the channel's first word counts (`commentary to=functions.f` is
`commentary`). Content of the `analysis` channel is reasoning; of `final`, `commentary` (the
preambles gpt-oss writes for the user) or any other channel, answer text: nothing the model writes
for the user is lost. Headers and markers are neither. Two messages of the same kind are joined by a
blank line. `<|return|>` and `<|call|>` end the output as stop tokens; `<|end|>` does not.

Output that does not start with a header (a model that writes text straight away) is all answer:
text at the start is held while it may be a recipient (` to=…`) before `<|channel|>`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ANALYSIS = "analysis"
RECIPIENT = "to="
SEPARATOR = "\n\n"  # between two messages of the same kind


@dataclass(frozen=True)
class HarmonyTokens:
    """The ids of harmony's structure tokens in a model's vocabulary."""

    start: int
    end: int
    message: int
    channel: int
    constrain: int


def harmony_tokens(chat_template: str, encode: Callable[[str], object]) -> HarmonyTokens | None:
    """A harmony model's structure tokens, when its chat template writes channels (None: it does not
    speak harmony, or its tokenizer lacks one of the tokens as a single token)."""
    if "<|channel|>" not in chat_template:
        return None
    ids = {}
    for name in ("start", "end", "message", "channel", "constrain"):
        encoded = list(encode(f"<|{name}|>"))
        if len(encoded) != 1:
            log.warning("harmony token is not one token; its reasoning is not read out", extra={"token": name})
            return None
        ids[name] = int(encoded[0])
    return HarmonyTokens(**ids)


class HarmonyReader:
    """Feed a row's tokens in with their text; get back the reasoning and the answer text.

    `reasoning_tokens`: the tokens of the analysis messages, their headers and `<|end|>` included.
    """

    def __init__(self, tokens: HarmonyTokens) -> None:
        self.tokens = tokens
        self.thought = False  # whether an analysis message began
        self._state = "start"  # start, header, channel, content, between, plain
        self._held = ""  # text at the start, until it is clearly a header or the answer
        self._channel = ""
        self._wrote = {"reasoning": False, "answer": False}
        self._separate = False  # the message's content is the second of its kind: it opens with a blank line
        self._counted = 0  # tokens of finished analysis messages
        self._message_tokens = 0  # tokens of the message being read

    @property
    def reasoning_tokens(self) -> int:
        current = self._message_tokens if self._channel == ANALYSIS else 0
        return self._counted + current

    def feed_token(self, token: int, text: str) -> tuple[str, str]:
        """One token and its text: (reasoning, answer) it completes."""
        if self._state == "plain":
            return "", text
        self._message_tokens += 1
        if token == self.tokens.channel:
            self._state, self._channel, self._held = "channel", "", ""
        elif token == self.tokens.constrain:
            self._state, self._held = "header", ""
        elif token == self.tokens.message:
            self._open_content()
        elif token == self.tokens.end:
            self._close_message()
            self._state = "between"
        elif token == self.tokens.start:
            if self._state != "between":
                self._close_message(count_this=False)
            self._state = "header"
        else:
            return self._text(text)
        return "", ""

    def finish(self) -> tuple[str, str]:
        """The output ended: text held at its start was the answer."""
        held, self._held = self._held, ""
        return "", held if self._state == "start" else ""

    def _text(self, text: str) -> tuple[str, str]:
        if self._state == "start":
            self._held += text
            stripped = self._held.lstrip()
            if stripped.startswith(RECIPIENT) or RECIPIENT.startswith(stripped):
                return "", ""  # a recipient before the channel, maybe
            held, self._held, self._state = self._held, "", "plain"
            return "", held
        if self._state == "channel":
            self._channel += text
        elif self._state == "content":
            return self._content(text)
        elif self._state == "between":
            return "", text  # text outside any message: the model's answer all the same
        return "", ""  # a header's role, recipient or format

    def _open_content(self) -> None:
        self._channel = self._channel.strip().split(" ")[0] if self._channel.strip() else ""
        self.thought = self.thought or self._channel == ANALYSIS
        self._state, self._held = "content", ""
        self._separate = self._wrote[self._kind]

    def _content(self, text: str) -> tuple[str, str]:
        if not text:
            return "", ""
        if self._separate:
            text, self._separate = SEPARATOR + text, False
        self._wrote[self._kind] = True
        return (text, "") if self._kind == "reasoning" else ("", text)

    @property
    def _kind(self) -> str:
        return "reasoning" if self._channel == ANALYSIS else "answer"

    def _close_message(self, count_this: bool = True) -> None:
        """A message ended (`count_this`: its last token, `<|end|>`, is its own, not the next's)."""
        tokens = self._message_tokens if count_this else self._message_tokens - 1
        if self._channel == ANALYSIS:
            self._counted += tokens
        self._message_tokens = 0 if count_this else 1
        self._channel = ""

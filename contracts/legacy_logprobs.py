"""A completion choice's `logprobs` in OpenAI's legacy shape, built whole or chunk by chunk.

{tokens, token_logprobs, top_logprobs, text_offset}: `top_logprobs[i]` maps the most likely tokens
at position i, and always the chosen one, to their logprobs (up to logprobs + 1 entries); a prompt's
first token (with echo) has null for both. `text_offset[i]` is where token i starts in the choice's
text, in characters; a token holding part of a character starts where that character does.
"""

from __future__ import annotations

import codecs

from contracts.events import TokenLogprob


class LegacyLogprobs:
    """Offsets run on over the pieces, so a stream's chunks joined equal the whole answer's."""

    def __init__(self) -> None:
        self.restart(0)

    def restart(self, offset: int) -> None:
        """The next token starts at character `offset` (after an echoed prompt: the prompt's length)."""
        self.offset = offset
        self._characters = codecs.getincrementaldecoder("utf-8")(errors="ignore")

    def piece(self, entries: list[TokenLogprob]) -> dict:
        body: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for entry in entries:
            body["tokens"].append(entry.token)
            body["token_logprobs"].append(entry.logprob)
            body["top_logprobs"].append(_alternatives(entry))
            body["text_offset"].append(self.offset)
            self.offset += len(self._characters.decode(bytes(entry.bytes)))
        return body


def _alternatives(entry: TokenLogprob) -> dict[str, float] | None:
    if entry.top_logprobs is None:
        return None
    choices = {top.token: top.logprob for top in entry.top_logprobs}
    choices.setdefault(entry.token, entry.logprob)
    return dict(sorted(choices.items(), key=lambda item: -item[1]))


def choice_logprobs(
    logprobs: list[TokenLogprob] | None, prompt_logprobs: list[TokenLogprob] | None, echoed: str | None
) -> dict | None:
    """A whole choice's logprobs: the echoed prompt's tokens first, then the output's."""
    if logprobs is None:
        return None
    builder = LegacyLogprobs()
    body = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    if echoed is not None and prompt_logprobs is not None:
        body = builder.piece(prompt_logprobs)
        builder.restart(len(echoed))
    for key, values in builder.piece(logprobs).items():
        body[key] += values
    return body

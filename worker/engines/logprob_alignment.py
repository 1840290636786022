"""Which tokens' logprobs go with a piece of released text.

A row's text is released later than its tokens are generated: a multi-byte character appears once
its last byte's token came, and text that may start a stop string is held back. Each token's
logprob entry waits until the text it decoded to is released, and goes out with that piece, so a
stream's chunks carry the logprobs of the text they carry. Tokens that decoded to nothing yet
(part of a character) go with the next token that completes text.

Only content text has logprobs (as OpenAI's): when a row's output turns into tool calls, its
content ends there, and the tokens that write the calls get no entries.
"""

from __future__ import annotations

from collections import deque

from contracts.events import TokenLogprob


class LogprobAligner:
    def __init__(self) -> None:
        self._pending: deque[tuple[TokenLogprob, int, int]] = deque()  # entry, start, end in the decoded text
        self._decoded = 0  # characters the tokens decoded to
        self._released = 0  # characters released so far
        self._ended = False  # the content ended: later tokens are not content

    def add(self, entry: TokenLogprob, chars: int) -> None:
        """A token that decoded to `chars` new characters (before stop strings held any back)."""
        if self._ended:
            return
        self._pending.append((entry, self._decoded, self._decoded + chars))
        self._decoded += chars

    def release(self, chars: int) -> list[TokenLogprob]:
        """`chars` more characters were released: the entries of the tokens whose text is now all out."""
        self._released += chars
        last = -1
        for i, (_, start, end) in enumerate(self._pending):
            if end > self._released:
                break
            if end > start:
                last = i
        return [self._pending.popleft()[0] for _ in range(last + 1)]

    def finish(self, chars: int) -> list[TokenLogprob]:
        """The content ended (the row did, or its tool calls began) after releasing `chars` more
        characters: the entries still waiting, short of tokens whose text lies wholly past the
        released text (a stop string or a call's markup came there); none once it ended before."""
        if self._ended:
            return []
        self._ended = True
        self._released += chars
        if self._released >= self._decoded:
            taken = len(self._pending)
        else:
            taken = 1 + max((i for i, (_, start, _) in enumerate(self._pending) if start < self._released), default=-1)
        entries = [self._pending.popleft()[0] for _ in range(taken)]
        self._pending.clear()
        return entries

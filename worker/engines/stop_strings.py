"""Server-side stop strings: text is released only once it cannot be the start of a stop."""

from __future__ import annotations


class StopStringFilter:
    """Feeds decoded text in; returns what may be shown and whether a stop string was hit."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> str:
        """Add text; returns the part that is safe to release now."""
        if self.stopped or not text:
            return ""
        self.held += text
        found = [(index, stop) for stop in self.stops if (index := self.held.find(stop)) >= 0]
        cut = min(found)[0] if found else -1
        if cut >= 0:
            self.stopped = True
            self.matched = min(found)[1]
            released, self.held = self.held[:cut], ""
            return released
        keep = self._longest_partial_stop()
        released = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        return released

    def flush(self) -> str:
        """Release what was held back (the sequence ended without completing a stop)."""
        released, self.held = self.held, ""
        return released

    def _longest_partial_stop(self) -> int:
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.held)), best, -1):
                if self.held.endswith(stop[:size]):
                    best = size
                    break
        return best

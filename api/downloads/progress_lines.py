"""Download progress as Foundry Local streams it, readable by Foundry's SDKs too.

Each progress line is Foundry's documented `("file name", fraction)` (fraction of that file)
followed by the overall percentage `NN.N%`, which Foundry's Python SDK reads with a regex; the
stream ends with `("", 1)` and the final JSON object. The final object carries Foundry's
documented keys (Success, ErrorMessage) and the lower-case ones its Python SDK reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from contracts.events import DoneEvent, ErrorEvent, JobEvent, ProgressEvent


def progress_line(file: str, fraction: float, overall: float) -> str:
    return f"({json.dumps(file)}, {round(fraction, 4):g}) {overall * 100:.1f}%\n"


def final_line(success: bool, error_message: str | None) -> str:
    body = {"Success": success, "ErrorMessage": error_message, "success": success, "errorMessage": error_message}
    return json.dumps(body) + "\n"


def download_lines(events: Iterator[tuple[str, JobEvent]]) -> Iterator[str]:
    """Lines for a download job's events, ending with the final JSON object."""
    for _, event in events:
        if isinstance(event, ProgressEvent):
            progress = event.progress
            if progress.current_file:
                yield progress_line(
                    progress.current_file, progress.file_fraction(progress.current_file), progress.fraction
                )
        elif isinstance(event, DoneEvent):
            yield progress_line("", 1, 1)
            yield final_line(True, None)
            return
        elif isinstance(event, ErrorEvent):
            yield final_line(False, event.error.message)
            return

"""Logging for every Ladle process (`ladle serve`, `ladle worker`, the API): text or JSON lines."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from contracts.settings import Settings

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A handler installed here is marked, so configuring twice (the CLI, then the app) keeps one.
_MARK = "_ladle_handler"


def configure_logging(
    settings: Settings, level: str | int = logging.INFO, record_filter: logging.Filter | None = None
) -> None:
    """Send the root logger's records to stderr, as text or (LADLE_LOG_FORMAT=json) one JSON
    object per line carrying every `extra=` field (job_id, ...) and what `record_filter` adds."""
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if getattr(handler, _MARK, False)]
    if ours:
        if record_filter is not None and not any(type(f) is type(record_filter) for f in ours[0].filters):
            ours[0].addFilter(record_filter)
        return
    handler = logging.StreamHandler()
    setattr(handler, _MARK, True)
    if record_filter is not None:
        handler.addFilter(record_filter)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)

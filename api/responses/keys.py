"""Redis key names of the Responses API, each from one function (as contracts/keys.py does for the rest)."""

from __future__ import annotations

from contracts.keys import PREFIX


def response_key(response_id: str) -> str:
    """Hash of a stored response: `request` (what was asked and its input items) and, once it ended,
    `outcome` (status, output items, usage, error)."""
    return f"{PREFIX}:response:{response_id}"

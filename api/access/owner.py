"""Who is asking: the API key's ID (set by key checking when keys are configured), else None."""

from __future__ import annotations

from flask import g


def current_owner() -> str | None:
    """The requesting key's ID; None when no keys are configured (then everything is visible)."""
    return g.get("api_key_id")

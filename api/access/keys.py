"""The configured API keys, held only as hashes, and the key a request presents.

A key's ID is the SHA-256 of the key (hex): stable across processes and restarts, not secret, and
what Redis records as a job's owner and counts rate limits by. Keys themselves are never stored
or logged.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from contracts.settings import Settings


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def configured_keys(settings: Settings) -> list[str]:
    """LADLE_API_KEYS plus the lines of LADLE_API_KEYS_FILE (blank lines and #-comments skipped)."""
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        try:
            lines = Path(settings.api_keys_file).read_text().splitlines()
        except OSError as error:
            raise ValueError(f"LADLE_API_KEYS_FILE cannot be read: {error}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return keys


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._ids = [key_id(key) for key in keys]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls(configured_keys(settings))

    @property
    def enabled(self) -> bool:
        return bool(self._ids)

    def identify(self, presented: list[str]) -> str | None:
        """The ID of the first presented key that is configured, or None.

        Every configured key is compared (in constant time, on the hashes) whatever matches, so
        the time taken says nothing about which keys exist.
        """
        for key in presented:
            candidate = key_id(key)
            matched = None
            for known in self._ids:
                if hmac.compare_digest(candidate, known):
                    matched = known
            if matched is not None:
                return matched
        return None

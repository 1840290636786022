"""Sealing a request's secret (a download's hub token) for its trip through Redis to a worker.

The API encrypts the token with the deployment's secret key (Fernet: AES-CBC + HMAC) and puts
only the sealed text in the task message; the worker opens it in memory. The key comes from
LADLE_SECRET_KEY, or else from a random key file in the data directory that every process of
one host shares (several hosts set LADLE_SECRET_KEY alike).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from contracts.settings import Settings

KEY_FILE = "secret.key"


class SealError(Exception):
    """A sealed token that this deployment's key cannot open."""


class TokenSeal:
    def __init__(self, secret: str) -> None:
        digest = hashlib.sha256(secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenSeal:
        return cls(settings.secret_key or _key_file_secret(settings.data_dir / KEY_FILE))

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as error:
            raise SealError("the token was sealed with another secret key (set LADLE_SECRET_KEY alike)") from error


def _key_file_secret(path: Path) -> str:
    """The secret in `path`, created (mode 0600, first writer wins, never seen half-written) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # atomic; fails if another process created the key first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()

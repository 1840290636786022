"""The app's OpenAPI document, built from its URL map at import (no server, no Redis connection)."""

from __future__ import annotations

from api.app import create_app
from api.openapi import openapi_document
from contracts.settings import Settings

DOCUMENT = openapi_document(create_app(Settings(redis_url="redis://127.0.0.1:1/0", secret_key="unused")))
# (METHOD, path, operation object) for every operation the document lists.
OPERATIONS = [
    (method.upper(), path, operation) for path, item in DOCUMENT["paths"].items() for method, operation in item.items()
]

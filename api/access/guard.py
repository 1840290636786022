"""Every request but the probes must present a configured API key (when keys are configured).

The key is read from `Authorization: Bearer <key>` (OpenAI, Databricks, Azure serverless),
`api-key: <key>` (Azure OpenAI and Foundry; the Azure SDK sends both) or `x-api-key: <key>`
(Anthropic's SDK and Claude Code). An authenticated request has `flask.g.api_key_id` set to its
key's ID; without keys configured it is None.
"""

from __future__ import annotations

import logging

from flask import Flask, g, request

from api.access.keys import ApiKeys
from api.errors import ApiError

log = logging.getLogger(__name__)

# Routes anyone may call: liveness and readiness probes carry no credentials.
# databricks-sdk reads its host metadata before it sends any token.
OPEN_PATHS = frozenset({"/health", "/ready", "/.well-known/databricks-config"})


def presented_keys() -> list[str]:
    keys = []
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    for header in ("api-key", "x-api-key"):
        if request.headers.get(header, "").strip():
            keys.append(request.headers[header].strip())
    return keys


def install(app: Flask, keys: ApiKeys) -> None:
    """Check the key of every request before any other request hook runs."""
    if not keys.enabled:
        log.warning(
            "No API keys are configured (LADLE_API_KEYS, LADLE_API_KEYS_FILE): anyone who can reach "
            "this API can use every route, jobs and model management included."
        )

    def authenticate() -> None:
        g.api_key_id = None
        if not keys.enabled or request.path in OPEN_PATHS:
            return
        presented = presented_keys()
        g.api_key_id = keys.identify(presented)
        if g.api_key_id is None:
            message = (
                "Incorrect API key provided."
                if presented
                else "No API key provided: send it as 'Authorization: Bearer <key>', 'api-key: <key>' "
                "or 'x-api-key: <key>'."
            )
            raise ApiError(
                401,
                message,
                type="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # Installed before the rate limiter: an unknown caller is never counted.
    app.before_request(authenticate)

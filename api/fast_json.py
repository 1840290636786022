"""JSON responses encoded with orjson, for bodies made mostly of numbers (embedding vectors).

Python's json module writes each float through `repr`: for one 384-dimension embedding that took
longer than the rest of the request's work in the API. orjson writes the same numbers (the
shortest text that reads back as the same double) many times faster. Flask's own provider stays
in use everywhere else.
"""

from __future__ import annotations

import orjson
from flask import Response


def json_response(body: dict, status: int = 200) -> Response:
    """`body` as an application/json response (plain str keys, str/number/list/dict values)."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")

"""MkDocs hook: the `<!-- routes -->` marker in a page becomes the table of every route, built from
the API's own OpenAPI document (the one `GET /openapi.json` serves), so the reference cannot drift
from the code. No server and no Redis connection are needed to build it."""

from __future__ import annotations

import logging

MARKER = "<!-- routes -->"
logging.getLogger("api.access.guard").setLevel(logging.ERROR)  # the app warns it has no keys


def routes_table() -> str:
    """Markdown tables of the routes, one per tag (the surface that serves them)."""
    from api.app import create_app
    from api.openapi import openapi_document
    from contracts.settings import Settings

    document = openapi_document(create_app(Settings(redis_url="redis://127.0.0.1:1/0", secret_key="docs")))
    by_tag: dict[str, list[tuple[str, str, str]]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            tag = (operation.get("tags") or ["other"])[0]
            summary = operation.get("summary", "").replace("|", "\\|")
            by_tag.setdefault(tag, []).append((method.upper(), path, summary))
    sections = []
    for tag in sorted(by_tag):
        rows = "\n".join(f"| `{m}` | `{p}` | {s} |" for m, p, s in sorted(by_tag[tag], key=lambda r: (r[1], r[0])))
        sections.append(f"### {tag}\n\n| Method | Path | What it does |\n|---|---|---|\n{rows}\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Fill the marker of the page that holds one."""
    return markdown.replace(MARKER, routes_table()) if MARKER in markdown else markdown

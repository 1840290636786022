"""The file store and batch store of the API process, built once when the blueprints register."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from contracts.batches import BatchStore
from contracts.file_store import FileStore

EXTENSION = "ladle-batches"


@dataclass(frozen=True)
class BatchStores:
    files: FileStore
    batches: BatchStore


def install(app: Flask) -> None:
    """Build the stores over the API's Redis client (app.extensions['ladle'] must exist)."""
    if EXTENSION in app.extensions:
        return
    services = app.extensions["ladle"]
    client = services.store.client
    app.extensions[EXTENSION] = BatchStores(FileStore(client, services.settings.file_store_dir), BatchStore(client))


def stores() -> BatchStores:
    return current_app.extensions[EXTENSION]

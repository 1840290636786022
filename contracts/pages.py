"""Cursor pagination over a sorted set of IDs (files, batches): OpenAI's `after` + `limit` pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis

Item = TypeVar("Item")
# What an `after` cursor (an ID of a file, batch or job) may look like.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    has_more: bool


def page(
    client: redis.Redis,
    index: str,
    after: str | None,
    limit: int,
    load: Callable[[list[str]], list[Item | None]],
    descending: bool = True,
) -> Page[Item]:
    """Up to `limit` items of the index after the ID `after` (exclusive), in index order.

    `load` turns a run of IDs into items, None for one that is gone or not to be shown (another
    owner's); those are skipped. An `after` that is no longer in the index starts from the top.
    """
    start = 0
    if after:
        rank = client.zrevrank(index, after) if descending else client.zrank(index, after)
        start = 0 if rank is None else rank + 1
    items: list[Item] = []
    chunk = max(limit + 1, 32)
    while True:
        ids = (
            client.zrevrange(index, start, start + chunk - 1)
            if descending
            else client.zrange(index, start, start + chunk - 1)
        )
        if not ids:
            return Page(items, has_more=False)
        names = [i.decode() if isinstance(i, bytes) else i for i in ids]
        for item in load(names):
            if item is None:
                continue
            if len(items) == limit:
                return Page(items, has_more=True)
            items.append(item)
        start += len(ids)

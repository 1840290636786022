"""Listening on the workers' pub/sub channels (cancel, control) from one background thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)


class ChannelListener:
    """Calls `handlers[channel](message)` for messages on the workers' channels (cancel, control)."""

    def __init__(self, client: redis.Redis, handlers: dict[str, Callable[[str], None]]) -> None:
        self.client = client
        self.handlers = handlers
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(*handlers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.5)
            except redis.RedisError:
                log.warning("cancel listener lost redis", exc_info=True)
                time.sleep(1)
                continue
            if message and message["type"] == "message":
                try:
                    self.handlers[message["channel"].decode()](message["data"].decode())
                except Exception:
                    log.exception("worker command failed", extra={"channel": message["channel"]})

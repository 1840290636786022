"""The Sentinels' announcements of a new master (`+switch-master`), counted per process.

A connection to the old master does not learn of a failover by itself: during a partition it is
silent, and an idle one in a pool is reused after the switch, its commands held by TCP until the
old master is reachable again and then run there, in the moment before it notices it lost its
replicas (and lost with its resync). Each process keeps one subscription to the Sentinels'
`+switch-master` channel per watched master and counts the switches; a connection made before the
latest switch is closed before its next command (contracts/redis_connection.py). A switch
announced while this process was away from the Sentinels is missed: connections to the old master
then find out as before, by its READONLY or NOREPLICAS answers.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

log = logging.getLogger(__name__)

SWITCH_CHANNEL = "+switch-master"
# A Sentinel that stopped answering is left after this long without a keepalive reply.
_SENTINEL_TIMEOUT_S = 1.0
_RETRY_PAUSE_S = 0.5


class SwitchWatch:
    """Counts the Sentinels' switches of one master, from a daemon thread started in each process."""

    def __init__(self, sentinels: tuple[tuple[str, int], ...], master_name: str, connection_options: dict) -> None:
        self.sentinels = sentinels
        self.master_name = master_name
        self.connection_options = connection_options
        self.switches = 0
        self._pid: int | None = None
        self._lock = threading.Lock()

    def ensure_watching(self) -> None:
        """Start the subscription in this process (after a fork the parent's thread is not here)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="sentinel-switches", daemon=True).start()

    def _run(self) -> None:
        while True:
            for host, port in self.sentinels:
                try:
                    self._follow(host, port)
                except (redis.RedisError, OSError):
                    continue
            time.sleep(_RETRY_PAUSE_S)

    def _follow(self, host: str, port: int) -> None:
        client = redis.Redis(
            host=host, port=port, socket_connect_timeout=_SENTINEL_TIMEOUT_S, **self.connection_options
        )
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(SWITCH_CHANNEL)
            for message in pubsub.listen():
                if message["type"] == "message" and message["data"].split(b" ", 1)[0] == self.master_name.encode():
                    self.switches += 1
                    log.warning(
                        "the sentinels switched to a new master", extra={"announcement": message["data"].decode()}
                    )
        finally:
            pubsub.close()
            client.close()


_WATCHES: dict[tuple[tuple[tuple[str, int], ...], str], SwitchWatch] = {}
_WATCHES_LOCK = threading.Lock()


def switch_watch(sentinels: tuple[tuple[str, int], ...], master_name: str, connection_options: dict) -> SwitchWatch:
    """The process's watch of `master_name` on these Sentinels (one per pair), watching."""
    key = (sentinels, master_name)
    with _WATCHES_LOCK:
        watch = _WATCHES.get(key)
        if watch is None:
            watch = _WATCHES[key] = SwitchWatch(sentinels, master_name, connection_options)
    watch.ensure_watching()
    return watch

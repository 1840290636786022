"""The one place Ladle makes Redis clients: a plain Redis URL, or a Redis Sentinel service.

`LADLE_REDIS_URL` is either `redis://host:6379/0` (one Redis) or a list of Sentinels in kombu's
form, `sentinel://host1:26379;sentinel://host2:26379` (optionally `sentinel://:password@host:26379/0`,
the password and database being the monitored Redis's), watching the master named by
`LADLE_REDIS_SENTINEL_MASTER`. The same URL serves Celery (kombu's Sentinel transport) and Ladle's
own clients (redis-py's `Sentinel.master_for`), so both follow the master after a failover: a
connection that breaks, or that finds its server demoted to a replica, asks the Sentinels for the
current master on its next command.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
from redis._parsers.base import BaseParser
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from contracts.sentinel_switches import switch_watch
from contracts.settings import Settings

SENTINEL_SCHEME = "sentinel"


class NoReplicasError(redis.ConnectionError):
    """A master refusing writes for want of replicas (`min-replicas-to-write`: it is cut off from
    them, and a failover may be electing a new master). Retried as a lost connection is: on a new
    connection, to whichever server the Sentinels then name master."""


class MasterFollowingConnection(SentinelManagedConnection):
    """A connection to the Sentinels' master that asks them again on every reconnect, and leaves
    a master the Sentinels switched away from before its next command.

    redis-py's own asks only in `connect()`; sending a command on a closed connection reconnects
    through `connect_check_health()` to the address it had, so after a failover each retry went
    back to the demoted master (READONLY, or NOREPLICAS from one cut off) until the retries ran
    out: a worker's events and leases, an API's reads, kombu's BRPOP, all stuck for a minute.
    A connection idle in its pool through a partition of the master could also be used again
    after the failover, its command run on the old master once the partition healed
    (contracts/sentinel_switches.py).
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        manager = self.connection_pool.sentinel_manager
        sentinels = tuple(
            sorted(
                (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                for s in manager.sentinels
            )
        )
        self._switches = switch_watch(sentinels, self.connection_pool.service_name, _keepalive_options())
        self._made_after = self._switches.switches

    def connect_to(self, address: tuple[str, int]) -> None:
        self._made_after = self._switches.switches
        self.host, self.port = address
        super().connect_check_health(check_health=self.connection_pool.check_connection, retry_socket_connect=False)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self._made_after = self._switches.switches
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    def _outdated(self) -> bool:
        return self._sock is not None and self._made_after != self._switches.switches

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        if self._outdated():  # an error, not a quiet reconnect: kombu must see its connection go
            self._leave_old_master()
        super().send_packed_command(command, check_health)

    def can_read(self, timeout: float | None = 0) -> bool:
        if self._outdated():  # a pool checking it out, or a subscription waiting on it
            self._leave_old_master()
        return super().can_read(timeout)

    def _leave_old_master(self) -> None:
        """Close the connection and fail the command with a connection error: retried, it goes to
        the new master on a new connection (redis-py's retry, kombu's reconnect)."""
        self.disconnect()
        raise redis.ConnectionError("the Sentinels switched to a new master")


# redis-py turns each error code into its exception class; NOREPLICAS would be a plain ResponseError,
# never retried, and a worker's event or an API's job record lost with it.
BaseParser.EXCEPTION_CLASSES["NOREPLICAS"] = NoReplicasError

# A connection attempt to a host that is gone fails within this (then the retry policy below
# asks again, by then perhaps for a new master), instead of waiting for the OS's TCP timeout.
_CONNECT_TIMEOUT_S = 2.0
# Sentinels answer "who is the master?" at once or not at all.
_SENTINEL_TIMEOUT_S = 1.0
# A command written to a server that stopped acknowledging it (a network partition) fails after
# this many ms, and an idle connection whose server stopped answering is found dead by keepalive
# probes (after idle + interval x count seconds), instead of either lasting until the partition
# heals: then the command would run on a server that may no longer be the master, and its write
# be lost when a failover's resync discards it. The retry policy then asks for the master anew.
# The cost: a consumer's BRPOP that Redis answered while the consumer was cut off for longer than
# that loses its message with the connection (kombu records a delivery only once it has it).
_UNACKNOWLEDGED_MS = 10_000
_KEEPALIVE_IDLE_S, _KEEPALIVE_INTERVAL_S, _KEEPALIVE_COUNT = 10, 5, 3


def _keepalive_options() -> dict:
    """redis-py's (and kombu's) options that bound how long a dead connection lasts (Linux's TCP
    options; where the OS lacks one, that bound is left out)."""
    wanted = {
        "TCP_USER_TIMEOUT": _UNACKNOWLEDGED_MS,
        "TCP_KEEPIDLE": _KEEPALIVE_IDLE_S,
        "TCP_KEEPINTVL": _KEEPALIVE_INTERVAL_S,
        "TCP_KEEPCNT": _KEEPALIVE_COUNT,
    }
    options = {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}
    return {"socket_keepalive": True, "socket_keepalive_options": options}


def _sentinel_kwargs() -> dict:
    """Options of the connections to the Sentinels: ask each once and move on to the next; the
    master connection's own retries repeat the whole question (redis-py's default would back off
    for seconds per Sentinel, per attempt)."""
    return {
        "socket_timeout": _SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": _SENTINEL_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }


# Waits between retries of a command whose connection failed: short at first (a blip), then
# once a second while Sentinels elect a new master.
_RETRY_BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
# Workers keep retrying this long, so a failover (Sentinel's down-after-milliseconds plus the
# election: a few seconds when tuned, ~35 s with Sentinel's defaults) loses no event or heartbeat.
WORKER_RETRY_S = 60.0
# The API retries briefly, then answers 503 with Retry-After rather than holding the request.
API_RETRY_S = 3.0


@dataclass(frozen=True)
class SentinelService:
    """Where the Sentinels are and what they watch, parsed from a `sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names Sentinels (kombu's `sentinel://h:p;sentinel://h2:p` form)."""
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str, master_name: str) -> SentinelService:
    """The Sentinels a `sentinel://…;sentinel://…` URL lists (26379 when no port is given)."""
    sentinels, db, username, password = [], 0, None, None
    for part in filter(None, (p.strip() for p in url.split(";"))):
        parsed = urlsplit(part)
        if parsed.scheme != SENTINEL_SCHEME or not parsed.hostname:
            raise ValueError(f"not a Sentinel address: {part!r} (expected sentinel://host:port)")
        sentinels.append((parsed.hostname, parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        username = username or (unquote(parsed.username) if parsed.username else None)
        password = password or (unquote(parsed.password) if parsed.password else None)
    if not sentinels:
        raise ValueError("the Sentinel URL lists no Sentinel")
    return SentinelService(tuple(sentinels), master_name, db, username, password)


def retry_within(seconds: float) -> Retry:
    """redis-py's retry policy that keeps retrying a failed connection for about `seconds`."""
    retries, waited = 0, 0.0
    while waited < seconds:
        retries += 1
        waited += _RETRY_BACKOFF.compute(retries)
    return Retry(_RETRY_BACKOFF, retries)


def redis_client(
    settings: Settings,
    retry_for_s: float = WORKER_RETRY_S,
    max_connections: int | None = None,
    connection_wait_s: float = 10.0,
    **options: object,
) -> redis.Redis:
    """A client of Ladle's Redis: the URL's server, or the Sentinels' current master.

    A command whose connection fails (server gone, or demoted to a replica by a failover) is
    retried on a new connection, to the current master, for about `retry_for_s` seconds before
    the error reaches the caller. With `max_connections`, at most that many connections are open
    and a caller waits up to `connection_wait_s` for a free one (the API, whose greenlets would
    otherwise open one each). `options` are more redis-py connection options.
    """
    options = {
        "socket_connect_timeout": _CONNECT_TIMEOUT_S,
        "retry": retry_within(retry_for_s),
        **_keepalive_options(),
        **options,
    }
    if not is_sentinel_url(settings.redis_url):
        if max_connections is None:
            return redis.Redis.from_url(settings.redis_url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=max_connections, timeout=connection_wait_s, **options
        )
        return redis.Redis(connection_pool=pool)
    # redis-py has no blocking Sentinel pool: behind Sentinels the API's connections are not bounded.
    service = parse_sentinel_url(settings.redis_url, settings.redis_sentinel_master)
    sentinel = Sentinel(
        list(service.sentinels),
        sentinel_kwargs=_sentinel_kwargs(),
    )
    return sentinel.master_for(
        service.master_name,
        connection_class=MasterFollowingConnection,
        db=service.db,
        username=service.username,
        password=service.password,
        **options,
    )


def broker_transport_options(settings: Settings) -> dict:
    """What kombu needs beyond the URL: connections that do not outlast a partition, and behind
    Sentinels the master's name."""
    if not is_sentinel_url(settings.redis_url):
        return _keepalive_options()
    return {
        **_keepalive_options(),
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(),
    }

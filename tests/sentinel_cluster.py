"""A real Redis Sentinel deployment for tests: a primary, a replica and three Sentinels (quorum 2)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from cli.embedded_redis import free_port, redis_server_binary

MASTER_NAME = "ladle-test"
# Small, so a failover takes a few seconds: the primary is "down" after 1 s without a reply.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelCluster:
    """redis-server processes: primary, replica (--replicaof), and Sentinels (redis-server --sentinel)."""

    def __init__(self, directory: Path, sentinels: int = 3, quorum: int = 2) -> None:
        self.directory = directory
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.processes: dict[str, subprocess.Popen] = {}
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]

    @property
    def url(self) -> str:
        """The Sentinel URL Ladle is given (kombu's `;`-separated form)."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self, timeout_s: float = 30) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._server("primary", self.primary_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        for index, port in enumerate(self.sentinel_ports):
            self._sentinel(f"sentinel{index}", port)
        self._wait_until_watched(timeout_s)
        return self.url

    def _server(self, name: str, port: int, *extra: str) -> None:
        folder = self.directory / name
        folder.mkdir(exist_ok=True)
        command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        command += ["--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log"), *extra]
        self.processes[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _sentinel(self, name: str, port: int) -> None:
        folder = self.directory / name
        folder.mkdir(exist_ok=True)
        config = folder / "sentinel.conf"  # Sentinel rewrites its config file: one each, writable
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        command = [redis_server_binary(), str(config), "--sentinel"]
        self.processes[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_until_watched(self, timeout_s: float) -> None:
        """Until every Sentinel sees the replica and the other Sentinels (a failover needs both)."""
        deadline = time.monotonic() + timeout_s
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_connect_timeout=1)
            while True:
                try:
                    master = sentinel.sentinel_master(MASTER_NAME)
                    if master["num-slaves"] >= 1 and master["num-other-sentinels"] >= self.sentinel_count - 1:
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Sentinels did not settle; see {self.directory}")
                time.sleep(0.2)
        replica = redis.Redis(port=self.replica_port)
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync with the primary")
            time.sleep(0.1)

    def master_port(self) -> int | None:
        """The port of the master the Sentinels name now (None if none answers)."""
        for port in self.sentinel_ports:
            try:
                address = redis.Redis(port=port, socket_connect_timeout=1).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def replicate_now(self, timeout_ms: int = 5000) -> int:
        """Block until the replica holds every write made so far (Redis's WAIT); replicas that did."""
        return redis.Redis(port=self.primary_port).wait(1, timeout_ms)

    def kill_primary(self) -> None:
        """SIGKILL the primary: no shutdown, no last replication."""
        self.processes["primary"].kill()
        self.processes["primary"].wait()

    def wait_for_failover(self, timeout_s: float = 60) -> int:
        """The replica's port once the Sentinels have promoted it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.master_port() == self.replica_port:
                role = redis.Redis(port=self.replica_port).info("replication")["role"]
                if role == "master":
                    return self.replica_port
            time.sleep(0.1)
        raise RuntimeError(f"no failover within {timeout_s}s; see {self.directory}")

    def force_failover(self, timeout_s: float = 60) -> int:
        """SENTINEL FAILOVER with the master up, whichever server it is: the other's port once it
        is master and the old master a replica (until then both take writes)."""
        old_port = self.master_port()
        new_port = self.replica_port if old_port == self.primary_port else self.primary_port
        sentinel = redis.Redis(host="127.0.0.1", port=self.sentinel_ports[0])
        deadline = time.monotonic() + timeout_s
        while True:  # a Sentinel refuses until it has seen the replica in sync (NOGOODSLAVE)
            try:
                sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                break
            except redis.ResponseError as refused:
                if not str(refused).startswith("NOGOODSLAVE") or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.wait_for_master(new_port, deadline)
        self.wait_for_role(old_port, "slave", deadline)
        return new_port

    def server_on(self, port: int) -> subprocess.Popen:
        """The redis-server process listening on `port` (primary or replica, whatever its role now)."""
        return self.processes["primary" if port == self.primary_port else "replica"]

    def wait_for_master(self, port: int, deadline: float) -> None:
        """Until the Sentinels name the server on `port` master and it says so itself."""
        while self.master_port() != port or self._role(port) != "master":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{port} did not become master; see {self.directory}")
            time.sleep(0.05)

    def wait_for_role(self, port: int, role: str, deadline: float) -> None:
        while self._role(port) != role:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{port} did not become {role}; see {self.directory}")
            time.sleep(0.05)

    @staticmethod
    def _role(port: int) -> str | None:
        try:
            return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).info("replication")["role"]
        except redis.RedisError:
            return None

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

"""The fleet, each part on a host of its own: Redis primary and two replicas, three Sentinels, two API
processes (gunicorn, as deployed), three compute workers and a downloads worker.

All of them share one folder as their "shared volume" (the model directory and the file store),
as a deployment across hosts mounts one. One compute worker (`CLOCK_WORKER`) has a wall clock the
harness can step (through a file); one (`PROXIED_WORKER`) reaches Redis through the fault proxy only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from bench.chaos.fault_proxy import FaultProxy, listen_in_namespace
from bench.chaos.network import BRIDGE_IP, Host, Network, ip
from cli.embedded_redis import redis_server_binary
from contracts.settings import Settings
from tests.hub_server import HubServer

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MASTER_NAME = "ladle-chaos"
REDIS_PORT = 6379
# The Redis primary and its two replicas: with two, a master cut off from the rest can be made to
# refuse writes (min-replicas-to-write 1) while the new master, left with a replica, still takes them.
REDIS_HOSTS = ("redis-a", "redis-b", "redis-c")
MIN_REPLICAS_MAX_LAG_S = 2
SENTINEL_PORT = 26379
API_PORT = 8000
COMPUTE_WORKERS = ("w0", "w1", "w2")
CLOCK_WORKER = "w1"
PROXIED_WORKER = "w2"
STEPPED_CLOCK_DIR = Path(__file__).resolve().parent / "stepped_clock"
HUB_REPO = "acme/tiny-onnx"
HUB_VARIANT = "cpu-int4"
# Sentinel declares the primary down after this long without a reply; the failover follows.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
START_TIMEOUT_S = 90


def fleet_settings(redis_url: str, shared: Path) -> Settings:
    """Small timeouts so a scenario runs in seconds; the visibility timeout is the one to outlast."""
    return Settings(
        redis_url=redis_url,
        redis_sentinel_master=MASTER_NAME,
        model_dir=shared / "models",
        data_dir=shared / "data",
        catalog_dir=shared / "catalog",
        heartbeat_s=0.5,
        visibility_timeout_s=6,
        batch_lease_s=4,
        # Jobs queued this long with their message nowhere fail as job_lost within the workload's bound.
        lost_job_sweep_s=20,
        sync_timeout_s=60,
        worker_wait_s=5,
        worker_concurrency=8,
        intra_op_threads=1,
        drain_s=3,
        rate_limit="off",
        secret_key="chaos-harness-secret-key-for-downloads",
        port=API_PORT,
    )


@dataclass
class Part:
    """A process of the fleet on its host."""

    name: str
    host: Host
    process: subprocess.Popen
    log_path: Path
    worker_name: str = ""  # a worker's Celery name, from its heartbeat

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)


@dataclass
class Fleet:
    network: Network
    directory: Path
    seed: int
    parts: dict[str, Part] = field(default_factory=dict)
    settings: Settings | None = None
    proxy: FaultProxy | None = None
    hub: HubServer | None = None
    clock_file: Path | None = None

    # ---- building -------------------------------------------------------------------------
    def start(self, model_cache: Path, models: list[str]) -> None:
        """Hosts, then Redis and the Sentinels, the proxy and the hub, workers, APIs; `models` are
        copied from `model_cache` to the shared volume."""
        names = [*REDIS_HOSTS, "sent-0", "sent-1", "sent-2", "api-0", "api-1", *COMPUTE_WORKERS, "dl"]
        for folder in ("shared", "logs", *names):  # an earlier run's data, logs and downloads
            shutil.rmtree(self.directory / folder, ignore_errors=True)
        self.network.create_bridge()
        for name in names:
            self.network.add_host(name)
        shared = self.directory / "shared"
        for model in models:
            shutil.copytree(model_cache / model, shared / "models" / model)
        url = ";".join(f"sentinel://{self.host(f'sent-{i}').address}:{SENTINEL_PORT}" for i in range(3))
        self.settings = fleet_settings(url, shared)
        self._start_redis()
        self._start_proxy()
        self.hub = HubServer(host=BRIDGE_IP)
        self.hub.add_repo(HUB_REPO, shared / "models" / "tiny-random-llama", prefix=HUB_VARIANT)
        for name in COMPUTE_WORKERS:
            self._start_worker(name, "compute")
        self._start_worker("dl", "downloads")
        for index in range(2):
            self._start_api(f"api-{index}")

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Part:
        host = self.host(name)
        log_path = self.directory / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                [*host.exec_prefix(), *command],
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the harness only, which stops them in order
            )
        part = Part(name, host, process, log_path)
        self.parts[name] = part
        return part

    def _redis_command(self, name: str, *extra: str) -> list[str]:
        folder = self.directory / name
        folder.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(),
            "--port",
            str(REDIS_PORT),
            "--bind",
            f"{self.host(name).address} 127.0.0.1",
            "--protected-mode",
            "no",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
            # A master that has heard from no replica for MIN_REPLICAS_MAX_LAG_S refuses writes: cut
            # off from the others (which elect a new master), it takes none that a resync would lose.
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            str(MIN_REPLICAS_MAX_LAG_S),
            *extra,
        ]

    def _start_redis(self) -> None:
        primary = self.host("redis-a").address
        self._spawn("redis-a", self._redis_command("redis-a"))
        for replica in REDIS_HOSTS[1:]:
            self._spawn(replica, self._redis_command(replica, "--replicaof", primary, str(REDIS_PORT)))
        for index in range(3):
            name = f"sent-{index}"
            folder = self.directory / name
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # Sentinel rewrites its config: one each, writable
            config.write_text(
                f"port {SENTINEL_PORT}\nbind {self.host(name).address} 127.0.0.1\nprotected-mode no\n"
                f"dir {folder}\nsentinel monitor {MASTER_NAME} {primary} {REDIS_PORT} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._spawn(name, [redis_server_binary(), str(config), "--sentinel"])
        self._wait_for_sentinels()

    def _wait_for_sentinels(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        for index in range(3):
            sentinel = redis.Redis(self.host(f"sent-{index}").address, SENTINEL_PORT, socket_timeout=1)
            while True:
                try:
                    master = sentinel.sentinel_master(MASTER_NAME)
                    if master["num-slaves"] >= len(REDIS_HOSTS) - 1 and master["num-other-sentinels"] >= 2:
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the Sentinels did not settle")
                time.sleep(0.2)

    def _start_proxy(self) -> None:
        """The proxied worker's host sees every Redis address as its own: the proxy listens there."""
        host = self.host(PROXIED_WORKER)
        targets = [(self.host(n).address, REDIS_PORT) for n in REDIS_HOSTS]
        targets += [(self.host(f"sent-{i}").address, SENTINEL_PORT) for i in range(3)]
        # Answer ARP only for the host's own address on eth0: else it would claim the Redis hosts'
        # addresses on the bridge too, and draw their traffic (the proxy's own) to itself.
        for setting in ("all.arp_ignore=1", "eth0.arp_ignore=1", "all.arp_announce=2", "eth0.arp_announce=2"):
            subprocess.run([*host.exec_prefix(), "sysctl", "-qw", f"net.ipv4.conf.{setting}"], check=True, timeout=10)
        for address, _ in targets:
            ip("-n", host.netns, "addr", "add", f"{address}/32", "dev", "lo")
        sockets = listen_in_namespace(host.netns, targets)
        self.proxy = FaultProxy(list(zip(sockets, targets, strict=True)), self.seed)
        self.proxy.start()

    def _start_worker(self, name: str, lane: str) -> None:
        env = {**self.settings.to_env(), "PYTHONPATH": str(ROOT)}
        if lane == "downloads":
            env.update({"HF_ENDPOINT": self.hub.url, "HF_HUB_OFFLINE": "0"})
        if name == CLOCK_WORKER:
            # Its wall clock (as Python reads it) can be stepped: see stepped_clock/sitecustomize.py.
            self.clock_file = self.directory / "clock-offset"
            self.clock_file.write_text("0\n")
            env["PYTHONPATH"] = f"{STEPPED_CLOCK_DIR}{os.pathsep}{ROOT}"
            env["CHAOS_CLOCK_OFFSET_FILE"] = str(self.clock_file)
        command = [sys.executable, "-m", "cli.main", "worker", "--device", "cpu", "--lane", lane]
        self._spawn(name, command, env)

    def _start_api(self, name: str) -> None:
        host = self.host(name)
        env = {**self.settings.to_env(), "PYTHONPATH": str(ROOT), "LADLE_HOST": host.address}
        command = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_config"]
        command += ["--bind", f"{host.address}:{API_PORT}", "api.app:create_app()"]
        self._spawn(name, command, env)

    def wait_until_ready(self) -> None:
        """Every API answers /health and every worker has sent a heartbeat."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for url in self.api_urls():
            while True:
                self._check_alive()
                try:
                    if requests.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not answer /health")
                time.sleep(0.3)
        client = self.redis()
        for name in (*COMPUTE_WORKERS, "dl"):
            part = self.parts[name]
            while not part.worker_name:
                self._check_alive()
                for worker in client.zrange("ladle:workers", 0, -1):
                    if f"-{part.process.pid}@" in worker.decode():
                        part.worker_name = worker.decode()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} sent no heartbeat; see {part.log_path}")
                time.sleep(0.3)

    def _check_alive(self) -> None:
        for part in self.parts.values():
            if part.process.poll() is not None:
                raise RuntimeError(f"{part.name} exited with {part.process.returncode}; see {part.log_path}")

    # ---- reading --------------------------------------------------------------------------
    def api_urls(self) -> list[str]:
        return [f"http://{self.host(f'api-{i}').address}:{API_PORT}" for i in range(2)]

    def master_address(self) -> str | None:
        """The master the Sentinels name now (the first that answers)."""
        for index in range(3):
            try:
                sentinel = redis.Redis(self.host(f"sent-{index}").address, SENTINEL_PORT, socket_timeout=1)
                address = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if address:
                host = address[0]
                return host.decode() if isinstance(host, bytes) else host
        return None

    def redis(self) -> redis.Redis:
        """A client of the current master (for the harness's own reads)."""
        return redis.Redis(self.master_address(), REDIS_PORT, socket_timeout=5, socket_connect_timeout=2)

    def redis_host(self, address: str) -> Host:
        return next(h for h in self.network.hosts.values() if h.address == address)

    def active_jobs(self, name: str) -> int:
        """Jobs the worker on host `name` runs now, as its last heartbeat says (0 if none is there)."""
        try:
            raw = self.redis().get(f"ladle:worker:{self.parts[name].worker_name}")
        except redis.RedisError:
            return 0
        return json.loads(raw).get("active_jobs", 0) if raw else 0

    # ---- stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        """APIs, then workers, then Redis: SIGCONT first (a frozen one), SIGTERM, then SIGKILL."""
        order = ["api-0", "api-1", *COMPUTE_WORKERS, "dl", "sent-0", "sent-1", "sent-2", *reversed(REDIS_HOSTS)]
        for group in (order[:2], order[2:6], order[6:]):
            for name in group:
                if name in self.parts:
                    self.parts[name].signal(signal.SIGCONT)
                    self.parts[name].signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for name in group:
                part = self.parts.get(name)
                if part is None:
                    continue
                try:
                    part.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    part.signal(signal.SIGKILL)
                    part.process.wait(timeout=5)
        if self.proxy:
            self.proxy.stop()
        if self.hub:
            self.hub.stop()


def kill_namespace_processes(prefix: str) -> list[int]:
    """SIGKILL every process still inside a namespace named `prefix…` (left by an interrupted run)."""
    killed = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        for pid in ip("netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
            except ProcessLookupError:
                pass
    return killed

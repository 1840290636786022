"""A userspace TCP proxy on one host's path to Redis that adds delay and loss (no netem here).

The host sees the Redis servers' and Sentinels' addresses as its own (each is added to its
loopback), so every connection it makes to them, including to the master a Sentinel names,
lands on this proxy's listening sockets, made inside the host's namespace (setns). The proxy
runs in the harness's (root) namespace and connects on to the real address over the bridge.

TCP is reliable, so an application never sees a lost packet, only what recovering it costs:
the retransmission timeout. The proxy reproduces that: each chunk is held `delay_s` (on the way
to Redis), and with probability `loss` a chunk (either way) waits one more retransmission
timeout (RTO_S, doubled for each loss in a row), with the chunks behind it (head-of-line
blocking). `blackout` holds everything, as a partition of this path would.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
# Linux's minimum retransmission timeout: what one lost segment costs at least.
RTO_S = 0.2
CHUNK_BYTES = 65536


@dataclass
class Faults:
    """What the proxy does to traffic now (changed from the harness's thread; read per chunk)."""

    delay_s: float = 0.0
    loss: float = 0.0


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def listen_in_namespace(netns: str, addresses: list[tuple[str, int]]) -> list[socket.socket]:
    """Listening sockets bound inside namespace `netns` (made on a thread that enters it and leaves)."""
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            for host, port in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
                made.append(sock)
        except BaseException as error:  # reported to the caller's thread
            failure.append(error)
        finally:
            _setns(own)
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return made


class FaultProxy:
    """Forwards each listening socket's connections to its target address, applying `faults`."""

    def __init__(self, routes: list[tuple[socket.socket, tuple[str, int]]], seed: int) -> None:
        self.routes = routes
        self.faults = Faults()
        self.random = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self.chunks = 0
        self.lost = 0

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for sock, target in self.routes:
            self.loop.run_until_complete(
                asyncio.start_server(lambda r, w, t=target: self._connection(r, w, t), sock=sock)
            )
        self.loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), timeout=5)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, upstream=True), self._pipe(up_reader, writer, upstream=False)
            )
        finally:
            for end in (writer, up_writer):
                end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        release, losses_in_row = 0.0, 0
        try:
            while data := await reader.read(CHUNK_BYTES):
                now = time.monotonic()
                hold = self.faults.delay_s if upstream else 0.0
                self.chunks += 1
                if self.faults.loss and self.random.random() < self.faults.loss:
                    self.lost += 1
                    hold += RTO_S * 2**losses_in_row
                    losses_in_row += 1
                else:
                    losses_in_row = 0
                release = max(release, now + hold)  # a held chunk holds the ones behind it
                await queue.put((release, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put(None)
            await sender

    async def _send(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            release, data = item
            wait = release - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    def set(self, delay_s: float = 0.0, loss: float = 0.0) -> None:
        self.faults = Faults(delay_s, loss)

    def stop(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shut(), self.loop)
            self.thread.join(timeout=5)
        for sock, _ in self.routes:
            sock.close()

    async def _shut(self) -> None:
        """Cancel every connection's tasks, let them unwind, then stop the loop."""
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loop.stop()

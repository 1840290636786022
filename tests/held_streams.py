"""A client that holds many HTTP streams open at once: raw sockets, one selector, no threads.

Requests are HTTP/1.0, so each response is its headers then the raw body up to the server's
close (no chunked framing): a stream is open until EOF.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def raise_open_files_limit(wanted: int) -> None:
    """Lift this process's soft limit on open files toward `wanted` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: ladle\r\nAccept: text/event-stream\r\n\r\n".encode()


def post_request(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.0\r\nHost: ladle\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


@dataclass
class HeldStream:
    """One request's connection and everything received on it so far."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    closed: bool = False

    @property
    def has_headers(self) -> bool:
        return b"\r\n\r\n" in self.received

    @property
    def status(self) -> int:
        return int(self.received.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        """Response headers, names in lower case."""
        lines = self.received.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
        return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}

    @property
    def body(self) -> str:
        return self.received.partition(b"\r\n\r\n")[2].decode()

    def sse_frames(self) -> list[dict[str, str]]:
        """The body's SSE frames as {field: value} (data left as text)."""
        frames = []
        for block in self.body.split("\n\n"):
            frame = dict(line.partition(": ")[::2] for line in block.split("\n") if line)
            if frame:
                frames.append(frame)
        return frames


class HeldStreams:
    """Open connections to host:port, send each its request, and read them all with one selector."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.selector = selectors.DefaultSelector()
        self.streams: list[HeldStream] = []

    def open(self, request: bytes) -> HeldStream:
        sock = socket.create_connection(self.address, timeout=30)
        sock.sendall(request)
        sock.setblocking(False)
        stream = HeldStream(sock)
        self.selector.register(sock, selectors.EVENT_READ, stream)
        self.streams.append(stream)
        return stream

    def pump(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Read whatever arrives until `done()` holds (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in self.selector.select(min(remaining, 0.5)):
                self._read(key.data)
        return True

    def _read(self, stream: HeldStream) -> None:
        try:
            chunk = stream.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            chunk = b""
        if chunk:
            stream.received += chunk
            return
        stream.closed = True
        self.selector.unregister(stream.sock)
        stream.sock.close()

    def count(self, predicate: Callable[[HeldStream], bool]) -> int:
        return sum(1 for stream in self.streams if predicate(stream))

    def close(self) -> None:
        for stream in self.streams:
            if not stream.closed:
                self.selector.unregister(stream.sock)
                stream.sock.close()
                stream.closed = True
        self.selector.close()

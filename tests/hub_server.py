"""A small HTTP server speaking the Hugging Face hub's file protocol, for HF_ENDPOINT in tests.

It serves folders the tests built as model repositories, with the endpoints huggingface_hub
calls for a download: the revision's commit (`/api/models/{repo}/revision/{rev}`), the file tree
with sizes and hashes (`/api/models/{repo}/tree/{rev}/{path}`), and each file's bytes with
HEAD and ranged GET (`/{repo}/resolve/{rev}/{path}`). Faults the tests inject: drop the
connection part way through a file, serve corrupt bytes, serve slowly, require a token.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# Files at least this large are listed as LFS files (with a sha256), as the hub does for weights.
LFS_MIN_BYTES = 1024


@dataclass
class HubFile:
    path: str
    data: bytes

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(f"blob {len(self.data)}\0".encode() + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def is_lfs(self) -> bool:
        return len(self.data) >= LFS_MIN_BYTES

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.git_sha1, "size": len(self.data), "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    token: str | None = None

    @property
    def commit(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + self.files[path].git_sha1.encode())
        return digest.hexdigest()


@dataclass
class Faults:
    """Per file path: bytes after which the next GET drops the connection (one shot), files
    served corrupted, and rate limits (bytes/s)."""

    drop_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    bytes_per_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.repos: dict[str, HubRepo] = {}
        self.faults = Faults()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add_repo(self, repo_id: str, folder: Path, prefix: str = "", token: str | None = None) -> HubRepo:
        """Serve every file under `folder` at `<prefix>/<relative path>` in repo `repo_id`."""
        files = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = "/".join(filter(None, [prefix.strip("/"), str(path.relative_to(folder))]))
                files[name] = HubFile(name, path.read_bytes())
        files[".gitattributes"] = HubFile(".gitattributes", b"*.onnx filter=lfs diff=lfs merge=lfs -text\n")
        repo = HubRepo(repo_id, files, token)
        self.repos[repo_id] = repo
        return repo

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def file_requests(self, file_path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/{file_path}")]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_REVISION = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            return None

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.record(Seen(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
            for pattern, serve in ((_REVISION, self._revision), (_TREE, self._tree), (_RESOLVE, self._resolve)):
                match = pattern.match(path)
                if match:
                    repo = hub.repos.get(match["repo"])
                    if repo is None:
                        return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                        return self._json(401, {"error": "Invalid credentials"}, {"X-Error-Code": "RepoNotFound"})
                    if match["rev"] not in ("main", repo.commit):
                        return self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    return serve(repo, match, head)
            self._json(404, {"error": "Not found"})

        def _revision(self, repo: HubRepo, match, head: bool) -> None:
            siblings = [{"rfilename": name} for name in repo.files]
            self._json(200, {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "siblings": siblings})

        def _tree(self, repo: HubRepo, match, head: bool) -> None:
            prefix = (match["path"] or "").strip("/")
            entries = [f.tree_entry() for name, f in repo.files.items() if not prefix or name.startswith(prefix + "/")]
            self._json(200, entries)

        def _resolve(self, repo: HubRepo, match, head: bool) -> None:
            file = repo.files.get(match["path"])
            if file is None:
                return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            data = file.data
            if file.path in hub.faults.corrupt:
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            start = 0
            requested = self.headers.get("Range")
            if requested and not head:
                start = int(re.match(r"bytes=(\d+)-", requested).group(1))
            headers = {
                "X-Repo-Commit": repo.commit,
                "Accept-Ranges": "bytes",
                "ETag": f'"{file.git_sha1}"',
                "Content-Length": str(len(data) - start),
            }
            if file.is_lfs:
                headers["X-Linked-Etag"] = f'"{file.sha256}"'
                headers["X-Linked-Size"] = str(len(data))
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self.send_response(206 if start else 200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            body = data[start:]
            drop_at = hub.faults.drop_after.pop(file.path, None)
            if drop_at is not None:
                body = body[: max(0, drop_at - start)]
            self._write_paced(body, hub.faults.bytes_per_s.get(file.path))
            if drop_at is not None:
                self.close_connection = True
                self.connection.shutdown(2)

        def _write_paced(self, body: bytes, rate: float | None) -> None:
            step = 32 * 1024 if rate else len(body) or 1
            for offset in range(0, len(body), step):
                try:
                    self.wfile.write(body[offset : offset + step])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if rate:
                    time.sleep(step / rate)

        def _json(self, status: int, body, headers: dict | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler

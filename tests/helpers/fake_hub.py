"""A tiny threaded fake of the Hugging Face Hub, enough for huggingface_hub 2.x and app.registry.pull:
/api/models/{repo}[/revision/{rev}] and /{repo}/resolve/{rev}/{file} (HEAD and GET with Range), with
failure injection (cut a download after N bytes, answer errors)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    claimed_sizes: dict[str, int] = field(default_factory=dict)  # sizes the manifest and HEAD report instead

    def size(self, name: str) -> int:
        return self.claimed_sizes.get(name, len(self.files[name]))

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else git_blob_oid(data)


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before the connection drops (once)
    fail_next_gets: dict[str, int] = field(default_factory=dict)  # file -> GETs answered 500 (after its cut, if any)
    corrupt: set[str] = field(default_factory=set)  # files whose GET body has one byte flipped
    get_delay: float = 0.0  # seconds every file GET waits before its body (keeps pulls running side by side)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def gets(self, name: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + name)]

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._handle(head=True)

            def do_GET(self) -> None:
                self._handle(head=False)

            def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(RequestRecord(self.command, path, dict(self.headers.items())))
                if path.startswith("/api/models/"):
                    return self._model_info(path[len("/api/models/") :])
                if "/resolve/" in path:
                    repo_part, rest = path.lstrip("/").split("/resolve/", 1)
                    rev, _, name = rest.partition("/")
                    return self._resolve(repo_part, rev, name, head)
                self._send_json(404, {"error": "not found"})

            def _repo(self, repo_id: str) -> FakeRepo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return None
                if repo.gated:
                    self._send_json(403, {"error": "Access to model is restricted"}, {"X-Error-Code": "GatedRepo"})
                    return None
                return repo

            def _model_info(self, rest: str) -> None:
                repo_id, _, rev = rest.partition("/revision/")
                repo = self._repo(repo_id)
                if repo is None:
                    return
                if rev and rev not in ("main", repo.commit):
                    self._send_json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    return
                siblings = []
                for name, data in repo.files.items():
                    sib: dict[str, Any] = {"rfilename": name, "size": repo.size(name), "blobId": git_blob_oid(data)}
                    if repo.is_lfs(name):
                        sib["lfs"] = {"sha256": repo.etag(name), "size": repo.size(name), "pointerSize": 134}
                    siblings.append(sib)
                self._send_json(
                    200,
                    {
                        "_id": "fake",
                        "id": repo.repo_id,
                        "modelId": repo.repo_id,
                        "sha": repo.commit,
                        "private": False,
                        "gated": False,
                        "disabled": False,
                        "tags": [],
                        "siblings": siblings,
                    },
                )

            def _resolve(self, repo_id: str, rev: str, name: str, head: bool) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                if rev not in ("main", repo.commit):
                    self._send_json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    return
                if name not in repo.files:
                    self._send_json(
                        404,
                        {"error": "Entry not found"},
                        {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit},
                    )
                    return
                if not head and name not in hub.cut_after and hub.fail_next_gets.get(name, 0) > 0:
                    hub.fail_next_gets[name] -= 1
                    self._send_json(500, {"error": "internal error"})
                    return
                data = repo.files[name]
                size = len(data)
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[len("bytes=") :].split("-")[0] or 0)
                if start >= size and size > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                if name in hub.corrupt and body:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                self.send_response(206 if start else 200)
                etag = repo.etag(name)
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("Accept-Ranges", "bytes")
                if repo.is_lfs(name):
                    self.send_header("ETag", f'"{git_blob_oid(data)}"')
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(repo.size(name)))
                else:
                    self.send_header("ETag", f'"{etag}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if head:
                    return
                if hub.get_delay:
                    time.sleep(hub.get_delay)
                cut = hub.cut_after.pop(name, None)
                if cut is not None and cut < len(body):
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def serving(*repos: FakeRepo) -> Iterator[FakeHub]:
    """A started hub serving these repositories, stopped on exit."""
    hub = FakeHub().start()
    try:
        for repo in repos:
            hub.add(repo)
        yield hub
    finally:
        hub.stop()


def two_tiny_repos() -> tuple[FakeRepo, FakeRepo]:
    """org/tiny and a smaller org/other, for pulls side by side."""
    return FakeRepo("org/tiny", tiny_model_files()), FakeRepo("org/other", tiny_model_files(hidden=8))


def tiny_model_files(hidden: int = 16, layers: int = 2, vocab: int = 64, weights_bytes: int = 0) -> dict[str, bytes]:
    """config.json + tokenizer config + a small random safetensors file (numpy only, no torch).

    weights_bytes pads with an extra tensor so downloads take several chunks.
    """
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((vocab, hidden), dtype=np.float32),
        "model.norm.weight": np.ones(hidden, dtype=np.float32),
    }
    for i in range(layers):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((hidden * 2, hidden), dtype=np.float32)
    if weights_bytes:
        tensors["extra.padding"] = rng.standard_normal(weights_bytes // 4, dtype=np.float32)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": hidden * 2,
        "vocab_size": vocab,
        "max_position_embeddings": 256,
        "torch_dtype": "float32",
    }
    tok_config = {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}", "eos_token": "</s>"}
    return {
        "config.json": json.dumps(config).encode(),
        "tokenizer_config.json": json.dumps(tok_config).encode(),
        "model.safetensors": save(tensors),
        "README.md": b"# tiny\n",
    }


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)  # module folders (1_Pooling/config.json)
        (folder / name).write_bytes(data)
    return folder

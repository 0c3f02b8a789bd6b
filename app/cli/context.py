"""The per-command Context: parsed arguments, settings, the server address, and the backend each command uses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.cli import embedded
from app.cli.backend import LocalRegistry, Registry, RemoteRegistry
from app.cli.client import Address, OllamaClient, find_server
from app.cli.errors import CliError
from app.settings import Settings, get_settings


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    address: Address
    api_key: str | None
    out: Any = field(default_factory=lambda: sys.stdout)
    err: Any = field(default_factory=lambda: sys.stderr)
    _server: OllamaClient | None = None
    _probed: bool = False

    def server(self) -> OllamaClient | None:
        """A client for the running server, or None (probed once per command)."""
        if not self._probed:
            self._server = find_server(self.address, api_key=self.api_key)
            self._probed = True
        return self._server

    def registry(self) -> Registry:
        client = self.server()
        return RemoteRegistry(client) if client is not None else LocalRegistry(self.settings)

    @contextmanager
    def generation_client(self) -> Iterator[OllamaClient]:
        client = self.server()
        if client is not None:
            yield client
            return
        server = embedded.start_embedded(self.settings)
        try:
            with OllamaClient(server.url, api_key=self.api_key) as local:
                yield local
        finally:
            server.stop()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def load_settings() -> Settings:
    """Settings from the environment; an invalid configuration is a CliError with a one-line message."""
    from pydantic import ValidationError

    # Read the environment afresh for every command (in-process callers such as tests change it).
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            raise CliError(f"invalid configuration: {exc}") from None
        where = ".".join(str(p) for p in errors[0]["loc"]) or "settings"
        raise CliError(f"invalid configuration ({where}): {errors[0]['msg']}") from None
    except ValueError as exc:
        raise CliError(f"invalid configuration: {exc}") from None

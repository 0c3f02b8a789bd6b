"""Loopback ports for test servers (the machine is shared: never a fixed port)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on: bound to port 0, then released. Servers started on it may lose a race
    with another process, which is rare enough for tests; a server that must never lose it binds the socket
    itself and hands it over (tests/cli/test_server.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port

"""Runs the service under uvicorn, with a SIGTERM drain: the first signal stops readiness and new work while
in-flight requests finish (up to HUGLLAMA_SHUTDOWN_GRACE_SECONDS), a second signal exits at once."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from types import FrameType
from typing import Any

import uvicorn

from app.settings import Settings

log = logging.getLogger(__name__)

# After the drain phase uvicorn still closes connections; leave it at least this long to do so.
_MIN_CLOSE_SECONDS = 1


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains instead of exiting.

    While draining, the app's Lifecycle makes /readyz answer 503 and refuses new requests with 503, but the
    socket stays open so load balancers see the 503s rather than connection errors.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.app: Any = None  # set by the factory in `run`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._draining = False

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        lifecycle = getattr(getattr(self.app, "state", None), "lifecycle", None)
        if self._draining or lifecycle is None or self._loop is None or not self.started:
            if self._draining:
                log.warning("second signal: exiting now")
                self.force_exit = True
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # Not added to uvicorn's _captured_signals: uvicorn would re-raise it after shutdown and a completed drain
        # would end with status -15 instead of 0 (orchestrators read a drained stop as a clean one).
        lifecycle.begin_drain()
        # A signal handler may not touch the loop directly; call_soon_threadsafe is safe from one.
        self._loop.call_soon_threadsafe(self._start_drain, lifecycle)

    def _start_drain(self, lifecycle: Any) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(lifecycle))

    async def _drain(self, lifecycle: Any) -> None:
        started = time.monotonic()
        await lifecycle.drain()
        left = float(self.config.timeout_graceful_shutdown or 0) - (time.monotonic() - started)
        # The grace period is one budget for both phases: what the drain used is not given again.
        self.config.timeout_graceful_shutdown = max(_MIN_CLOSE_SECONDS, math.ceil(left))
        self.should_exit = True


def bound_settings(settings: Settings, host: str | None, port: int | None) -> Settings:
    """`settings` with the address really bound: the app's Host-header policy depends on it, and `serve --host`
    overrides HUGLLAMA_HOST."""
    if host is None and port is None:
        return settings
    bind_host, bind_port = settings.bind()
    bind_host = host if host is not None else bind_host
    bind_port = port if port is not None else bind_port
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    return settings.model_copy(update={"host": f"{shown}:{bind_port}", "port": bind_port})


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve `create_app(settings)` on host:port (default: settings.bind()) until a signal ends it."""
    from app.main import create_app

    settings = bound_settings(settings, host, port)
    bind_host, bind_port = settings.bind()

    def factory() -> Any:
        app = create_app(settings)
        server.app = app
        return app

    config = uvicorn.Config(
        factory,
        factory=True,
        host=bind_host,
        port=bind_port,
        log_config=None,  # the app configures logging
        access_log=False,  # the app's middleware writes the access log
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        server_header=False,
    )
    server = DrainingServer(config)
    server.run()
    if server.force_exit:
        log.warning("exited before in-flight requests finished")

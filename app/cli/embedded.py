"""An in-process server for `run`/`chat` when none is running: the real app under uvicorn in a background
thread on a free loopback port, so the CLI uses one HTTP code path either way. Tests host their test engine in it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from app.cli.errors import CliError
from app.settings import Settings

AppFactory = Callable[[Settings], Any]

STARTUP_TIMEOUT_SECONDS = 120.0


def _default_factory(settings: Settings) -> Any:
    from app.main import create_app

    return create_app(settings)


# The seam tests replace to run the CLI's embedded mode over a test engine (tests/helpers/fake_engine.py).
app_factory: AppFactory = _default_factory


def embedded_settings(settings: Settings) -> Settings:
    """The embedded server's settings: nothing preloaded (the request loads what it needs), ready as soon as it
    listens, and quiet logs unless the user asked for a level."""
    update: dict[str, Any] = {"preload": "", "readiness": "server"}
    if "log_level" not in settings.model_fields_set:
        update["log_level"] = "WARNING"
    return settings.model_copy(update=update)


class EmbeddedServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread; use as a context manager."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", grace_seconds: int = 2) -> None:
        import uvicorn

        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=grace_seconds
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="hugllama-embedded-server", daemon=True)
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # uvicorn reports a failed startup with sys.exit() in this thread
            self._failure = exc

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> EmbeddedServer:
        """Start serving and wait until /readyz answers 200."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._sock.close()
                raise CliError("the embedded server failed to start (see the log lines above)")
            if time.monotonic() > deadline:
                self.stop()
                raise CliError(f"the embedded server did not start within {timeout:.0f}s")
            time.sleep(0.01)
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/readyz", timeout=5.0)
                if r.status_code == 200:
                    return self
                last = f"{r.status_code} {r.text.strip()[:100]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise CliError(f"the embedded server did not become ready within {timeout:.0f}s ({last})")

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded(settings: Settings) -> EmbeddedServer:
    """The app built from `settings` (through `app_factory`), served in this process and ready."""
    return EmbeddedServer(app_factory(embedded_settings(settings))).start()

"""The gunicorn worker of the container image: uvicorn's worker with the SIGTERM drain of `hugllama serve`."""

from __future__ import annotations

import sys

from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from app.server import DrainingServer


class DrainingWorker(UvicornWorker):  # type: ignore[misc]
    """On SIGTERM, /readyz turns 503 and new requests get 503 while in-flight streams finish; then it exits."""

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        server.app = self.wsgi
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

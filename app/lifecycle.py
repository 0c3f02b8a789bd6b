"""Draining: the in-flight request count and the state SIGTERM starts (`app.server` routes SIGTERM to
`begin_drain`; the middleware counts requests and refuses new ones while draining; /readyz reports it)."""

from __future__ import annotations

import asyncio
import logging
import time

from app.settings import Settings

log = logging.getLogger(__name__)


class Lifecycle:
    """Tracks in-flight requests and the draining state that SIGTERM starts."""

    def __init__(self, settings: Settings) -> None:
        self.grace = settings.shutdown_grace_seconds
        self.draining = False
        self.inflight = 0
        self.started = time.time()
        self._idle = asyncio.Event()
        self._idle.set()

    def begin_drain(self) -> None:
        if not self.draining:
            log.info("draining: refusing new requests, waiting up to %.0fs for %d in flight", self.grace, self.inflight)
        self.draining = True

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self.inflight = 0
            self._idle.set()

    async def drain(self) -> None:
        self.begin_drain()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.grace)
        except TimeoutError:
            log.warning("grace period over with %d requests in flight", self.inflight)

"""Queue places: requests admitted to the engine and waiting for a batch slot or an embedding pass.

One count for generation and embeddings alike, its gauges (waiting, running), and the 503 (Ollama's wording) past
HUGLLAMA_MAX_QUEUE. A request holds a `Ticket` from admission to its end; the ticket moves the gauges, so the
bookkeeping is written here once.
"""

from __future__ import annotations

from types import TracebackType

from app.errors import Overloaded
from app.metrics import Metrics


class Ticket:
    """One admitted request: waiting, then running, then done. `close()` is safe in any state and only once."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.state = "waiting"

    def run(self) -> None:
        """The request leaves the queue and runs (a batch slot or an embedding pass took it)."""
        if self.state == "waiting":
            self._admission._leave()
            self._admission.metrics.requests_running.inc()
            self.state = "running"

    def close(self) -> None:
        """The request ended, failed, or went away (while it waited or while it ran)."""
        if self.state == "waiting":
            self._admission._leave()
        elif self.state == "running":
            self._admission.metrics.requests_running.dec()
        self.state = "done"

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Admission:
    def __init__(self, max_queue: int, metrics: Metrics) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting = 0

    def enter(self) -> Ticket:
        """Take a queue place, or raise Overloaded when every place is taken."""
        if self.waiting >= self.max_queue:
            self.metrics.failures.labels(reason="queue_full").inc()
            raise Overloaded("server busy, please try again.  maximum pending requests exceeded")
        self.waiting += 1
        self.metrics.requests_waiting.inc()
        return Ticket(self)

    def _leave(self) -> None:
        """Give the place back: the request runs now, or it failed or went away while it waited."""
        self.waiting -= 1
        self.metrics.requests_waiting.dec()

"""Queue places: requests admitted to the engine and waiting for a batch slot or an embedding pass.

One count for generation and embeddings alike, its gauge, and the 503 (Ollama's wording) past HUGLLAMA_MAX_QUEUE.
"""

from __future__ import annotations

from app.errors import Overloaded
from app.metrics import Metrics


class Admission:
    def __init__(self, max_queue: int, metrics: Metrics) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting = 0

    def enter(self) -> None:
        """Take a queue place, or raise Overloaded when every place is taken."""
        if self.waiting >= self.max_queue:
            self.metrics.failures.labels(reason="queue_full").inc()
            raise Overloaded("server busy, please try again.  maximum pending requests exceeded")
        self.waiting += 1
        self.metrics.requests_waiting.inc()

    def leave(self) -> None:
        """Give the place back: the request runs now, or it failed or went away while it waited."""
        self.waiting -= 1
        self.metrics.requests_waiting.dec()

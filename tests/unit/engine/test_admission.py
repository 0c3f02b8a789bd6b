"""Admission: one queue count and its gauges for generation and embeddings, moved by each request's Ticket."""

from __future__ import annotations

import pytest

from app.engine.admission import Admission
from app.errors import Overloaded
from app.metrics import Metrics


def _gauges(metrics: Metrics) -> tuple[float, float]:
    waiting = metrics.requests_waiting._value.get()  # type: ignore[attr-defined]
    running = metrics.requests_running._value.get()  # type: ignore[attr-defined]
    return waiting, running


def test_a_ticket_waits_runs_and_ends_once() -> None:
    metrics = Metrics()
    admission = Admission(2, metrics)
    ticket = admission.enter()
    assert admission.waiting == 1 and _gauges(metrics) == (1, 0)
    ticket.run()
    ticket.run()  # a second run is no second move
    assert admission.waiting == 0 and _gauges(metrics) == (0, 1)
    ticket.close()
    ticket.close()
    assert admission.waiting == 0 and _gauges(metrics) == (0, 0)


def test_a_ticket_closed_while_waiting_gives_its_place_back() -> None:
    metrics = Metrics()
    admission = Admission(1, metrics)
    with admission.enter():
        with pytest.raises(Overloaded, match="maximum pending requests exceeded"):
            admission.enter()
        assert admission.waiting == 1
    assert admission.waiting == 0 and _gauges(metrics) == (0, 0)
    admission.enter().close()  # the place is free again
    assert metrics.failures.labels(reason="queue_full")._value.get() == 1  # type: ignore[attr-defined]

"""The access log says what happened to a stream: a client that goes away mid-stream is a 499 with a reason, on
both protocols, like an abandoned non-streamed request; a finished stream stays a 200."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest

from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
USER = [{"role": "user", "content": "Hi"}]


def access_lines(caplog: pytest.LogCaptureFixture, path: str, wait: float = 5) -> list[logging.LogRecord]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = [r for r in caplog.records if r.name == "hugllama.access" and getattr(r, "path", None) == path]
        if found:
            return found
        time.sleep(0.02)
    return []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": MODEL, "messages": USER}),
        ("/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True}),
    ],
)
def test_stopped_stream_is_logged_as_client_disconnect(
    live_server: Any, caplog: pytest.LogCaptureFixture, path: str, body: dict[str, Any]
) -> None:
    caplog.set_level("INFO", logger="hugllama.access")
    engine = FakeEngine(script=["tok"] * 300, delay=0.02)
    url = live_server(engine)
    with httpx.stream("POST", url + path, json=body, timeout=10) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    (record,) = access_lines(caplog, path)
    assert record.status == 499
    assert record.client_disconnected is True and record.sent_status == 200
    assert "client disconnected mid-stream" in record.getMessage()


def test_a_finished_stream_stays_200(live_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="hugllama.access")
    url = live_server(FakeEngine(script=["a", "b"]))
    with httpx.stream("POST", url + "/api/chat", json={"model": MODEL, "messages": USER}, timeout=10) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert lines[-1]["done"] is True
    (record,) = access_lines(caplog, "/api/chat")
    assert record.status == 200 and not hasattr(record, "client_disconnected")
    assert "disconnected" not in record.getMessage()


def test_abandoned_non_stream_request_stays_499(live_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="hugllama.access")
    url = live_server(FakeEngine(script=["tok"] * 300, delay=0.02))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/api/chat", json={"model": MODEL, "messages": USER, "stream": False}, timeout=0.3)
    (record,) = access_lines(caplog, "/api/chat")
    assert record.status == 499

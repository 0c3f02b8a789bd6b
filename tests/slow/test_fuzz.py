"""Property-based fuzzing of the real server from its own /openapi.json (schemathesis): no operation answers 5xx.

Bounded: a few examples per operation, no deadline; /api/pull is excluded (it would reach for the network).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.slow.conftest import ServerProcess, start_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(shared_snapshots: Path) -> Iterator[ServerProcess]:
    # Nothing preloaded: fuzzed requests name random models, and the server must stay lean and quick.
    server = start_server(shared_snapshots, {"HUGLLAMA_PRELOAD": "", "HUGLLAMA_CONTEXT_LENGTH": "512"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
schema.exclude(path="/api/pull")


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: Any, fuzz_server: ServerProcess) -> None:
    response = case.call(timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
    assert fuzz_server.proc.poll() is None, "the server died"

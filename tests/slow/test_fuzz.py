"""Property-based fuzzing of the real server from its own /openapi.json (schemathesis): no operation answers 5xx.

Bounded: a few examples per operation, no deadline; /api/pull is excluded (it would reach for the network).
Every operation (Ollama, OpenAI, management) documents its body, so every one gets generated bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.slow.conftest import ServerProcess, running_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(shared_snapshots: Path) -> Iterator[ServerProcess]:
    # Nothing preloaded: fuzzed requests name random models, and the server must stay lean and quick.
    with running_server(shared_snapshots, {"HUGLLAMA_PRELOAD": "", "HUGLLAMA_CONTEXT_LENGTH": "512"}) as server:
        yield server


EXCLUDED = {("POST", "/api/pull")}
# Documented as unsupported, answered 501 on purpose (as Ollama builds without the feature do).
NOT_IMPLEMENTED = ("/api/push", "/api/blobs/")
MAX_EXAMPLES = 5


def _fuzzer(operation: Any, failures: list[str], unsupported: bool) -> Any:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(timeout=120)
        if response.status_code == 501 and unsupported:
            return
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]} (body {str(case.body)[:300]})"
            )

    return run


def test_no_server_errors(fuzz_server: ServerProcess) -> None:
    # Driven by hand rather than schemathesis' pytest plugin, whose lazy parametrization breaks on pytest 9.
    api = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    failures: list[str] = []
    tried = 0
    for result in api.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        tried += 1

        unsupported = operation.path.startswith(NOT_IMPLEMENTED)
        run = _fuzzer(operation, failures, unsupported)
        run()
        assert fuzz_server.proc.poll() is None, f"the server died on {operation.method} {operation.path}"
    assert tried >= 20, "the OpenAPI document lists too few operations"
    assert not failures, "\n".join(failures[:20])

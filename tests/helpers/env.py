"""The service's own environment variables, kept out of tests (the machine's or CI's HUGLLAMA_HOME, an
OLLAMA_HOST, ...): a test sets what it means to test and nothing else leaks into Settings()."""

from __future__ import annotations

import os
from pathlib import Path

PREFIXES = ("HUGLLAMA_", "OLLAMA_")


def clean_environ() -> dict[str, str]:
    """This process's environment without the service's variables, for a child process."""
    return {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}


def snapshots_dir() -> Path:
    """Where the test tiers and the bench keep the embedded model converted to a snapshot, across runs, so the GGUF
    is converted once per machine: HUGLLAMA_TEST_SNAPSHOTS, default ~/.cache/hugllama-test-snapshots."""
    return Path(os.environ.get("HUGLLAMA_TEST_SNAPSHOTS", Path.home() / ".cache" / "hugllama-test-snapshots"))


def service_variables() -> list[str]:
    """The names of the service's variables set in this process's environment (to delete them in a test)."""
    return [k for k in os.environ if k.startswith(PREFIXES)]

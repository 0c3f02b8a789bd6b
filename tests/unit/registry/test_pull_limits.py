"""Pull limits: concurrent pulls past HUGLLAMA_MAX_CONCURRENT_PULLS are refused (503 + Retry-After), and a pull
whose files exceed the cache disk's free space is refused (507) before any download."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import InsufficientStorage, ModelNotFound, Overloaded
from app.registry.pull import PULL_SLOTS, pull
from app.settings import Settings
from tests.helpers.fake_hub import FakeHub, FakeRepo, serving, tiny_model_files, two_tiny_repos


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with serving(*two_tiny_repos()) as h:
        yield h


def test_pulls_past_the_limit_are_refused_then_admitted_again(hub: FakeHub, settings: Settings, cache: Path) -> None:
    settings = settings.model_copy(update={"max_concurrent_pulls": 1})
    hub.get_delay = 0.3
    first = pull("org/tiny", settings=settings, endpoint=hub.url, cache_dir=cache)
    assert next(first) == {"status": "pulling manifest"}  # holds the only slot from here on
    with pytest.raises(Overloaded) as info:
        list(pull("org/other", settings=settings, endpoint=hub.url, cache_dir=cache))
    assert (
        info.value.status_code == 503 and info.value.retry_after and "HUGLLAMA_MAX_CONCURRENT_PULLS" in str(info.value)
    )
    assert not hub.gets("config.json")  # the refused pull fetched nothing
    events = list(first)
    assert events[-1] == {"status": "success"}
    assert PULL_SLOTS.active == 0
    assert list(pull("org/other", settings=settings, endpoint=hub.url, cache_dir=cache))[-1] == {"status": "success"}


def test_a_closed_or_failed_pull_frees_its_slot(hub: FakeHub, settings: Settings, cache: Path) -> None:
    settings = settings.model_copy(update={"max_concurrent_pulls": 1})
    gen = pull("org/tiny", settings=settings, endpoint=hub.url, cache_dir=cache)
    next(gen)
    gen.close()  # the client went away
    assert PULL_SLOTS.active == 0
    with pytest.raises(ModelNotFound):
        list(pull("org/missing", settings=settings, endpoint=hub.url, cache_dir=cache))
    assert PULL_SLOTS.active == 0


def test_concurrent_pulls_within_the_limit(hub: FakeHub, settings: Settings, cache: Path) -> None:
    settings = settings.model_copy(update={"max_concurrent_pulls": 2})
    hub.get_delay = 0.2
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            results[name] = list(pull(name, settings=settings, endpoint=hub.url, cache_dir=cache))[-1]
        except Exception as e:  # pragma: no cover - reported by the assert below
            results[name] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in ("org/tiny", "org/other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"org/tiny": {"status": "success"}, "org/other": {"status": "success"}}


def test_repo_larger_than_free_disk_is_507_before_download(hub: FakeHub, settings: Settings, cache: Path) -> None:
    free = shutil.disk_usage(cache.parent).free
    hub.add(FakeRepo("org/huge", tiny_model_files(), claimed_sizes={"model.safetensors": free * 2}))
    events: list[dict[str, Any]] = []
    with pytest.raises(InsufficientStorage) as info:
        for e in pull("org/huge", settings=settings, endpoint=hub.url, cache_dir=cache):
            events.append(e)
    assert info.value.status_code == 507 and "free" in str(info.value)
    assert events == [{"status": "pulling manifest"}]
    assert not hub.gets("model.safetensors")
    assert PULL_SLOTS.active == 0

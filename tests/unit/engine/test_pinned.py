"""ModelManager: a pinned (preloaded) model survives a request's unload; the admin's forced unload takes it, and
readiness (pinned_resident) follows."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from app.engine.manager import ModelManager
from app.metrics import Metrics
from app.settings import Settings


def resident(key: str) -> Any:
    scheduler = SimpleNamespace(stop=lambda: None, model=object(), prefix_cache=None)
    weights = SimpleNamespace(model=object(), footprint_bytes=0)
    return SimpleNamespace(
        key=key,
        name=key,
        pinned=True,
        in_flight=0,
        keep_alive=-1.0,
        scheduler=scheduler,
        weights=weights,
        compiler=None,
    )


def resolved(key: str) -> Any:
    return SimpleNamespace(load_key=key)


def test_pinned_model_stays_unless_forced(settings: Settings) -> None:
    manager = ModelManager(settings.model_copy(update={"device": "cpu"}), Metrics())
    manager.residents["m"] = resident("m")
    manager.pinned_keys.add("m")
    assert manager.pinned_resident()

    assert asyncio.run(manager.unload(resolved("m"))) is False  # a request's keep_alive 0
    assert "m" in manager.residents and manager.residents["m"].pinned

    assert asyncio.run(manager.unload(resolved("m"), force=True)) is True  # the admin unload
    assert "m" not in manager.residents
    assert not manager.pinned_resident()  # /readyz answers 503 until it is loaded again
    assert "m" in manager.pinned_keys  # and the next load pins it again

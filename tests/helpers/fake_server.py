"""`python -m tests.helpers.fake_server ARGS` runs `python -m app ARGS` (the CLI's `serve`, app/server.py: uvicorn,
draining, signals) with the app built over a FakeEngine, for tests of the real server process without a model.
The test double stays out of app/: this launcher swaps the engine `create_app` would build for it."""

from __future__ import annotations

import runpy
import sys
from typing import Any

import app.main
from app.settings import Settings, get_settings
from tests.helpers.fake_engine import FakeEngine

_create_app = app.main.create_app


def create_app(settings: Settings | None = None, **kwargs: Any) -> Any:
    settings = settings or get_settings()
    kwargs.setdefault("engine", FakeEngine(models=[settings.default_model], settings=settings))
    return _create_app(settings, **kwargs)


if __name__ == "__main__":
    app.main.create_app = create_app
    sys.argv[0] = "app"
    runpy.run_module("app", run_name="__main__", alter_sys=True)

"""Logging setup (plain or JSON lines) and the request-id context carried into every log record."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

from app.settings import Settings

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key in ("method", "path", "status", "duration_ms", "client"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


_configured = False


def configure_logging(settings: Settings) -> None:
    global _configured
    root = logging.getLogger()
    if _configured:
        root.setLevel(settings.log_level.upper())
        return
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
        # tqdm bars (transformers' "Loading weights") write raw text to stderr: keep the log JSON-only.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for module, off in (
            ("huggingface_hub.utils", "disable_progress_bars"),
            ("transformers.utils.logging", "disable_progress_bar"),
        ):
            if module in sys.modules:
                getattr(sys.modules[module], off)()
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True

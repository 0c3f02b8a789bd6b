"""Logging setup (plain or JSON lines) and the request-id context carried into every log record."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import sys
import threading
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
        _json_only_stderr()
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def _json_only_stderr() -> None:
    """Keep everything else that writes to stderr out of a JSON log, or make it go through logging."""
    # tqdm bars (transformers' "Loading weights", the GGUF conversion's raw tqdm) write raw text to stderr.
    # huggingface_hub and transformers have their own switches; any other tqdm reads TQDM_DISABLE when tqdm is
    # first imported, or, when it already is, gets disable=True bound into its constructor.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for module, off in (
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("transformers.utils.logging", "disable_progress_bar"),
    ):
        if module in sys.modules:
            getattr(sys.modules[module], off)()
    std = sys.modules.get("tqdm.std")
    if std is not None and not getattr(std.tqdm, "_hugllama_disabled", False):
        std.tqdm.__init__ = functools.partialmethod(std.tqdm.__init__, disable=True)
        std.tqdm._hugllama_disabled = True
    # warnings.warn() and uncaught exceptions in threads print raw text; route both through logging.
    logging.captureWarnings(True)

    def _thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
        logging.getLogger("app.thread").error("uncaught exception in thread %s", name, exc_info=exc_info)

    threading.excepthook = _thread_exception

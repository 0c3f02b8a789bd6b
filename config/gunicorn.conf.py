"""Gunicorn settings for the container: one draining uvicorn worker (app.gunicorn_worker.DrainingWorker) serving `app.main:create_app()`.

One worker on purpose: each process holds its own copy of every loaded model, so scale with more containers
(one per GPU), not more workers. Every value comes from the same Settings the app reads.
"""

from __future__ import annotations

import math
import os

from app.settings import Settings

_settings = Settings()
_host, _port = _settings.bind()

wsgi_app = "app.main:create_app()"
worker_class = "app.gunicorn_worker.DrainingWorker"
workers = 1
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]

# No heartbeat kill: the event loop can legitimately sit in the lifespan while preloaded models load, and the
# orchestrator's liveness probe on /livez is the watchdog.
timeout = 0
# SIGTERM -> the worker stops accepting and lets in-flight generations finish; the app's own drain grace, plus
# headroom for the lifespan shutdown (engine close), before the master gives up and kills it.
graceful_timeout = math.ceil(_settings.shutdown_grace_seconds) + 10
# Longer than common load balancers' idle timeouts (60 s), so the balancer closes idle connections first.
keepalive = 65
# Never recycle the worker: a restart reloads every model.
max_requests = 0
preload_app = False

# The app writes its own access log (with request ids); gunicorn's would duplicate it.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
if _settings.log_format == "json":
    # gunicorn's and uvicorn's own lines (start, signals, worker exits) as JSON too, with the app's formatter; the
    # root logger is left to the app, which installs its own handler (no duplicated lines).
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": loglevel.upper(), "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": ["json"], "propagate": False},
            "gunicorn.access": {"level": loglevel.upper(), "handlers": [], "propagate": False},
        },
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "formatters": {"json": {"()": "app.log.JsonFormatter"}},
    }
    # Progress bars (the GGUF conversion's, the weight loading's) would be raw text in a JSON log; tqdm reads
    # TQDM_* once, when first imported, which happens later, in the worker.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
proc_name = "hugllama"
# No control socket (gunicorn >= 25.1 opens one for `gunicornc` in ~/.gunicorn or XDG_RUNTIME_DIR): nothing here
# uses it, and under a read-only root filesystem creating it fails with an error line at every start.
control_socket_disable = True
# The heartbeat file lives in memory where there is one: a slow or read-only disk cannot stall the worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

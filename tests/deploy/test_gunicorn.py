"""config/gunicorn.conf.py: loads without gunicorn running, derives its values from Settings, and gunicorn
accepts every value (including loading the app factory and the worker class)."""

from __future__ import annotations
import __future__

import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.util import load_class

from tests.deploy.support import REPO
from tests.helpers.env import clean_environ

CONF = REPO / "config" / "gunicorn.conf.py"


def _load() -> dict[str, Any]:
    namespace = runpy.run_path(str(CONF))
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, ModuleType | type | __future__._Feature)
    }


def test_container_values(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUGLLAMA_HOST", "0.0.0.0:11434")
    conf = _load()
    assert conf["bind"] == ["0.0.0.0:11434"]
    assert conf["workers"] == 1, "one model copy per process"
    assert conf["worker_class"] == "app.gunicorn_worker.DrainingWorker"
    assert conf["wsgi_app"] == "app.main:create_app()"
    assert conf["timeout"] == 0 or conf["timeout"] >= 600
    assert conf["graceful_timeout"] == 30 + 10
    assert conf["keepalive"] > 60
    assert conf["accesslog"] is None
    assert conf["max_requests"] == 0
    assert conf["preload_app"] is False
    assert conf["loglevel"] == "info"


def test_follows_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OLLAMA_HOST", "[::]")
    clean_env.setenv("HUGLLAMA_PORT", "8080")
    clean_env.setenv("HUGLLAMA_SHUTDOWN_GRACE_SECONDS", "95.5")
    clean_env.setenv("HUGLLAMA_LOG_LEVEL", "DEBUG")
    conf = _load()
    assert conf["bind"] == ["[::]:8080"]
    assert conf["graceful_timeout"] == 96 + 10
    assert conf["loglevel"] == "debug"


def test_default_bind_is_loopback_outside_the_container(clean_env: pytest.MonkeyPatch) -> None:
    assert _load()["bind"] == ["127.0.0.1:11434"]


def test_invalid_settings_fail_at_load(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUGLLAMA_SHUTDOWN_GRACE_SECONDS", "-1")
    with pytest.raises(ValueError):
        _load()


def test_every_name_is_a_gunicorn_setting(clean_env: pytest.MonkeyPatch) -> None:
    """gunicorn silently ignores unknown names in a config file, so a typo would go unnoticed."""
    clean_env.setenv("HUGLLAMA_HOST", "0.0.0.0:11434")
    cfg = Config()
    for name, value in _load().items():
        assert name in cfg.settings, f"{name} is not a gunicorn setting"
        cfg.set(name, value)  # runs gunicorn's validator
    assert cfg.worker_class is load_class("app.gunicorn_worker.DrainingWorker")
    assert cfg.address == [("0.0.0.0", 11434)]


def test_gunicorn_loads_the_app_with_this_config(tmp_path: Path) -> None:
    """`gunicorn --check-config` imports the config and the app factory exactly as the container's CMD does."""
    pytest.importorskip("app.main")
    env = clean_environ()
    env |= {"HUGLLAMA_HOME": str(tmp_path / "home"), "HUGLLAMA_HOST": "127.0.0.1:18434"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "--config", str(CONF)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_json_logs_cover_gunicorns_own_lines(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With HUGLLAMA_LOG_FORMAT=json, gunicorn's logger writes JSON through the app's formatter (the container
    tier checks every line of a real run); the control socket is off (it fails under a read-only root)."""
    import json
    import logging.config

    clean_env.setenv("HUGLLAMA_LOG_FORMAT", "json")
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # recorded, so both are restored afterwards
        clean_env.setenv(name, "")
        clean_env.delenv(name)
    conf = _load()
    assert conf["control_socket_disable"] is True
    assert os.environ["TQDM_DISABLE"] == "1", "tqdm reads it when first imported, in the worker"
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    logging.config.dictConfig(conf["logconfig_dict"])
    try:
        logging.getLogger("gunicorn.error").info("Booting worker with pid: %d", 7)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["logger"] == "gunicorn.error" and record["message"] == "Booting worker with pid: 7"
    finally:
        for name in ("gunicorn.error", "gunicorn.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    clean_env.delenv("HUGLLAMA_LOG_FORMAT")
    assert "logconfig_dict" not in _load(), "plain logs keep gunicorn's own format"

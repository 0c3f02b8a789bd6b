"""Every environment variable the deployment files set is one the service reads (a Settings env name or alias,
or an allow-listed non-Settings variable), config/example.env documents every setting with its true default,
and the values the deployment files set are valid settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.deploy.support import (
    DEPLOY,
    EXTRA_ENV,
    OVERLAYS,
    REPO,
    build_kustomization,
    env_to_field,
    field_env_names,
    find,
    parse_env_file,
    settings_env_names,
)

EXAMPLE_ENV = REPO / "config" / "example.env"


def _settings_with(env: dict[str, str], mp: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        return Settings()
    finally:
        for key in env:
            mp.delenv(key, raising=False)


def _check_keys(keys: set[str], where: str) -> None:
    unknown = keys - settings_env_names() - EXTRA_ENV
    assert not unknown, f"{where}: not a Settings variable (HUGLLAMA_<FIELD> or alias) nor allow-listed: {unknown}"


# ---- config/example.env ----


def test_example_env_keys_are_real_settings() -> None:
    lines = parse_env_file(EXAMPLE_ENV)
    _check_keys({line.key for line in lines}, "config/example.env")
    keys = [line.key for line in lines]
    assert len(keys) == len(set(keys)), "each variable once"


def test_example_env_documents_every_setting() -> None:
    documented = {line.key for line in parse_env_file(EXAMPLE_ENV)}
    missing = {names[0] for names in field_env_names().values() if names[0] not in documented}
    assert not missing, f"add these to config/example.env (commented out with their default): {sorted(missing)}"


def test_example_env_commented_lines_show_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    fields = env_to_field()
    for line in parse_env_file(EXAMPLE_ENV):
        if line.active or line.key not in fields:
            continue
        field = fields[line.key]
        got = getattr(_settings_with({line.key: line.value}, clean_env), field)
        assert got == getattr(defaults, field), f"example.env:{line.lineno}: {line.key}={line.value} is not the default"


def test_example_env_values_are_valid_together(clean_env: pytest.MonkeyPatch) -> None:
    active = {line.key: line.value for line in parse_env_file(EXAMPLE_ENV) if line.active}
    assert active["HUGLLAMA_HOST"] == "0.0.0.0:11434", "the container binds every interface"
    settings = _settings_with({k: v for k, v in active.items() if k in settings_env_names()}, clean_env)
    assert settings.bind() == ("0.0.0.0", 11434)
    assert str(settings.home) == active["HUGLLAMA_HOME"]


def test_example_env_has_no_inline_comments_or_quotes() -> None:
    """compose's env_file would keep them as part of the value."""
    for line in parse_env_file(EXAMPLE_ENV):
        assert " #" not in line.value and not line.value.startswith(("'", '"')), f"line {line.lineno}"


def test_parse_env_file_rejects_garbage(tmp_path: Any) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("HUGLLAMA_HOST=x\nexport FOO=1\n")
    with pytest.raises(ValueError):
        parse_env_file(bad)


# ---- compose, Kubernetes ----


def test_compose_environment_is_known(clean_env: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        _check_keys(set(env), f"docker-compose.yml {name}")
        _settings_with({k: v for k, v in env.items() if k in settings_env_names()}, clean_env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_and_secret_are_known_and_valid(overlay: str, clean_env: pytest.MonkeyPatch) -> None:
    docs = build_kustomization(DEPLOY / "overlays" / overlay)
    config = find(docs, "ConfigMap")["data"]
    # The Secret is the operator's, made with the command deploy/README.md gives: its keys must be settings too.
    readme = (DEPLOY / "README.md").read_text()
    secret = dict.fromkeys(re.findall(r"--from-literal=([A-Z_]+)=", readme), "x")
    assert "HUGLLAMA_API_KEYS" in secret
    _check_keys(set(config) | set(secret), f"overlay {overlay}")
    env = {k: str(v) for k, v in (config | secret).items() if k in settings_env_names()}
    settings = _settings_with(env, clean_env)
    assert settings.bind()[0] == "0.0.0.0"
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    _check_keys({e["name"] for e in container.get("env", [])}, f"overlay {overlay} container env")


def test_settings_reject_what_service_links_would_inject(clean_env: pytest.MonkeyPatch) -> None:
    """Why enableServiceLinks is off: a Service named `hugllama` would break the server at start."""
    with pytest.raises(ValueError):
        _settings_with({"HUGLLAMA_PORT": "tcp://10.0.0.1:11434"}, clean_env)

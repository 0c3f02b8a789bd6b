"""Settings: environment names, Ollama aliases, durations, bind address, and the README documenting them all."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from app.settings import Settings, parse_duration

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("-1m", -60),
        ("0", 0),
        ("2s", 2),
        ("1.5h", 5400),
        (300, 300),
        (-1, -1),
        ("250ms", 0.25),
        ("300", 300),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 minutes", "m5", "1x", "abc"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_defaults_are_secure() -> None:
    s = Settings()
    assert s.bind() == ("127.0.0.1", 11434)
    assert s.trust_remote_code is False
    assert s.api_key_list == []


def test_ollama_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:8080")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "10m")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "2")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "2048")
    monkeypatch.setenv("OLLAMA_ORIGINS", "https://a.example")
    s = Settings()
    assert s.bind() == ("0.0.0.0", 8080)
    assert (s.keep_alive, s.num_parallel, s.max_loaded_models, s.max_queue, s.context_length) == (600, 3, 2, 7, 2048)
    assert s.origins == "https://a.example"
    monkeypatch.setenv("HUGLLAMA_NUM_PARALLEL", "5")
    assert Settings().num_parallel == 5  # our own name wins


@pytest.mark.parametrize(
    "host,expected",
    [
        ("http://10.0.0.1:9000", ("10.0.0.1", 9000)),
        ("[::1]:8000", ("::1", 8000)),
        ("example", ("example", 11434)),
        (":7000", ("127.0.0.1", 7000)),
    ],
)
def test_bind_forms(host: str, expected: tuple[str, int]) -> None:
    assert Settings(host=host).bind() == expected


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGLLAMA_NUM_PARALLEL", "0")
    with pytest.raises(ValueError):
        Settings()


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        env = f"HUGLLAMA_{name.upper()}"
        assert f"`{env}`" in readme, env
        if isinstance(field.validation_alias, AliasChoices):
            for alias in field.validation_alias.choices:
                assert f"`{alias}`" in readme, alias

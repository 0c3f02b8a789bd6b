"""compose.open-webui.yml (README "Open WebUI"): valid Compose, its server settings are real settings, and it
gives Open WebUI the settings the end-to-end tier (tests/e2e) runs it with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from app.settings import Settings
from tests.e2e.conftest import OPENAI_PREFIX, webui_env

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("compose-spec.json")


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.open-webui.yml").read_text())
    return data


def test_valid_compose_file() -> None:
    jsonschema.validate(load(), json.loads(SCHEMA.read_text()))


def test_server_settings_are_real_and_valid() -> None:
    env = load()["services"]["hugllama-cpu"]["environment"]
    fields = Settings.model_fields
    values = {key.removeprefix("HUGLLAMA_").lower(): value for key, value in env.items()}
    assert set(values) <= set(fields), values
    Settings(**values)  # validates them


def test_open_webui_gets_the_tested_settings() -> None:
    env = load()["services"]["open-webui"]["environment"]
    tested = webui_env("http://hugllama-cpu:11434", Path("/app/backend/data"))
    for key in (
        "OLLAMA_BASE_URL",
        "ENABLE_OPENAI_API",
        "OPENAI_API_BASE_URL",
        "OPENAI_API_KEY",
        "RAG_EMBEDDING_ENGINE",
        "RAG_EMBEDDING_MODEL",
        "RAG_OLLAMA_BASE_URL",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE",
        "WEBUI_AUTH",
        "OFFLINE_MODE",
        "HF_HUB_OFFLINE",
        "ANONYMIZED_TELEMETRY",
        "DO_NOT_TRACK",
        "SCARF_NO_ANALYTICS",
    ):
        assert str(env[key]) == tested[key], key
    assert json.loads(env["OPENAI_API_CONFIGS"]) == {"0": {"prefix_id": OPENAI_PREFIX}}

"""deploy/overlays/vllm-upstream and docker/compose.vllm.yml (this service fronting vLLM): schema-valid, and the
front's configuration is one the service accepts, pointing at the vLLM Service with its key from the Secret."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.remote.config import load_upstreams
from app.settings import Settings
from tests.deploy.support import DEPLOY, EXTRA_ENV, REPO, build_kustomization, find, settings_env_names
from tests.deploy.test_compose import _validator

OVERLAY = DEPLOY / "overlays" / "vllm-upstream"
COMPOSE = REPO / "docker" / "compose.vllm.yml"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return build_kustomization(OVERLAY)


def test_overlay_validates(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_front_configuration_is_accepted(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    data = find(docs, "ConfigMap", "hugging-llama-config")["data"]
    assert not set(data) - settings_env_names() - EXTRA_ENV
    [config] = json.loads(data["HUGLLAMA_UPSTREAMS"])
    service = find(docs, "Service", "vllm")
    assert config["base_url"] == f"http://vllm:{service['spec']['ports'][0]['port']}"
    front = find(docs, "Deployment", "hugging-llama")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in front["containers"][0]["volumeMounts"]}
    assert config["api_key_file"].startswith(mounts["vllm-api-key"] + "/")
    secret = next(v for v in front["volumes"] if v["name"] == "vllm-api-key")["secret"]["secretName"]
    vllm_env = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]["containers"][0]["env"]
    key_ref = next(e for e in vllm_env if e["name"] == "VLLM_API_KEY")["valueFrom"]["secretKeyRef"]
    assert key_ref["name"] == secret and config["api_key_file"].endswith("/" + key_ref["key"])
    key = tmp_path / "api-key"
    key.write_text("k")
    monkeypatch.setenv("HUGLLAMA_UPSTREAMS", json.dumps([{**config, "api_key_file": str(key)}]))
    [up] = load_upstreams(Settings())
    assert (up.kind, up.preset) == ("openai", "vllm") and up.api_key is not None
    assert data["HUGLLAMA_PRELOAD"] == ""


def test_compose_example(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    errors = list(_validator().iter_errors(compose))
    assert not errors, errors[0].message
    env = compose["services"]["hugllama"]["environment"]
    for key, value in env.items():
        if key != "VLLM_API_KEY":
            monkeypatch.setenv(key, "k" if "${" in str(value) else str(value))
    monkeypatch.setenv("VLLM_API_KEY", "k")
    [up] = load_upstreams(Settings())
    assert (up.name, up.preset, up.base_url) == ("vllm", "vllm", "http://vllm:8000") and up.api_key is not None

"""Upstream configuration (env JSON, mounted file, the LLM_BACKEND_TYPE shorthand, keys) and upstream names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import InvalidRequest, ModelNotFound
from app.registry.store import AliasStore
from app.registry.types import Alias
from app.remote.catalog import LocalCatalog, UpstreamCatalog
from app.remote.config import UpstreamConfig, UpstreamConfigError, load_upstreams
from app.remote.upstream import RemoteModel, Upstream, error_message
from app.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLM_BACKEND_TYPE", "OLLAMA_BASE_URL", "VLLM_BASE_URL", "INSTRUCTLAB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("HUGLLAMA_" + name, raising=False)
    monkeypatch.delenv("DEFAULT_MODEL_NAME_OR_PATH", raising=False)


def test_no_upstreams_by_default() -> None:
    assert load_upstreams(Settings()) == []


def test_shorthand_from_the_original_design(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BACKEND_TYPE", "vllm")
    monkeypatch.setenv("VLLM_BASE_URL", "http://gpu-box:8000/v1/")
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11434")  # this service's bind address, not an upstream
    settings = Settings()
    [up] = load_upstreams(settings)
    assert (up.name, up.kind, up.preset, up.base_url) == ("vllm", "openai", "vllm", "http://gpu-box:8000")
    assert settings.bind() == ("0.0.0.0", 11434)
    monkeypatch.setenv("LLM_BACKEND_TYPE", "ollama")
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://ollama:11434")
    [up] = load_upstreams(Settings())
    assert (up.name, up.kind, up.base_url) == ("ollama", "ollama", "http://ollama:11434")


def test_named_upstreams_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-file\n")
    monkeypatch.setenv("GPU_KEY", "s3cret-env")
    env = [
        {"name": "gpu", "kind": "vllm", "base_url": "https://gpu:8000", "api_key_env": "GPU_KEY", "max_concurrency": 4}
    ]
    mounted = tmp_path / "upstreams.json"
    mounted.write_text(
        json.dumps(
            {
                "upstreams": [
                    {
                        "name": "lab",
                        "kind": "ollama",
                        "base_url": "http://lab:11434",
                        "api_key_file": str(key_file),
                        "models": ["llama3:latest"],
                    }
                ]
            }
        )
    )
    monkeypatch.setenv("HUGLLAMA_UPSTREAMS", json.dumps(env))
    monkeypatch.setenv("HUGLLAMA_UPSTREAMS_FILE", str(mounted))
    gpu, lab = load_upstreams(Settings())
    assert gpu.api_key is not None and gpu.api_key.get_secret_value() == "s3cret-env"
    assert lab.api_key is not None and lab.api_key.get_secret_value() == "s3cret-file"
    assert gpu.max_concurrency == 4 and lab.models == ["llama3:latest"]
    # never shown: not in repr, not in a dump, not in the status API
    for cfg in (gpu, lab):
        assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.model_dump_json()
        assert "s3cret" not in json.dumps(Upstream(cfg).status(), default=str)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"name": "a", "kind": "ollama", "base_url": "ftp://x"}], "base_url"),
        ([{"name": "Bad Name", "kind": "ollama", "base_url": "http://x"}], "name"),
        ([{"name": "a", "kind": "ollama", "base_url": "http://x", "api_key": "inline"}], "api_key"),
        ([{"name": "a", "kind": "ollama", "base_url": "http://x"}] * 2, "used twice"),
        ([{"name": "a", "kind": "ollama", "base_url": "http://x", "api_key_env": "NOPE_NOT_SET"}], "NOPE_NOT_SET"),
        ([{"name": "a", "kind": "nope", "base_url": "http://x"}], "kind"),
    ],
)
def test_bad_configs_are_refused_at_start(monkeypatch: pytest.MonkeyPatch, items: list[object], message: str) -> None:
    monkeypatch.setenv("HUGLLAMA_UPSTREAMS", json.dumps(items))
    with pytest.raises(UpstreamConfigError, match=message):
        load_upstreams(Settings())


def test_error_message_of_both_protocols() -> None:
    assert error_message(b'{"error": "model not found"}') == "model not found"
    assert error_message(b'{"error": {"message": "bad", "type": "x"}}') == "bad"
    assert error_message(b'{"object": "error", "message": "vllm says"}') == "vllm says"
    assert error_message(b"plain text") == "plain text"


# --- names ---


@pytest.fixture
def catalog(tmp_path: Path) -> UpstreamCatalog:
    settings = Settings(home=tmp_path)
    ups = {
        "gpu": Upstream(UpstreamConfig(name="gpu", kind="openai", preset="vllm", base_url="http://gpu:8000")),
        "box": Upstream(UpstreamConfig(name="box", kind="ollama", base_url="http://box:11434")),
        "fixed": Upstream(UpstreamConfig(name="fixed", kind="ollama", base_url="http://f:1", models=["a:latest"])),
    }
    ups["gpu"].models = {"org/Model-7B": RemoteModel(id="org/Model-7B")}
    store = AliasStore(settings.registry_path)
    return UpstreamCatalog(LocalCatalog(settings, store, set(ups)), ups)


def test_upstream_names_resolve_whether_or_not_the_upstream_is_up(catalog: UpstreamCatalog) -> None:
    assert catalog.upstreams["box"].up is None and not catalog.upstreams["box"].models  # never reached
    r = catalog.resolve("box/llama3")
    assert r.source.kind == "upstream" and r.base_name == "box/llama3:latest"
    assert catalog.resolve("gpu/org/Model-7B").base_name == "gpu/org/Model-7B"
    assert catalog.resolve("gpu/org/Model-7B:latest").base_name == "gpu/org/Model-7B"  # as /api/tags shows it
    with pytest.raises(ModelNotFound):
        catalog.resolve("fixed/b")  # not on its allow-list
    with pytest.raises(InvalidRequest):
        catalog.resolve("gpu/../x")
    names = {e.name for e in catalog.list_models()}
    assert {"gpu/org/Model-7B", "fixed/a:latest"} <= names


def test_aliases_on_upstream_models(catalog: UpstreamCatalog) -> None:
    catalog.put_alias(Alias(name="fast", model="gpu/org/Model-7B", system="Be brief.", options={"temperature": 0.2}))
    r = catalog.resolve("fast")
    assert r.base_name == "gpu/org/Model-7B" and r.alias is not None and r.alias.system == "Be brief."
    entry = next(e for e in catalog.list_models() if e.name == "fast:latest")
    assert entry.is_alias and entry.base == "gpu/org/Model-7B"
    shown = catalog.show("fast")
    assert shown["system"] == "Be brief." and shown["model_info"]["upstream.name"] == "gpu"
    catalog.copy("fast", "fast2")
    assert catalog.resolve("fast2").alias is not None
    with pytest.raises(InvalidRequest):
        catalog.put_alias(Alias(name="gpu/mine", model="smollm2:135m"))  # that prefix belongs to the upstream
    with pytest.raises(InvalidRequest):
        catalog.put_alias(Alias(name="q", model="box/llama3", quantization="8bit"))
    with pytest.raises(InvalidRequest):
        catalog.put_alias(Alias(name="t", model="box/llama3", template="{{ x }}"))
    with pytest.raises(InvalidRequest):
        catalog.put_alias(Alias(name="o", model="box/llama3", options={"nope": 1}))
    with pytest.raises(InvalidRequest):
        catalog.delete("box/llama3")
    catalog.delete("fast")
    with pytest.raises(ModelNotFound):
        catalog.resolve("fast")

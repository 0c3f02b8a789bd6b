from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidRequest, ModelNotFound, UpstreamUnavailable
from app.registry.catalog import ModelCatalog
from app.registry.pull import pull, select_files
from app.settings import Settings
from tests.helpers.fake_hub import FakeHub, FakeRepo, serving, tiny_model_files
from tests.helpers.net import free_port
from tests.unit.registry.conftest import make_gguf

WEIGHTS = 3_000_000


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with serving(FakeRepo("org/tiny", tiny_model_files(weights_bytes=WEIGHTS))) as h:
        yield h


def run(hub: FakeHub, settings: Settings, cache: Path, name: str = "org/tiny") -> list[dict[str, Any]]:
    return list(pull(name, settings=settings, endpoint=hub.url, cache_dir=cache))


def check_progress(events: list[dict[str, Any]], files: dict[str, bytes]) -> None:
    assert events[0] == {"status": "pulling manifest"}
    assert [e["status"] for e in events[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    per_file: dict[str, list[dict[str, Any]]] = {}
    for e in events[1:-3]:
        assert e["status"].startswith("pulling ") and e["digest"].startswith("sha256:") and len(e["digest"]) == 71
        per_file.setdefault(e["status"][len("pulling ") :], []).append(e)
    assert set(per_file) == {"config.json", "tokenizer_config.json", "model.safetensors"}  # README skipped
    assert list(per_file)[-1] == "config.json"  # written last
    for name, evs in per_file.items():
        done = [e["completed"] for e in evs]
        assert done == sorted(done) and done[-1] == len(files[name])
        assert {e["total"] for e in evs} == {len(files[name])}


def test_pull_end_to_end(hub: FakeHub, settings: Settings, cache: Path) -> None:
    files = hub.repos["org/tiny"].files
    events = run(hub, settings, cache)
    check_progress(events, files)
    assert len([e for e in events if e.get("status") == "pulling model.safetensors"]) >= 2  # streamed progress
    cat = ModelCatalog(settings, cache_dir=cache)
    entry = next(e for e in cat.list_models() if e.name == "org/tiny:latest")
    assert entry.source is not None and entry.source.kind == "hf_cache" and entry.format == "safetensors"
    snap = entry.source.path
    assert (snap / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert (snap / "model.safetensors").is_symlink()
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == hub.repos["org/tiny"].commit
    # huggingface_hub itself finds the pulled files offline
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache("org/tiny", "config.json", cache_dir=cache) == str(snap / "config.json")
    # a second pull downloads nothing
    before = len(hub.gets("model.safetensors"))
    check_progress(run(hub, settings, cache), files)
    assert len(hub.gets("model.safetensors")) == before


def test_cut_connection_resumes_within_pull(hub: FakeHub, settings: Settings, cache: Path) -> None:
    hub.cut_after["model.safetensors"] = 1_000_000
    check_progress(run(hub, settings, cache), hub.repos["org/tiny"].files)
    gets = hub.gets("model.safetensors")
    assert len(gets) == 2 and "Range" not in gets[0].headers
    start = int(gets[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_000_000


def test_interrupted_pull_resumes_next_time(hub: FakeHub, settings: Settings, cache: Path) -> None:
    hub.cut_after["model.safetensors"] = 1_500_000
    hub.fail_next_gets["model.safetensors"] = 1  # the in-pull retry fails too: the pull gives up
    with pytest.raises(UpstreamUnavailable):
        run(hub, settings, cache)
    partial = list((cache / "models--org--tiny" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size <= 1_500_000
    assert "org/tiny:latest" not in [e.name for e in ModelCatalog(settings, cache_dir=cache).list_models()]
    kept = partial[0].stat().st_size
    n = len(hub.gets("model.safetensors"))
    check_progress(run(hub, settings, cache), hub.repos["org/tiny"].files)
    second = hub.gets("model.safetensors")[n:]
    assert [g.headers.get("Range") for g in second] == [f"bytes={kept}-"]
    assert "org/tiny:latest" in [e.name for e in ModelCatalog(settings, cache_dir=cache).list_models()]


def test_corrupt_download_is_rejected(hub: FakeHub, settings: Settings, cache: Path) -> None:
    hub.corrupt.add("model.safetensors")
    with pytest.raises(UpstreamUnavailable, match="sha256"):
        run(hub, settings, cache)
    assert not list((cache / "models--org--tiny" / "blobs").glob("*.incomplete"))


def test_unreachable_hub_fails_fast(settings: Settings, cache: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as info:
        list(pull("org/tiny", settings=settings, endpoint=f"http://127.0.0.1:{port}", cache_dir=cache))
    assert time.monotonic() - t0 < 10
    assert info.value.status_code == 502 and f"127.0.0.1:{port}" in info.value.message


def test_not_found_and_gated(hub: FakeHub, settings: Settings, cache: Path) -> None:
    with pytest.raises(ModelNotFound):
        run(hub, settings, cache, "org/missing")
    with pytest.raises(ModelNotFound):
        run(hub, settings, cache, "org/tiny@no-such-branch")
    hub.add(FakeRepo("org/gated", tiny_model_files(), gated=True))
    with pytest.raises(InvalidRequest, match="gated"):
        run(hub, settings, cache, "org/gated")
    with pytest.raises(InvalidRequest, match="org/name"):
        run(hub, settings, cache, "smollm2:135m")


def test_pull_gguf_repo_by_tag(hub: FakeHub, settings: Settings, cache: Path, tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "g.gguf").read_bytes()
    hub.add(FakeRepo("org/m-GGUF", {"m.Q4_K_M.gguf": data, "m.Q8_0.gguf": data + b"", "README.md": b"x"}))
    events = run(hub, settings, cache, "hf.co/org/m-GGUF:Q8_0")
    assert [e["status"] for e in events if "digest" in e] == ["pulling m.Q8_0.gguf"]
    cat = ModelCatalog(settings, cache_dir=cache)
    r = cat.resolve("org/m-GGUF")
    assert r.source.gguf_file == "m.Q8_0.gguf" and r.source.kind == "hf_cache"


def test_select_files() -> None:
    names = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "README.md",
             "onnx/model.onnx", "modeling_x.py", "chat_template.jinja", "training_args.bin"]  # fmt: skip
    assert select_files(names) == ["chat_template.jinja", "model.safetensors", "tokenizer.json", "config.json"]
    assert "modeling_x.py" in select_files(names, trust_remote_code=True)
    assert select_files(["config.json", "pytorch_model.bin"]) == ["pytorch_model.bin", "config.json"]
    with pytest.raises(InvalidRequest):
        select_files(["README.md"])
    with pytest.raises(InvalidRequest, match="available"):
        select_files(["a.Q4_0.gguf"], tag="q8_0")

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from app.errors import ModelNotFound
from app.registry.store import AliasStore, RegistryCorrupt
from app.registry.types import Alias


def _worker(path: str, proc: int, count: int) -> None:
    store = AliasStore(Path(path))
    for i in range(count):
        store.put(Alias(name=f"p{proc}-a{i}", model="smollm2:135m", options={"temperature": 0.1 * i}))


def test_put_get_list_remove(tmp_path: Path) -> None:
    store = AliasStore(tmp_path / "registry.json")
    assert store.list() == []
    saved = store.put(Alias(name="Bot", model="smollm2:135m", system="be brief", options={"top_k": 5}))
    assert saved.name == "Bot:latest" and saved.created_at > 0 and saved.modified_at >= saved.created_at
    got = store.get("bot")  # case-insensitive, default tag
    assert got is not None and got.system == "be brief" and got.options == {"top_k": 5}
    data = json.loads((tmp_path / "registry.json").read_text())
    assert data["version"] == 1 and data["aliases"]["Bot:latest"]["model"] == "smollm2:135m"
    again = store.put(Alias(name="bot:latest", model="smollm2:135m", system="v2"))
    assert again.created_at == saved.created_at
    assert [a.name for a in store.list()] == ["bot:latest"]
    assert store.remove("BOT") is True
    assert store.remove("bot") is False
    assert store.get("bot") is None


def test_copy(tmp_path: Path) -> None:
    store = AliasStore(tmp_path / "registry.json")
    store.put(Alias(name="a", model="m:1", options={"seed": 3}))
    store.copy("a", "b:2")
    b = store.get("b:2")
    assert b is not None and b.model == "m:1" and b.options == {"seed": 3}
    with pytest.raises(ModelNotFound):
        store.copy("missing", "c")


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    procs = [
        ctx.Process(  # type: ignore[attr-defined]
            target=_worker, args=(str(path), p, 25)
        )
        for p in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {a.name for a in AliasStore(path).list()}
    assert len(names) == 100
    assert names == {f"p{p}-a{i}:latest" for p in range(4) for i in range(25)}


def test_crash_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.json"
    store = AliasStore(path)
    store.put(Alias(name="keep", model="m"))
    before = path.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(Alias(name="new", model="m"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temp file left behind
    fresh = AliasStore(path)
    assert [a.name for a in fresh.list()] == ["keep:latest"]


def test_live_reload_sees_other_writers(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    server_view = AliasStore(path)
    assert server_view.get("x") is None
    AliasStore(path).put(Alias(name="x", model="m", system="one"))
    got = server_view.get("x")
    assert got is not None and got.system == "one"
    time.sleep(0.01)
    AliasStore(path).put(Alias(name="x", model="m", system="two"))
    got = server_view.get("x")
    assert got is not None and got.system == "two"
    AliasStore(path).remove("x")
    assert server_view.get("x") is None


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 1, "aliases": []}', b'["x"]'])
def test_corrupt_file_is_moved_aside_not_emptied(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(content)
    store = AliasStore(path)
    with pytest.raises(RegistryCorrupt) as info:
        store.list()
    err = info.value
    assert err.status_code == 500 and err.code == "registry_corrupt"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("registry.json.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == content
    assert str(path) in err.message and str(kept[0]) in err.message
    assert not path.exists()
    # later reads see an empty registry; the next write starts a fresh file, the kept copy stays
    assert store.list() == []
    store.put(Alias(name="fresh", model="m"))
    assert [a.name for a in AliasStore(path).list()] == ["fresh:latest"]
    assert kept[0].read_bytes() == content


def test_corrupt_file_found_by_a_write(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(b"\x00garbage")
    store = AliasStore(path)
    with pytest.raises(RegistryCorrupt):
        store.put(Alias(name="a", model="m"))
    assert any(p.name.startswith("registry.json.corrupt-") for p in tmp_path.iterdir())
    store.put(Alias(name="a", model="m"))
    assert store.get("a") is not None

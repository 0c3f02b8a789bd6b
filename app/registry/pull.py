"""Pull a model repo from the Hugging Face Hub into the standard HF cache, yielding Ollama-style progress events.

Files are fetched by our own resumable downloader into the cache layout huggingface_hub uses (blobs named by
ETag, snapshot symlinks, refs): huggingface_hub 2.x deletes its partial files when a download fails, so an
interrupted pull would start over. Here the partial `blobs/<etag>.incomplete` survives and the next pull resumes
it with a Range request. config.json is written last, so the catalog never lists a half-pulled model.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from filelock import FileLock

from app.errors import (
    InsufficientStorage,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ServiceError,
    UpstreamUnavailable,
)
from app.registry import hfcache
from app.registry.names import parse_name
from app.registry.sources import gguf_tag
from app.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.1
CHUNK_BYTES = 1024 * 1024
TRANSPORT_RETRIES = 3
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*")
SKIP_PATTERNS = ("training_args*", "*.msgpack", "*.h5", "*.onnx*", "*.ot")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PULL_RETRY_AFTER_SECONDS = 10


class _PullSlots:
    """Pulls running in this process; past HUGLLAMA_MAX_CONCURRENT_PULLS a pull is refused, not queued (each
    holds a thread, a Hub connection and disk bandwidth)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    @contextmanager
    def take(self, limit: int) -> Iterator[None]:
        with self._lock:
            if self.active >= limit:
                err = Overloaded(
                    f"{self.active} pulls are already running (HUGLLAMA_MAX_CONCURRENT_PULLS={limit}); try again later"
                )
                err.retry_after = PULL_RETRY_AFTER_SECONDS
                raise err
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


PULL_SLOTS = _PullSlots()
_ST_MODULE_FILE = re.compile(r"^\d+_[A-Za-z]+/[^/]+$")


@dataclass(frozen=True, slots=True)
class _File:
    name: str
    size: int | None
    etag: str
    url: str
    sha256: str | None


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx

    types: list[type[BaseException]] = [httpx.TransportError, ConnectionError, TimeoutError]
    try:
        import httpx2  # huggingface_hub >= 2 uses its own httpx fork

        types.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(types)


def _map_hub_error(exc: BaseException, repo: str, endpoint: str) -> ServiceError:
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, hf_errors.GatedRepoError):
        return InvalidRequest(
            f"{repo} is a gated model: accept its terms on the Hugging Face Hub and set HF_TOKEN to a token "
            "with access, then pull again",
            param="model",
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelNotFound(repo)
    if isinstance(exc, hf_errors.RepositoryNotFoundError | hf_errors.RemoteEntryNotFoundError):
        return ModelNotFound(repo)
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return UpstreamUnavailable(f"cannot pull {repo}: HF_HUB_OFFLINE is set")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return InvalidRequest(
                f"the Hugging Face Hub refused access to {repo} (HTTP {status}): check HF_TOKEN", param="model"
            )
        return UpstreamUnavailable(f"the Hugging Face Hub at {endpoint} failed for {repo}: HTTP {status}")
    if isinstance(exc, _network_errors()):
        return UpstreamUnavailable(f"cannot reach the Hugging Face Hub at {endpoint}: {exc}")
    return UpstreamUnavailable(f"pulling {repo} from {endpoint} failed: {exc}")


def _module_files(names: list[str]) -> list[str]:
    """sentence-transformers module folders (1_Pooling/, 2_Dense/, ...): configs, and weights as safetensors or,
    where a folder has none, pytorch_model.bin."""
    files = [n for n in names if _ST_MODULE_FILE.match(n)]
    with_safetensors = {n.split("/")[0] for n in files if n.endswith(".safetensors")}
    return [
        n
        for n in files
        if n.endswith((".json", ".safetensors"))
        or (n.endswith("/pytorch_model.bin") and n.split("/")[0] not in with_safetensors)
    ]


def select_files(names: list[str], *, tag: str = "latest", trust_remote_code: bool = False) -> list[str]:
    """The files a pull fetches: config/tokenizer/weights of a transformers repo, or one GGUF file of a GGUF repo.

    config.json comes last (its presence marks a complete snapshot).
    """
    top = [n for n in names if "/" not in n]  # subfolders hold other formats (onnx/, original/, ...)
    patterns = ALLOW_PATTERNS + (("*.py",) if trust_remote_code else ())
    has_safetensors = any(n.endswith(".safetensors") for n in top)
    has_bin = any(fnmatch.fnmatch(n, "pytorch_model*.bin") for n in top)
    if "config.json" in top and (has_safetensors or has_bin):
        chosen = [
            n
            for n in top
            if any(fnmatch.fnmatch(n, p) for p in patterns) and not any(fnmatch.fnmatch(n, p) for p in SKIP_PATTERNS)
        ]
        if not has_safetensors:
            chosen += [n for n in top if fnmatch.fnmatch(n, "pytorch_model*.bin")]
        if "modules.json" in top:
            chosen += _module_files(names)
        return sorted(chosen, key=lambda n: (n == "config.json", n))
    ggufs = sorted(n for n in top if n.lower().endswith(".gguf"))
    if not ggufs:
        raise InvalidRequest("the repo has neither config.json with weights nor a .gguf file", param="model")
    if tag != "latest":
        matches = [n for n in ggufs if gguf_tag(n) == tag.lower() or tag.lower() in n.lower()]
        if not matches:
            tags = ", ".join(gguf_tag(n) for n in ggufs)
            raise InvalidRequest(f"no GGUF file matches tag {tag!r} (available: {tags})", param="model")
        return matches[:1]
    by_tag = {gguf_tag(n): n for n in ggufs}
    for preferred in ("q4_k_m", "q4_k_s", "q4_0", "q4_1", "q5_k_m", "q8_0"):
        if preferred in by_tag:
            return [by_tag[preferred]]
    return ggufs[:1]


def _progress_digest(f: _File, repo: str) -> str:
    if f.sha256:
        return f"sha256:{f.sha256}"
    return "sha256:" + hashlib.sha256(f"{repo}\n{f.name}\n{f.etag}".encode()).hexdigest()


def _link(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.exists() or pointer.is_symlink():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:  # no symlink support (some Windows/NFS setups): copy, like huggingface_hub does
        shutil.copyfile(blob, pointer)


def pull(
    repo: str,
    *,
    settings: Settings,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    token: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Download `org/repo[:tag][@revision]` into the HF cache, yielding progress dicts (blocking: run in a thread).

    Raises:
        InvalidRequest: not an HF repo name, gated/unauthorised, or nothing servable in the repo.
        ModelNotFound: the repo or revision does not exist on the Hub.
        Overloaded: HUGLLAMA_MAX_CONCURRENT_PULLS pulls are already running (Retry-After set).
        InsufficientStorage: the files to fetch are larger than the free space of the cache's disk.
        UpstreamUnavailable: the Hub cannot be reached, fails, or a download is corrupt.
    """
    with PULL_SLOTS.take(settings.max_concurrent_pulls):
        yield from _pull(
            repo, settings=settings, revision=revision, endpoint=endpoint, cache_dir=cache_dir, token=token
        )


def _pull(
    repo: str,
    *,
    settings: Settings,
    revision: str | None,
    endpoint: str | None,
    cache_dir: Path | None,
    token: str | None,
) -> Iterator[dict[str, Any]]:
    parsed = parse_name(repo)
    if parsed.namespace is None:
        raise InvalidRequest(f"cannot pull {repo!r}: only Hugging Face repos (org/name) can be pulled", param="model")
    repo_id = parsed.repo
    rev = revision or parsed.revision
    base = _endpoint(endpoint)
    cdir = Path(cache_dir) if cache_dir is not None else hfcache.default_cache_dir()
    timeout = settings.pull_timeout_seconds

    yield {"status": "pulling manifest"}
    try:
        files, commit = _manifest(repo_id, rev, base, timeout, token, tag=parsed.tag, settings=settings)
    except Exception as exc:  # every failure becomes a typed service error
        raise _map_hub_error(exc, repo_id, base) from exc

    storage = hfcache.repo_folder(repo_id, cdir)
    _check_disk(files, storage, cdir, repo_id)
    for f in files:
        try:
            yield from _fetch(f, storage, commit, timeout, token, repo_id, cdir)
        except ServiceError:
            raise
        except Exception as exc:
            raise _map_hub_error(exc, repo_id, base) from exc

    yield {"status": "verifying sha256 digest"}
    snapshot = storage / "snapshots" / commit
    missing = [f.name for f in files if not (snapshot / f.name).exists()]
    if missing:
        raise UpstreamUnavailable(f"pull of {repo_id} is incomplete: {', '.join(missing)} missing")
    yield {"status": "writing manifest"}
    refs = storage / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    ref_name = rev or "main"
    if ref_name != commit:
        tmp = refs / f".{ref_name.replace('/', '_')}.tmp"
        target = refs / ref_name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(commit)
        os.replace(tmp, target)
    hfcache.invalidate()
    yield {"status": "success"}


def _free_bytes(path: Path) -> int:
    for candidate in (path, *path.parents):  # the cache may not exist yet: ask its nearest existing parent
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage("/").free


def _check_disk(files: list[_File], storage: Path, cache_dir: Path, repo_id: str) -> None:
    """507 before the first byte when what is still to fetch does not fit on the cache's disk."""
    need = 0
    for f in files:
        blob = storage / "blobs" / f.etag
        if f.size is None or blob.is_file():
            continue
        partial = blob.with_name(blob.name + ".incomplete")
        need += max(0, f.size - (partial.stat().st_size if partial.is_file() else 0))
    free = _free_bytes(cache_dir)
    if need > free:
        raise InsufficientStorage(
            f"not enough free disk to pull {repo_id}: {need / 1e9:.2f} GB to download, {free / 1e9:.2f} GB free "
            "in the Hugging Face cache"
        )


def _manifest(
    repo_id: str,
    revision: str | None,
    endpoint: str,
    timeout: float,
    token: str | None,
    *,
    tag: str,
    settings: Settings,
) -> tuple[list[_File], str]:
    from huggingface_hub import HfApi, get_hf_file_metadata

    info = HfApi(endpoint=endpoint, token=token).model_info(
        repo_id, revision=revision, files_metadata=True, timeout=timeout
    )
    commit = info.sha
    if not commit:
        raise UpstreamUnavailable(f"the Hub answered no commit for {repo_id}")
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    names = select_files(list(siblings), tag=tag, trust_remote_code=settings.trust_remote_code)
    out = []
    for name in names:
        url = f"{endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(name)}"
        meta = get_hf_file_metadata(url, token=token, timeout=timeout)
        if not meta.etag:
            raise UpstreamUnavailable(f"the Hub sent no ETag for {repo_id}/{name}")
        sib = siblings[name]
        lfs_sha = sib.lfs.sha256 if sib.lfs is not None else None
        sha = lfs_sha or (meta.etag if _SHA256.match(meta.etag) else None)
        size = meta.size if meta.size is not None else sib.size
        out.append(_File(name=name, size=size, etag=meta.etag, url=meta.location or url, sha256=sha))
    return out, commit


def _fetch(
    f: _File, storage: Path, commit: str, timeout: float, token: str | None, repo_id: str, cache_dir: Path
) -> Iterator[dict[str, Any]]:
    blob = storage / "blobs" / f.etag
    pointer = storage / "snapshots" / commit / f.name
    digest = _progress_digest(f, repo_id)
    status = f"pulling {f.name}"
    if blob.is_file():
        _link(blob, pointer)
        size = blob.stat().st_size
        yield {"status": status, "digest": digest, "total": size, "completed": size}
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock_path = cache_dir / ".locks" / storage.name / f"{f.etag}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        if not blob.is_file():
            yield from _download(f, blob, timeout, token, status, digest)
        _link(blob, pointer)


def _download(
    f: _File, blob: Path, timeout: float, token: str | None, status: str, digest: str
) -> Iterator[dict[str, Any]]:
    import httpx
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    partial = blob.with_name(blob.name + ".incomplete")
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    attempts = 0
    reported = -1
    total = f.size
    partial.touch(exist_ok=True)
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client:
        while True:
            done = partial.stat().st_size if partial.exists() else 0
            if total is not None and done > total:
                partial.unlink()
                done = 0
            if total is not None and done == total:
                break
            req_headers = dict(headers)
            if done:
                req_headers["Range"] = f"bytes={done}-"
            try:
                with client.stream("GET", f.url, headers=req_headers) as resp:
                    if resp.status_code == 416 and total is not None and done >= total:
                        break
                    if resp.status_code >= 400:
                        raise UpstreamUnavailable(
                            f"downloading {f.name} failed: HTTP {resp.status_code} from {resp.url.host}"
                        )
                    mode = "ab" if done and resp.status_code == 206 else "wb"
                    if mode == "wb":
                        done = 0
                    if total is None:
                        length = resp.headers.get("Content-Length")
                        total = int(length) + done if length and length.isdigit() else None
                    last = 0.0
                    with open(partial, mode) as out:
                        for chunk in resp.iter_bytes():  # as it arrives: a cut keeps what came
                            out.write(chunk)
                            done += len(chunk)
                            now = time.monotonic()
                            if now - last >= PROGRESS_INTERVAL_SECONDS:
                                last, reported = now, done
                                yield {"status": status, "digest": digest, "total": total or done, "completed": done}
                        out.flush()
                        os.fsync(out.fileno())
                if total is None or done >= total:
                    break
                raise httpx.RemoteProtocolError("connection closed before the file was complete")
            except (httpx.TransportError, ConnectionError) as exc:
                attempts += 1
                if attempts > TRANSPORT_RETRIES:
                    raise UpstreamUnavailable(
                        f"downloading {f.name} failed after {attempts} attempts: {exc}; pull again to resume"
                    ) from exc
                log.warning("download of %s interrupted (%s); resuming", f.name, exc)
                time.sleep(min(0.5 * attempts, 2.0))
    size = partial.stat().st_size
    if reported != size:
        yield {"status": status, "digest": digest, "total": total or size, "completed": size}
    if f.sha256:
        h = hashlib.sha256()
        with open(partial, "rb") as src:
            for block in iter(lambda: src.read(CHUNK_BYTES), b""):
                h.update(block)
        if h.hexdigest() != f.sha256:
            partial.unlink(missing_ok=True)
            raise UpstreamUnavailable(f"downloaded {f.name} does not match its sha256 digest; pull again")
    elif total is not None and size != total:
        partial.unlink(missing_ok=True)
        raise UpstreamUnavailable(f"downloaded {f.name} has {size} bytes, expected {total}; pull again")
    os.replace(partial, blob)

"""AliasStore: the alias registry file (`$HUGLLAMA_HOME/registry.json`), shared by the CLI and running servers.

Writes are atomic (temp file + fsync + os.replace) under a file lock; reads re-read the file when it changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from app.errors import ModelNotFound, ServiceError
from app.registry.atomic import write_atomic
from app.registry.limits import check_count
from app.registry.names import name_key, validate_alias_name
from app.registry.types import Alias

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOCK_TIMEOUT_SECONDS = 30.0


class RegistryCorrupt(ServiceError):
    status_code = 500
    code = "registry_corrupt"


_Signature = tuple[int, int, int]  # (st_ino, st_mtime_ns, st_size)


class AliasStore:
    """Aliases keyed case-insensitively by their canonical name.

    A corrupt file is moved aside to `registry.json.corrupt-<timestamp>` (never emptied in place) and
    RegistryCorrupt is raised once; later reads see an empty registry and the next write starts a fresh file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)
        self._mutex = threading.RLock()
        self._signature: _Signature | None = None
        self._aliases: dict[str, Alias] = {}

    # --- reading ---

    def _stat(self) -> _Signature | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _parse(self, raw: bytes) -> dict[str, Alias]:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("aliases"), dict):
            raise ValueError('expected {"version": 1, "aliases": {...}}')
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        out: dict[str, Alias] = {}
        for name, body in data["aliases"].items():
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise ValueError(f"alias {name!r} has no model")
            alias = Alias.from_json(str(name), body)
            out[name_key(alias.name)] = alias
        return out

    def _load(self) -> dict[str, Alias]:
        """The current aliases, re-reading the file only when its signature changed."""
        with self._mutex:
            sig = self._stat()
            if sig is None:
                self._signature, self._aliases = None, {}
                return self._aliases
            if sig == self._signature:
                return self._aliases
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                self._signature, self._aliases = None, {}
                return self._aliases
            try:
                aliases = self._parse(raw)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, ServiceError) as exc:
                self._quarantine(raw, exc)
                raise AssertionError("unreachable") from exc  # _quarantine always raises
            self._signature, self._aliases = sig, aliases
            return aliases

    def _quarantine(self, raw: bytes, exc: Exception) -> None:
        with self._locked():
            kept: Path | None = None
            try:
                current = self.path.read_bytes()
            except FileNotFoundError:
                current = None
            if current == raw:
                kept = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
                os.replace(self.path, kept)
                log.error("alias registry %s is corrupt (%s); moved it to %s", self.path, exc, kept)
            self._signature, self._aliases = None, {}
        where = f"it was moved to {kept}" if kept else "another process already moved it aside"
        raise RegistryCorrupt(
            f"alias registry {self.path} is corrupt ({exc}); {where} and the next alias change starts a fresh "
            "registry (restore aliases from the kept copy by hand)"
        )

    def get(self, name: str) -> Alias | None:
        return self._load().get(name_key(name))

    def list(self) -> list[Alias]:
        return sorted(self._load().values(), key=lambda a: a.name.lower())

    # --- writing ---

    def _locked(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._lock

    def _write(self, aliases: dict[str, Alias]) -> None:
        body: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "aliases": {a.name: a.to_json() for a in sorted(aliases.values(), key=lambda a: a.name.lower())},
        }
        data = json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
        write_atomic(self.path, data)
        self._signature, self._aliases = self._stat(), dict(aliases)

    def _mutate(self, change: Any) -> Any:
        with self._mutex:
            try:
                with self._locked():
                    self._signature = None  # always re-read under the lock: another process may have written
                    aliases = dict(self._load())
                    result = change(aliases)
                    if result is not False:
                        self._write(aliases)
                    return result
            except Timeout as exc:
                raise ServiceError(f"alias registry {self.path} is locked by another process; try again") from exc

    def put(self, alias: Alias, *, max_aliases: int | None = None) -> Alias:
        """Create or replace an alias; returns it with its canonical name and timestamps. A new alias past
        `max_aliases` is refused (checked under the file lock, so concurrent writers cannot overshoot)."""
        name = validate_alias_name(alias.name)

        def change(aliases: dict[str, Alias]) -> Alias:
            key = name_key(name)
            old = aliases.get(key)
            if old is None and max_aliases is not None:
                check_count(len(aliases), max_aliases)
            now = time.time()
            created = old.created_at if old else (alias.created_at or now)
            stored = dataclasses.replace(alias, name=name, created_at=created, modified_at=now)
            aliases[key] = stored
            return stored

        result: Alias = self._mutate(change)
        return result

    def remove(self, name: str) -> bool:
        key = name_key(name)

        def change(aliases: dict[str, Alias]) -> bool:
            if key not in aliases:
                return False
            del aliases[key]
            return True

        removed: bool = self._mutate(change)
        return removed

    def copy(self, src: str, dst: str) -> Alias:
        """Copy alias `src` to the name `dst` (replacing an alias of that name). Raises ModelNotFound."""
        name = validate_alias_name(dst)

        def change(aliases: dict[str, Alias]) -> Alias:
            source = aliases.get(name_key(src))
            if source is None:
                raise ModelNotFound(src)
            now = time.time()
            copied = dataclasses.replace(source, name=name, created_at=now, modified_at=now)
            aliases[name_key(name)] = copied
            return copied

        result: Alias = self._mutate(change)
        return result

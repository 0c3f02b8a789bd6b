"""Housekeeping of converted GGUF snapshots: what each was converted from, group access, and removal of the
ones nothing can use any more (their GGUF is gone or changed, or they predate content keys).

Each snapshot carries `hugllama-source.json`: the GGUF's path, size, mtime and sha256 when it was converted.
A snapshot is in use while that file still has that content; content, not mtime, decides, because pip stamps
a new mtime on every install of the same file (an image rebuild).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from app.registry.sources import gguf_digest

log = logging.getLogger(__name__)

MARKER = "hugllama-source.json"
# A snapshot directory's name: a label, then the 16 hex digits of snapshot_key's digest.
_SNAPSHOT_NAME = re.compile(r".+-[0-9a-f]{16}")


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_with_group(root: Path) -> None:
    """Give a new snapshot the modes the umask allows (mkdtemp makes 0700): the container's umask 0002 lets the
    group read it, which is how Kubernetes' fsGroup and OpenShift's arbitrary uid reach the volume."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def write_marker(snapshot: Path, gguf: Path, *, embedded: bool) -> None:
    resolved = gguf.resolve()
    st = resolved.stat()
    record = {
        "source": str(resolved),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": gguf_digest(resolved, embedded=embedded),
        "embedded": embedded,
    }
    (snapshot / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def in_use(snapshot: Path) -> bool:
    """Whether the GGUF this snapshot was converted from still exists with the same content."""
    try:
        record = json.loads((snapshot / MARKER).read_text())
        source = Path(record["source"])
        st = source.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if st.st_size != record.get("size"):
        return False
    if st.st_mtime_ns == record.get("mtime_ns"):
        return True
    return bool(gguf_digest(source, embedded=bool(record.get("embedded"))) == record.get("sha256"))


def prune_unused(snapshots: Path, keep: Path) -> None:
    """Remove the snapshots in `snapshots` that nothing can load any more (each is a full fp32 copy of a model).

    Only snapshot-shaped directories are touched (name `<label>-<16 hex>` with a config.json); conversions in
    progress (`.convert-*`) and anything else are left alone.
    """
    try:
        entries = list(snapshots.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry == keep or entry.name.startswith(".") or not _SNAPSHOT_NAME.fullmatch(entry.name):
            continue
        if not entry.is_dir() or not (entry / "config.json").exists() or in_use(entry):
            continue
        log.info("removing unused snapshot %s (its GGUF is gone or changed)", entry.name)
        shutil.rmtree(entry, ignore_errors=True)

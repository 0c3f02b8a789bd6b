"""How the CLI shows things: tables, sizes, relative times, and pull progress (\\r-updated lines on a tty,
plain lines otherwise)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

_FRACTION = re.compile(r"(\.\d{6})\d+")
# An expires_at this far ahead means "kept loaded forever" (Ollama sends a far-future timestamp).
_FOREVER_SECONDS = 50 * 365 * 86400


def human_size(n: int | float | None) -> str:
    """Decimal units like `ollama list` ("98 MB", "4.7 GB")."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 10 else f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.0f} TB"  # pragma: no cover - the loop always returns


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from a number or an RFC 3339 string (nanosecond fractions and `Z` allowed)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    text = _FRACTION.sub(r"\1", str(value).strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _span(seconds: float) -> str:
    s = int(seconds)
    for size, unit in (
        (365 * 86400, "year"),
        (30 * 86400, "month"),
        (7 * 86400, "week"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "0 seconds"


def human_since(value: Any, now: float | None = None) -> str:
    ts = to_epoch(value)
    if ts is None or ts <= 0:
        return "?"
    delta = (now if now is not None else time.time()) - ts
    if delta < 5:
        return "just now"
    return f"{_span(delta)} ago"


def human_until(value: Any, now: float | None = None) -> str:
    ts = to_epoch(value)
    if ts is None:
        return "?"
    delta = ts - (now if now is not None else time.time())
    if delta > _FOREVER_SECONDS:
        return "Forever"
    if delta <= 0:
        return "Stopping..."
    return f"{_span(delta)} from now"


def processor(size: int | None, size_vram: int | None) -> str:
    """Ollama's PROCESSOR column: where a loaded model's bytes are."""
    if not size:
        return "100% CPU" if not size_vram else "100% GPU"
    vram = max(0, min(int(size_vram or 0), int(size)))
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    gpu = round(vram * 100 / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces; trailing blanks trimmed."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        lines.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines)


def _bar(completed: int, total: int, width: int = 25) -> str:
    filled = int(width * completed / total) if total else 0
    return "▕" + "█" * filled + " " * (width - filled) + "▏"


class Progress:
    """Renders Ollama pull events: one line per file (`digest`), redrawn with \\r on a tty, printed once per
    file and once per status on a pipe."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._digest: str | None = None
        self._pending: str | None = None  # the current file's latest line (pipe mode prints it when it ends)
        self._printed = False  # pipe mode: the current file's completed line is out
        self._last_status: str | None = None

    def _file_line(self, event: dict[str, Any]) -> str:
        status = str(event.get("status") or f"pulling {str(event.get('digest', ''))[7:19]}")
        total = int(event.get("total") or 0)
        completed = int(event.get("completed") or 0)
        if not total:
            return status
        pct = min(100, int(completed * 100 / total))
        return f"{status}: {pct:3d}% {_bar(completed, total)} {human_size(completed)}/{human_size(total)}"

    def _end_file(self) -> None:
        if self._digest is None:
            return
        if self.tty:
            self.out.write("\n")
        elif self._pending is not None:
            self.out.write(self._pending + "\n")
        self._digest, self._pending, self._printed = None, None, False

    def update(self, event: dict[str, Any]) -> None:
        digest = event.get("digest")
        if digest:
            if digest != self._digest:
                self._end_file()
                self._digest = str(digest)
            line = self._file_line(event)
            if self.tty:
                self.out.write("\r\x1b[K" + line)
            elif not self._printed:
                self._pending = line
                total = int(event.get("total") or 0)
                if total and int(event.get("completed") or 0) >= total:
                    self.out.write(line + "\n")
                    self._pending, self._printed = None, True
            self.out.flush()
            return
        status = str(event.get("status") or "")
        if not status or status == self._last_status:
            return
        self._end_file()
        self._last_status = status
        self.out.write(status + "\n")
        self.out.flush()

    def close(self) -> None:
        self._end_file()
        self.out.flush()

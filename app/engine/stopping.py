"""Stop-sequence matching over streamed text, holding back partial matches so a stop string never leaks."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed decoded text as it arrives; get back what is safe to emit and whether a stop string was reached.

    The stop string itself is never emitted. With several stops the earliest match in the text wins.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended generation

    def feed(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        buf = self._held + text
        cut, which = -1, None
        for stop in self.stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut, which = at, stop
        if which is not None:
            self.stopped, self.matched, self._held = True, which, ""
            return buf[:cut], True
        hold = self._partial_suffix(buf)
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of some stop string."""
        for size in range(min(self._longest - 1, len(buf)), 0, -1):
            tail = buf[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0

    def flush(self) -> str:
        """Held-back text, released when generation ends without a match."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

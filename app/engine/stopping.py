"""Stop-sequence matching over streamed text, holding back partial matches so a stop string never leaks."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed decoded text as it arrives; get back what is safe to emit and whether a stop string was reached.

    The stop string itself is never emitted. With several stops the earliest match in the text wins.
    """

    def __init__(self, stops: Sequence[str], repeat_chars: int = 0) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended generation
        self.repeats = RepeatGuard(repeat_chars) if repeat_chars > 0 else None

    def feed(self, text: str) -> tuple[str, bool]:
        out, stopped = self._feed(text)
        if not stopped and self.repeats is not None and out and self.repeats.feed(out):
            self.stopped = True
            return out, True
        return out, stopped

    def _feed(self, text: str) -> tuple[str, bool]:
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


class RepeatGuard:
    """Opt-in loop stop (HUGLLAMA_STOP_REPEATS_CHARS): true once the text ends with one block of up to
    MAX_PERIOD characters repeated verbatim at least MIN_REPEATS times in a row over at least `min_chars` characters.

    It only ever fires on such a verbatim repeat, so an answer without one is never changed.
    """

    MAX_PERIOD = 512
    MIN_REPEATS = 4

    def __init__(self, min_chars: int) -> None:
        self.min_chars = min_chars
        self._keep = max(min_chars, self.MAX_PERIOD * self.MIN_REPEATS) + self.MAX_PERIOD
        self._tail = ""
        self.period: int | None = None  # the repeating block's length once it fired

    def feed(self, text: str) -> bool:
        tail = (self._tail + text)[-self._keep :]
        self._tail = tail
        n = len(tail)
        last = tail[-1] if tail else ""
        for period in range(1, self.MAX_PERIOD + 1):
            span = max(self.min_chars, period * self.MIN_REPEATS)
            if span > n:
                break
            # Periodic with `period` over the last `span` characters: each character equals the one `period` back.
            if tail[-1 - period] == last and tail[n - span + period :] == tail[n - span : n - period]:
                self.period = period
                return True
        return False

"""The opt-in loop stop (HUGLLAMA_STOP_REPEATS_CHARS): it ends text that repeats one block verbatim, and never
changes text without such a repeat, fed in any chunking."""

from __future__ import annotations

import pytest

from app.engine.stopping import RepeatGuard, StopMatcher

# Text that is not a loop but has the local repetition real answers have: a markdown table rule, a list, code.
PROSE = (
    "Here is a comparison of the three options:\n\n"
    "| Option | Cost | Speed |\n|---|---|---|\n| A | low | slow |\n| B | medium | medium |\n| C | high | fast |\n\n"
    "1. Pick A when cost matters.\n2. Pick B for balance.\n3. Pick C when speed matters.\n\n"
    "```python\nfor i in range(3):\n    print(i)\n    print(i * 2)\n```\n"
    "---------------------------------------------\n"
    "In short, B is the usual choice. " * 3
)


def feed_all(matcher: StopMatcher, text: str, size: int) -> tuple[str, bool]:
    out = []
    for i in range(0, len(text), size):
        emitted, stopped = matcher.feed(text[i : i + size])
        out.append(emitted)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_text_without_a_verbatim_loop_is_unchanged(size: int) -> None:
    emitted, stopped = feed_all(StopMatcher([], repeat_chars=200), PROSE, size)
    assert (emitted, stopped) == (PROSE, False)


@pytest.mark.parametrize("size", [1, 4, 9])
def test_a_loop_ends_once_it_covers_the_span(size: int) -> None:
    block = "The title is: Chat about the capital of France. "
    text = "Sure. " + block * 40
    emitted, stopped = feed_all(StopMatcher([], repeat_chars=200), text, size)
    assert stopped and emitted.startswith("Sure. " + block)
    # It stops as soon as the last 200 characters (at least 4 blocks) repeat, not later.
    assert len(block) * 4 <= len(emitted) - len("Sure. ") < len(block) * 6


def test_off_by_default_and_with_zero() -> None:
    loop = "jwt_" * 500
    assert feed_all(StopMatcher([]), loop, 4) == (loop, False)
    assert feed_all(StopMatcher([], repeat_chars=0), loop, 4) == (loop, False)


def test_short_repeats_need_the_whole_span() -> None:
    guard = RepeatGuard(100)
    assert not guard.feed("ab" * 49)  # 98 characters of a period-2 loop: not yet
    assert guard.feed("ab") and guard.period == 2


def test_long_blocks_need_four_repeats() -> None:
    block = "".join(str(i) for i in range(60))  # 110 characters without a shorter period, more than the span / 4
    guard = RepeatGuard(100)
    assert not guard.feed(block * 3)
    assert guard.feed(block) and guard.period == 110


def test_stop_strings_still_win_and_are_not_emitted() -> None:
    m = StopMatcher(["STOP"], repeat_chars=50)
    emitted, stopped = feed_all(m, "hello STOP " + "x" * 100, 3)
    assert (emitted, stopped, m.matched) == ("hello ", True, "STOP")

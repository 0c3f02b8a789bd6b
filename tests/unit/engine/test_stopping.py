"""StopMatcher: what is emitted chunk by chunk, what is held back, where it stops."""

from __future__ import annotations

import pytest

from app.engine.stopping import StopMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[list[str], bool, str]:
    """Feed every chunk until a stop; returns the emitted pieces (one per fed chunk), stopped, flushed text."""
    m = StopMatcher(stops)
    out: list[str] = []
    stopped = False
    for chunk in chunks:
        text, stopped = m.feed(chunk)
        out.append(text)
        if stopped:
            break
    return out, stopped, m.flush()


@pytest.mark.parametrize(
    ("stops", "chunks", "emitted", "stopped", "flushed"),
    [
        # no stops: everything passes straight through
        ([], ["ab", "cd"], ["ab", "cd"], False, ""),
        ([""], ["ab", "cd"], ["ab", "cd"], False, ""),
        # whole stop inside one chunk: text before it only
        (["STOP"], ["hello STOP world"], ["hello "], True, ""),
        (["STOP"], ["STOP"], [""], True, ""),
        # stop split over many chunks: the partial prefix is held back, never leaked
        (["STOP"], ["hel", "lo S", "T", "O", "P", "more"], ["hel", "lo ", "", "", ""], True, ""),
        (["</s>"], ["a<", "/", "s", ">b"], ["a", "", "", ""], True, ""),
        # a false start is released as soon as it cannot be a stop any more
        (["STOP"], ["ST", "AR", "T"], ["", "STAR", "T"], False, ""),
        (["STOP"], ["x ST", "OX"], ["x ", "STOX"], False, ""),
        # held text at the natural end comes back from flush
        (["STOP"], ["abc ST"], ["abc "], False, "ST"),
        # multiple stops: the earliest match wins
        (["world", "lo"], ["hello world"], ["hel"], True, ""),
        (["bb", "a"], ["xxbba"], ["xx"], True, ""),
        # overlapping stops and self-overlapping prefixes
        (["abc", "bcd"], ["ab", "cd"], ["", ""], True, ""),
        (["abc", "bcd"], ["xbc", "d"], ["x", ""], True, ""),
        (["aab"], ["a", "a", "a", "b"], ["", "", "a", ""], True, ""),
        (["aab"], ["aaa"], ["a"], False, "aa"),
        # a longer stop whose prefix is another stop: the shorter one matches first
        (["<|im_end|>", "<|"], ["x<", "|im_end|>"], ["x", ""], True, ""),
        # unicode (characters, not bytes)
        (["。"], ["你好", "。再见"], ["你好", ""], True, ""),
        (["😀!"], ["ok 😀", "!"], ["ok ", ""], True, ""),
        (["é"], ["cafe", "é au lait"], ["cafe", ""], True, ""),
        # newline stops
        (["\n\n"], ["line\n", "\nnext"], ["line", ""], True, ""),
        (["\n\n"], ["line\n", "next"], ["line", "\nnext"], False, ""),
    ],
)
def test_stop_table(stops: list[str], chunks: list[str], emitted: list[str], stopped: bool, flushed: str) -> None:
    assert run(stops, chunks) == (emitted, stopped, flushed)


@pytest.mark.parametrize(
    ("stops", "text"),
    [
        (["STOP"], "the quick STOP brown fox"),
        (["User:", "###"], "answer: 42\n### User: more"),
        (["<|im_end|>"], "héllo wörld 世界 😀<|im_end|>tail"),
        (["never"], "no stop string in here at all"),
    ],
)
def test_any_chunking_gives_the_same_text(stops: list[str], text: str) -> None:
    whole, _, flushed = run(stops, [text])
    expected = "".join(whole) + flushed
    for size in (1, 2, 3, 5):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        out, _, rest = run(stops, chunks)
        assert "".join(out) + rest == expected
        for stop in stops:
            assert stop not in "".join(out) + rest


def test_after_stop_everything_is_swallowed() -> None:
    m = StopMatcher(["END"])
    assert m.feed("aEND") == ("a", True)
    assert m.matched == "END"
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


def test_nothing_held_when_no_prefix_matches() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("abc") == ("abc", False)
    assert m.flush() == ""
    assert m.matched is None

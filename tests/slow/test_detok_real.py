"""IncrementalDetokenizer must reproduce tokenizer.decode(all ids) piece by piece, never emitting half characters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.engine.detok import IncrementalDetokenizer

TEXTS = [
    "Hello, world!",
    "Café crème, naïve façade, Ærøskøbing",
    "emoji: 😀👍🏽 family: 👨‍👩‍👧 flags 🇫🇷",
    "中文测试，日本語のテキスト、한국어",
    "mixed ∑ x² ≤ ∞ — “quotes” … and\ttabs\nnewlines  double  spaces",
    "",
]


@pytest.fixture(scope="module")
def smollm(embedded_snapshot: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_snapshot))


@pytest.fixture(scope="module")
def sentencepiece_like() -> Any:
    """A tiny Llama-style tokenizer: byte fallback and a decoder that strips the leading space of the text."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "h", "e", "l", "o", "é", "a", "c", "f", "▁é"]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def stream(tokenizer: Any, ids: list[int], skip: bool = True) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip)
    pieces = [detok.add(i) for i in ids]
    pieces.append(detok.flush())
    return pieces, detok


def check_stream(tokenizer: Any, ids: list[int], skip: bool = True) -> list[str]:
    pieces, detok = stream(tokenizer, ids, skip)
    expected = tokenizer.decode(ids, skip_special_tokens=skip)
    assert "".join(pieces) == expected
    assert detok.text() == expected
    for piece in pieces:
        assert "\ufffd" not in piece  # no half characters reach the stream
    return pieces


@pytest.mark.parametrize("text", TEXTS)
def test_smollm_matches_full_decode(smollm: Any, text: str) -> None:
    ids = smollm.encode(text, add_special_tokens=False)
    pieces = check_stream(smollm, ids)
    if any(ord(c) > 0xFFFF for c in text):
        # a 4-byte character spans several byte-level tokens: some steps must emit nothing
        assert "" in pieces[:-1]


def test_smollm_special_tokens(smollm: Any) -> None:
    ids = smollm.encode("<|im_start|>assistant\nhé 😀<|im_end|>", add_special_tokens=False)
    assert smollm.convert_tokens_to_ids("<|im_end|>") in ids
    assert "<|im_end|>" not in "".join(check_stream(smollm, ids, skip=True))
    assert "".join(check_stream(smollm, ids, skip=False)).endswith("<|im_end|>")


def test_smollm_window_stays_short(smollm: Any) -> None:
    text = "a fairly long passage of plain words " * 40
    ids = smollm.encode(text, add_special_tokens=False)
    calls: list[int] = []

    class Spy:
        def decode(self, batch: list[int], skip_special_tokens: bool = True) -> str:
            calls.append(len(batch))
            return str(smollm.decode(batch, skip_special_tokens=skip_special_tokens))

    pieces, _ = stream(Spy(), ids)
    assert "".join(pieces) == smollm.decode(ids)
    assert max(calls) <= 4  # O(window), not O(n)


def test_incomplete_character_at_the_end_is_flushed(smollm: Any) -> None:
    ids = smollm.encode("ok 😀", add_special_tokens=False)[:-1]  # cut inside the emoji's bytes
    detok = IncrementalDetokenizer(smollm)
    streamed = "".join(detok.add(i) for i in ids)
    assert "\ufffd" not in streamed
    assert streamed + detok.flush() == smollm.decode(ids)
    assert detok.flush() == ""


@pytest.mark.parametrize("text", ["hello world", "hello world 😀 café", "é é é", "  leading  spaces "])
def test_leading_space_sensitive_tokenizer(sentencepiece_like: Any, text: str) -> None:
    ids = sentencepiece_like.encode(text, add_special_tokens=False)
    # decoding a token on its own drops its leading space: the prefix context must keep it
    naive = "".join(sentencepiece_like.decode([i]) for i in ids)
    assert naive != sentencepiece_like.decode(ids)
    check_stream(sentencepiece_like, ids)


def test_empty() -> None:
    detok = IncrementalDetokenizer(object())
    assert detok.flush() == ""
    assert detok.text() == ""

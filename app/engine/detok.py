"""Incremental detokenization: token ids in, new text out, never splitting a UTF-8 character."""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Prefix/read-offset streaming decode (as TGI and vLLM do it): each step decodes a short window only.

    `prefix_offset..read_offset` are tokens already emitted and kept as context, so that tokenizers whose decode
    depends on neighbours (SentencePiece leading spaces, byte fallback) decode the window the same way as the
    whole sequence; the text after the context's decoding is what is new. While the window ends in an
    incomplete character (decoded as U+FFFD) nothing is emitted and the window grows.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._pieces: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self._tokenizer.decode(ids, skip_special_tokens=self._skip))

    def add(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        piece = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self._pieces.append(piece)
        return piece

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the end becomes U+FFFD)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        piece = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        if piece:
            self._pieces.append(piece)
        return piece

    def text(self) -> str:
        """All text emitted so far (after `flush`, the decoding of every token added)."""
        return "".join(self._pieces)

    @property
    def token_ids(self) -> list[int]:
        return list(self._ids)

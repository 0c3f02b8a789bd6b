"""Constrained decoding with xgrammar: JSON mode, JSON schemas and forced tool calls, as per-request token masks.

Format validation lives in app/engine/formats.py (re-exported here); torch and xgrammar are imported lazily.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from app.engine.formats import ConstraintSpec, check_json_schema, close_objects, spec_for_format, validate_format
from app.errors import GenerationFailed, InvalidRequest

if TYPE_CHECKING:
    import torch

__all__ = [
    "Constraint",
    "ConstraintCompiler",
    "ConstraintSpec",
    "apply_batch",
    "check_json_schema",
    "close_objects",
    "spec_for_format",
    "validate_format",
]

# xgrammar prefixes its C++ errors with "[hh:mm:ss] /path/file.cc:123: ".
_XGR_ERROR_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")

# JSON mode is "some JSON object", as in Ollama (llama.cpp's json grammar) and OpenAI's json_object.
_JSON_MODE_SCHEMA: dict[str, Any] = {"type": "object"}

# When the token budget gets this close, each step checks whether the shortest way to close the JSON still fits.
_CLOSE_WINDOW = 48
_GUARD_SLACK = 16
_GUARD_TOP_K = 8
_CLOSE_MAX_STEPS = 96
# Tried in order when nothing is forced: closers first, then the shortest values.
_CLOSE_CANDIDATES = ("}", "]", '"', ",", "0", "null", "true", "false", "{", "[", ":")

_CACHE_SIZE = 128


def _clean_xgr_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return _XGR_ERROR_PREFIX.sub("", text)


class ConstraintCompiler:
    """Per-model: the tokenizer's xgrammar view (built once, ~1 s) and an LRU of compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, *, stop_token_ids: Sequence[int] | None = None) -> None:
        import torch
        import xgrammar as xgr

        self.vocab_size = int(vocab_size)
        base = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        stops = sorted({int(t) for t in (stop_token_ids or ()) if 0 <= int(t) < self.vocab_size})
        if not stops:
            stops = list(base.stop_token_ids)
        self.stop_token_ids: tuple[int, ...] = tuple(stops)

        # from_huggingface leaves added special tokens (<|im_start|>, <repo_name>, ...) as ordinary text, so a
        # mask would allow them inside JSON strings; an empty entry makes xgrammar treat the id as special.
        encoded = [""] * self.vocab_size
        for token, idx in tokenizer.get_vocab().items():
            if 0 <= idx < self.vocab_size:
                encoded[idx] = token
        special: set[int] = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ()}
        for idx, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
            if getattr(added, "special", False):
                special.add(int(idx))
        for idx in special:
            if 0 <= idx < self.vocab_size:
                encoded[idx] = ""
        self.info = xgr.TokenizerInfo(
            encoded,
            base.vocab_type,
            vocab_size=self.vocab_size,
            stop_token_ids=list(self.stop_token_ids),
            add_prefix_space=base.add_prefix_space,
        )
        # Our own LRU bounds memory; xgrammar's cache is unbounded by default.
        self._xgr_compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

        # For closing plans: text -> tokens by greedy longest match over ordinary tokens, and token lengths for
        # the "shortest allowed token" fallback.
        blocked = special | set(self.stop_token_ids)
        # The decoded_vocab property rebuilds the list on each access; a slice of the FFI array is the fastest copy.
        handle: Any = cast(Any, self.info)._handle.decoded_vocab()
        decoded: list[bytes] = [bytes(b) for b in handle[0 : len(handle)]]
        self.decoded_vocab = decoded
        self._piece_ids: dict[bytes, int] = {}
        lengths = [1 << 20] * self.vocab_size
        for idx, piece in enumerate(decoded[: self.vocab_size]):
            if idx in blocked or not piece or not encoded[idx]:
                continue
            lengths[idx] = len(piece)
            if len(piece) <= 16 and piece not in self._piece_ids:
                self._piece_ids[piece] = idx
        self._token_lengths = torch.tensor(lengths, dtype=torch.int64)
        self._stop_ids_tensor = torch.tensor(self.stop_token_ids, dtype=torch.long)
        self._bit_shifts = torch.arange(32, dtype=torch.int32)
        self._batch_bitmask = xgr.allocate_token_bitmask(8, self.vocab_size)

    def _bitmask_rows(self, rows: int) -> torch.Tensor:
        # Reused across steps: only the rows being filled are ever applied, so stale rows are harmless. One
        # compiler serves one model, whose scheduler is a single thread.
        if self._batch_bitmask.shape[0] < rows:
            import xgrammar as xgr

            self._batch_bitmask = xgr.allocate_token_bitmask(
                max(rows, 2 * self._batch_bitmask.shape[0]), self.vocab_size
            )
        return self._batch_bitmask[:rows]

    def compile(self, spec: ConstraintSpec) -> Any:
        """The compiled grammar for `spec` (cached); an uncompilable schema raises InvalidRequest."""
        key = spec.cache_key()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        param = "tools" if spec.kind == "tool_call" else "format"
        if spec.kind == "json":
            schema: Any = _JSON_MODE_SCHEMA
        elif spec.schema is None:
            raise InvalidRequest(f"a {spec.kind} constraint needs a schema", param=param)
        else:
            schema = close_objects(spec.schema)
        try:
            # Compact separators (", " and ": ") and no free whitespace: tiny models otherwise loop on spaces
            # and newlines until max_tokens cuts the JSON short.
            compiled = self._xgr_compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, strict_mode=False
            )
        except (RuntimeError, ValueError, TypeError) as e:
            raise InvalidRequest(f"unsupported JSON schema in {param}: {_clean_xgr_error(e)}", param=param) from None
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def constraint(self, spec: ConstraintSpec, *, max_tokens: int | None = None) -> Constraint:
        """A fresh per-request matcher. `max_tokens` (the row's remaining output budget, counting every token the
        constraint will accept) turns on forced closing: near the end the JSON is steered shut so a length cut
        still leaves valid JSON."""
        return Constraint(self, self.compile(spec), max_tokens=max_tokens)

    def _bits_to_bool(self, bitmask_row: torch.Tensor) -> torch.Tensor:
        import torch

        bits = (bitmask_row.unsqueeze(-1) >> self._bit_shifts) & 1
        return bits.reshape(-1)[: self.vocab_size].to(torch.bool)

    def _encode_piece(self, text: bytes) -> list[int] | None:
        ids: list[int] = []
        i = 0
        while i < len(text):
            for j in range(min(len(text), i + 16), i, -1):
                tid = self._piece_ids.get(text[i:j])
                if tid is not None:
                    ids.append(tid)
                    i = j
                    break
            else:
                return None
        return ids


class _JsonLexer:
    """Whether grammar-valid JSON text so far ends inside a string (the grammar itself does not say)."""

    __slots__ = ("escaped", "in_string")

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False

    def copy(self) -> _JsonLexer:
        other = _JsonLexer()
        other.in_string, other.escaped = self.in_string, self.escaped
        return other

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.escaped:
                self.escaped = False
            elif self.in_string:
                if b == 0x5C:
                    self.escaped = True
                elif b == 0x22:
                    self.in_string = False
            elif b == 0x22:
                self.in_string = True


class Constraint:
    """One request's grammar state. Call `apply` before sampling and `accept` with the sampled token."""

    def __init__(self, compiler: ConstraintCompiler, compiled: Any, *, max_tokens: int | None = None) -> None:
        import xgrammar as xgr

        self._compiler = compiler
        self.matcher = xgr.GrammarMatcher(compiled)
        self.max_tokens = max_tokens
        self.accepted = 0
        self._finished: bool | None = None
        self._plan: list[int] | None = None
        self._bitmask = xgr.allocate_token_bitmask(1, compiler.vocab_size)
        self._lex = _JsonLexer()

    @property
    def vocab_size(self) -> int:
        return self._compiler.vocab_size

    def remaining(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens - self.accepted

    def apply(self, logits: torch.Tensor) -> None:
        """Mask `logits` (1-D [V], any float dtype, CPU) in place: tokens the grammar forbids become -inf."""
        apply_batch(logits.unsqueeze(0), [(0, self)])

    def accept(self, token_id: int) -> None:
        if self.matcher.is_terminated():
            raise GenerationFailed(f"token {token_id} sampled after the constrained output was complete")
        if not self.matcher.accept_token(int(token_id)):
            raise GenerationFailed(f"token {token_id} violates the output constraint")
        self.accepted += 1
        self._finished = None
        if token_id not in self._compiler.stop_token_ids:
            self._lex.feed(self._compiler.decoded_vocab[token_id])
        if self._plan:
            self._plan = self._plan[1:] if self._plan[0] == token_id else None

    def is_finished(self) -> bool:
        """The grammar is done: the stop token was accepted, or the JSON is complete and only a stop token may
        follow. Check after every `accept`; the row can stop without spending a step on EOS."""
        if self._finished is None:
            self._finished = self._compute_finished()
        return self._finished

    def is_complete(self) -> bool:
        """The output so far is a complete document (it may still be extendable, e.g. a bare number)."""
        return bool(self.matcher.is_terminated() or self.matcher.is_completed())

    def _compute_finished(self) -> bool:
        if self.matcher.is_terminated():
            return True
        if not self.matcher.is_completed():
            return False
        self.matcher.fill_next_token_bitmask(self._bitmask)
        allowed = self._compiler._bits_to_bool(self._bitmask[0])
        allowed[self._compiler._stop_ids_tensor] = False
        return not bool(allowed.any())

    def _guard_budget(self, row: torch.Tensor) -> None:
        """Near the end of `max_tokens`, keep the document closable in the tokens left.

        When the shortest completion just fits, only its next token stays; a little earlier, only those of the
        model's top candidates after which a completion still fits (one token can open a structure that needs
        several more to close).
        """
        left = self.remaining()
        if left is None or left > _CLOSE_WINDOW or self.is_complete():
            return
        if self._plan is None:
            self._plan = self._closing_plan()
        plan = self._plan
        if not plan:
            return
        if len(plan) >= left:
            keep = [plan[0]]
        elif left - len(plan) <= _GUARD_SLACK:
            keep = [plan[0], *self._safe_candidates(row, left - 1, exclude=plan[0])]
        else:
            return
        values = row[keep].clone()
        row.fill_(float("-inf"))
        row[keep] = values.nan_to_num(neginf=0.0)

    def _safe_candidates(self, row: torch.Tensor, budget: int, *, exclude: int) -> list[int]:
        import torch

        k = min(_GUARD_TOP_K, row.shape[0])
        values, ids = torch.topk(row, k)
        stops = self._compiler.stop_token_ids
        safe: list[int] = []
        for value, tid in zip(values.tolist(), ids.tolist(), strict=True):
            if value == float("-inf"):
                break
            if tid == exclude or tid in stops:
                continue
            fork = self.matcher.fork()
            if not fork.accept_token(tid):
                continue
            lex = self._lex.copy()
            lex.feed(self._compiler.decoded_vocab[tid])
            plan = self._plan_from(fork, lex)
            if plan is not None and len(plan) <= budget:
                safe.append(tid)
        return safe

    def _closing_plan(self) -> list[int] | None:
        """Tokens that complete the document from here, found greedily on a forked matcher."""
        return self._plan_from(self.matcher.fork(), self._lex.copy())

    def _plan_from(self, fork: Any, lex: _JsonLexer) -> list[int] | None:
        comp = self._compiler
        plan: list[int] = []
        pending = b""

        def flush() -> bool:
            nonlocal pending
            if pending:
                ids = comp._encode_piece(pending)
                if ids is None:
                    return False
                plan.extend(ids)
                pending = b""
            return True

        for _ in range(_CLOSE_MAX_STEPS):
            if fork.is_completed():
                return plan if flush() else None
            forced = fork.find_jump_forward_string()
            if forced:
                fork.accept_string(forced)
                pending += forced.encode("utf-8")
                lex.feed(forced.encode("utf-8"))
                continue
            if lex.in_string and not lex.escaped and fork.accept_string('"'):
                pending += b'"'
                lex.feed(b'"')
                continue
            for cand in _CLOSE_CANDIDATES:
                if fork.accept_string(cand):
                    pending += cand.encode()
                    lex.feed(cand.encode())
                    break
            else:
                # Mid-codepoint, inside an enum or a pattern: take the shortest token the grammar allows.
                if not flush():
                    return None
                fork.fill_next_token_bitmask(self._bitmask)
                allowed = comp._bits_to_bool(self._bitmask[0])
                allowed[comp._stop_ids_tensor] = False
                if not bool(allowed.any()):
                    return None
                lengths = comp._token_lengths.masked_fill(~allowed, 1 << 30)
                tid = int(lengths.argmin())
                if not fork.accept_token(tid):
                    return None
                plan.append(tid)
                lex.feed(comp.decoded_vocab[tid])
        return None


_batch_matcher: Any = None
_batch_lock = threading.Lock()


def _get_batch_matcher() -> Any:
    global _batch_matcher
    with _batch_lock:
        if _batch_matcher is None:
            import xgrammar as xgr

            _batch_matcher = xgr.BatchGrammarMatcher(max_threads=1)
        return _batch_matcher


def apply_batch(logits: torch.Tensor, rows: Sequence[tuple[int, Constraint]]) -> None:
    """Mask several rows of `logits` [B, V] in place with one shared bitmask; `rows` pairs a row index with its
    constraint (unconstrained rows are simply left out). All constraints must come from one compiler."""
    if not rows:
        return
    import torch
    import xgrammar as xgr

    comp = rows[0][1]._compiler
    vocab = comp.vocab_size
    width = logits.shape[-1]
    bitmask = comp._bitmask_rows(logits.shape[0])
    live: list[Constraint] = []
    live_idx: list[int] = []
    done: list[int] = []
    for idx, con in rows:
        if con._compiler is not comp:
            raise ValueError("apply_batch needs constraints from one ConstraintCompiler")
        if con.matcher.is_terminated():
            done.append(idx)
        else:
            live.append(con)
            live_idx.append(idx)
    if live:
        if len(live) == 1:
            live[0].matcher.fill_next_token_bitmask(bitmask, live_idx[0])
        else:
            _get_batch_matcher().batch_fill_next_token_bitmask([c.matcher for c in live], bitmask, live_idx)
        xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=min(width, vocab), indices=live_idx)
    neg_inf = float("-inf")
    if width > vocab:
        # Padded lm_head columns are not tokens at all.
        logits[[i for i, _ in rows], vocab:] = neg_inf
    for idx in done:
        # Should not happen (the scheduler stops a finished row); only a stop token keeps the row sane.
        keep = logits[idx, comp._stop_ids_tensor].clone()
        logits[idx].fill_(neg_inf)
        logits[idx, comp._stop_ids_tensor] = keep
    for con, idx in zip(live, live_idx, strict=True):
        row = logits[idx]
        if not bool(torch.isfinite(row.max())):
            # Other processors (min_tokens hiding EOS, a -inf logit_bias) removed every token the grammar allows;
            # the grammar wins, uniformly over what it allows.
            allowed = comp._bits_to_bool(bitmask[idx])
            row[: allowed.shape[0]][allowed] = 0.0
        con._guard_budget(row)

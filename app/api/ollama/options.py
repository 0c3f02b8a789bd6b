"""Ollama `options` (and create `parameters`) -> SamplingParams: Ollama names, types and ranges, our field names.

Unknown and null keys are ignored (Ollama's FromMap does the same; Open WebUI and langchain still send removed
llama.cpp knobs); a known key with a wrong type or an out-of-range value is a 400 naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from app.engine.types import SamplingParams
from app.errors import InvalidRequest

log = logging.getLogger(__name__)

SEED_MAX = 2**63 - 1  # seeds are signed 64-bit integers in Ollama's Go API

# Ollama/llama.cpp knobs that do not change what a transformers model outputs (hardware and loader settings)
# or that Ollama itself removed; accepted and ignored.
IGNORED_OPTIONS = frozenset(
    {
        "numa",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "num_batch",
        "num_gqa",
        "draft_num_predict",
        "rope_frequency_base",
        "rope_frequency_scale",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
        "penalize_newline",
    }
)

Kind = Literal["float", "int", "stop"]


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: Kind
    target: str  # SamplingParams field
    valid: Callable[[float], bool] | None = None
    rule: str = ""


def _ge(low: float) -> Callable[[float], bool]:
    return lambda v: v >= low


def _between(low: float, high: float) -> Callable[[float], bool]:
    return lambda v: low <= v <= high


OPTIONS: dict[str, _Spec] = {
    "temperature": _Spec("float", "temperature", _ge(0), ">= 0"),
    "top_p": _Spec("float", "top_p", _between(0, 1), "between 0 and 1"),
    "top_k": _Spec("int", "top_k", _ge(0), ">= 0"),
    "min_p": _Spec("float", "min_p", _between(0, 1), "between 0 and 1"),
    "typical_p": _Spec("float", "typical_p", _between(0, 1), "between 0 and 1"),
    "repeat_penalty": _Spec("float", "repetition_penalty", lambda v: v > 0, "> 0"),
    "repeat_last_n": _Spec("int", "repeat_last_n", _ge(-1), ">= -1 (-1 = the whole context, 0 = off)"),
    "presence_penalty": _Spec("float", "presence_penalty"),
    "frequency_penalty": _Spec("float", "frequency_penalty"),
    "seed": _Spec("int", "seed", lambda v: v == -1 or 0 <= v <= SEED_MAX, "-1 (random) or between 0 and 2^63-1"),
    "stop": _Spec("stop", "stop"),
    "num_predict": _Spec("int", "max_tokens", _ge(-2), ">= -2 (-1 = unbounded, -2 = fill the context)"),
    "num_ctx": _Spec("int", "num_ctx", _ge(4), ">= 4"),
    "num_keep": _Spec("int", "num_keep", _ge(-1), ">= -1"),
}


def _bad(key: str, what: str) -> InvalidRequest:
    return InvalidRequest(f'option "{key}" must be {what}', param=f"options.{key}")


def _number(key: str, value: Any, kind: Kind) -> float | int:
    # bool is an int subclass in Python; JSON true is not a number for Go either.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, "an integer" if kind == "int" else "a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(key, "a finite number")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise _bad(key, "an integer")
            return int(value)
        return value
    return float(value)


def _stop(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _bad(key, "an array of strings")
    # An empty stop string would match everywhere; it carries no intent.
    return tuple(s for s in value if s)


def option_values(raw: Any, *, where: str = "options") -> dict[str, Any]:
    """Validated option values keyed by SamplingParams field name (only the keys that were set)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        spec = OPTIONS.get(key)
        if value is None:
            continue
        if spec is None:
            if key in IGNORED_OPTIONS:
                log.debug("ignoring hardware/legacy option %r", key)
            else:
                log.debug("ignoring unknown option %r", key)
            continue
        if spec.kind == "stop":
            out[spec.target] = _stop(key, value)
            continue
        number = _number(key, value, spec.kind)
        if spec.valid is not None and not spec.valid(number):
            raise _bad(key, spec.rule)
        out[spec.target] = number
    return out


def parse_options(raw: Any, *, where: str = "options") -> SamplingParams:
    """Ollama options -> SamplingParams; unset fields stay None so alias and model defaults still apply."""
    return SamplingParams(**option_values(raw, where=where))

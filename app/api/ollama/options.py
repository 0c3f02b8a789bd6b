"""Ollama `options` (and create `parameters`) -> SamplingParams: Ollama names and types, our field names; the
ranges are the engine's (app/param_rules.py), reported under the Ollama name (`options.repeat_penalty`).

Unknown and null keys are ignored (Ollama's FromMap does the same; Open WebUI and langchain still send removed
llama.cpp knobs); a known key with a wrong type or an out-of-range value is a 400 naming it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from app.engine.types import SamplingParams
from app.errors import InvalidRequest
from app.param_rules import broken
from app.params import OLLAMA_OPTION_NAMES

log = logging.getLogger(__name__)

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
    target: str  # SamplingParams field; its range is the engine's (app/param_rules.py)


# How each option's value is read; its Ollama name is app/params.py's OLLAMA_OPTION_NAMES.
_KINDS: dict[str, Kind] = {
    "temperature": "float",
    "top_p": "float",
    "top_k": "int",
    "min_p": "float",
    "typical_p": "float",
    "repetition_penalty": "float",
    "repeat_last_n": "int",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "seed": "int",
    "stop": "stop",
    "max_tokens": "int",
    "num_ctx": "int",
    "num_keep": "int",
}
OPTIONS: dict[str, _Spec] = {OLLAMA_OPTION_NAMES[field]: _Spec(kind, field) for field, kind in _KINDS.items()}


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
        rule = broken(spec.target, number)
        if rule is not None:
            raise _bad(key, rule.text)  # the engine's range, named and worded the Ollama way
        out[spec.target] = number
    return out


def parse_options(raw: Any, *, where: str = "options") -> SamplingParams:
    """Ollama options -> SamplingParams; unset fields stay None so alias and model defaults still apply."""
    return SamplingParams(**option_values(raw, where=where))

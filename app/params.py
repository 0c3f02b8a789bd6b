"""Generation options, the one type the registry (aliases and model configs store them) and the engine (every
request carries them) share. It lives below both so that the registry never imports the engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Generation options. `None` means "not set here": a lower layer's value (alias, model, server) applies.

    `merged(base)` overlays self on base; `resolved()` fills what is still unset with the server defaults.
    """

    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 = disabled
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None  # multiplicative over the last repeat_last_n tokens
    repeat_last_n: int | None = None  # 0 disabled, -1 = whole context
    presence_penalty: float | None = None  # additive, OpenAI style
    frequency_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] | None = None
    seed: int | None = None  # None or -1 = random
    stop: tuple[str, ...] | None = None
    max_tokens: int | None = None  # None/-1 = up to the context; -2 = fill the context
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    num_ctx: int | None = None
    num_keep: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def merged(self, base: SamplingParams | None) -> SamplingParams:
        if base is None:
            return self
        values = {}
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            values[f.name] = mine if mine is not None else getattr(base, f.name)
        return SamplingParams(**values)

    def resolved(self) -> SamplingParams:
        return self.merged(DEFAULT_SAMPLING)

    def as_dict(self) -> dict[str, Any]:
        """Only the fields that are set (for rendering aliases and `parameters`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names or v is None:
                continue
            if k == "stop":
                v = tuple(v) if isinstance(v, list | tuple) else (v,)
            elif k == "logit_bias":
                items = v.items() if isinstance(v, dict) else v
                v = tuple((int(a), float(b)) for a, b in items)
            kwargs[k] = v
        return cls(**kwargs)


# Ollama's defaults (temperature 0.8, top_k 40, top_p 0.9), used by both protocols unless an alias or the
# model's generation_config says otherwise.
DEFAULT_SAMPLING = SamplingParams(
    temperature=0.8,
    top_p=0.9,
    top_k=40,
    min_p=0.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    repeat_last_n=64,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    logit_bias=(),
    seed=None,
    stop=(),
    max_tokens=None,
    min_tokens=0,
    ignore_eos=False,
    num_ctx=None,
    num_keep=4,
    logprobs=False,
    top_logprobs=0,
)


# SamplingParams field -> the name Ollama's API gives it, for every field Ollama has (its `options` and Modelfile
# PARAMETERs): the Ollama protocol adapter, `show`'s parameters text and the Ollama upstream client all read this.
OLLAMA_OPTION_NAMES: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repetition_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "num_predict",
    "num_ctx": "num_ctx",
    "num_keep": "num_keep",
}

"""Generation options of the CLI: the flags, their Ollama `options` names (requests) and their SamplingParams
names (aliases written in-process), and parsing `/set parameter` values."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cli.errors import CliError
from app.params import OLLAMA_OPTION_NAMES
from app.settings import parse_duration


@dataclass(frozen=True, slots=True)
class GenOption:
    flag: str
    dest: str
    sampling: str
    kind: type
    help: str

    @property
    def ollama(self) -> str:
        return OLLAMA_OPTION_NAMES[self.sampling]


GEN_OPTIONS: tuple[GenOption, ...] = (
    GenOption("--temperature", "temperature", "temperature", float, "sampling temperature (0 = greedy)"),
    GenOption("--top-p", "top_p", "top_p", float, "nucleus sampling probability mass"),
    GenOption("--top-k", "top_k", "top_k", int, "sample from the k most likely tokens (0 = off)"),
    GenOption("--min-p", "min_p", "min_p", float, "drop tokens below min_p x the top probability"),
    GenOption("--typical-p", "typical_p", "typical_p", float, "locally typical sampling mass"),
    GenOption(
        "--repetition-penalty",
        "repetition_penalty",
        "repetition_penalty",
        float,
        "multiplicative penalty on recently seen tokens (Ollama repeat_penalty)",
    ),
    GenOption("--repeat-last-n", "repeat_last_n", "repeat_last_n", int, "tokens the penalty looks at"),
    GenOption("--presence-penalty", "presence_penalty", "presence_penalty", float, "additive"),
    GenOption("--frequency-penalty", "frequency_penalty", "frequency_penalty", float, "additive"),
    GenOption("--seed", "seed", "seed", int, "random seed (reproducible sampling)"),
    GenOption("--ctx", "num_ctx", "num_ctx", int, "context window in tokens (Ollama num_ctx)"),
    GenOption(
        "--max-new-tokens",
        "max_new_tokens",
        "max_tokens",
        int,
        "most tokens to generate (Ollama num_predict; -1 = no limit)",
    ),
)

# Ollama option name -> SamplingParams field, for `/set parameter` and for reading server-side parameters.
OLLAMA_TO_SAMPLING: dict[str, str] = {o.ollama: o.sampling for o in GEN_OPTIONS} | {"stop": "stop"}
_KINDS: dict[str, type] = {o.ollama: o.kind for o in GEN_OPTIONS}
# Ollama options this server accepts beyond the CLI flags; /set parameter lets them through untyped.
_EXTRA_OLLAMA_OPTIONS = {"num_keep": int, "num_batch": int, "num_thread": int, "num_gpu": int}


def add_generation_options(parser: argparse.ArgumentParser, *, keep_alive: bool = True) -> None:
    group = parser.add_argument_group("generation options (Ollama option names in parentheses where they differ)")
    for o in GEN_OPTIONS:
        group.add_argument(o.flag, dest=o.dest, type=o.kind, default=None, metavar=o.kind.__name__.upper(), help=o.help)
    group.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop sequence (repeat for several)"
    )
    if keep_alive:
        group.add_argument(
            "--keep-alive",
            default=None,
            metavar="DURATION",
            help='how long the model stays loaded after the request ("5m", "1h", seconds; negative = forever)',
        )


def ollama_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The request `options` object from the flags that were given."""
    out: dict[str, Any] = {}
    for o in GEN_OPTIONS:
        value = getattr(ns, o.dest, None)
        if value is not None:
            out[o.ollama] = value
    if getattr(ns, "stop", None):
        out["stop"] = list(ns.stop)
    return out


def sampling_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The same flags under SamplingParams field names (what an Alias stores)."""
    return {OLLAMA_TO_SAMPLING[k]: v for k, v in ollama_options(ns).items()}


def keep_alive_request(text: str | None) -> float | str | None:
    """The request's `keep_alive`: a plain number is seconds (Ollama's JSON number), else a checked duration."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parse_duration(text)
    except ValueError:
        raise CliError(f'invalid --keep-alive {text!r}: use seconds or a duration like "5m"', exit_code=2) from None
    return text


def keep_alive_seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise CliError(f'invalid --keep-alive {text!r}: use seconds or a duration like "5m"', exit_code=2) from None


def load_format(json_mode: bool, schema_file: str | None) -> str | dict[str, Any] | None:
    """The request `format`: "json", a JSON schema read from a file, or None."""
    if json_mode and schema_file:
        raise CliError("--json-mode and --format-schema are exclusive", exit_code=2)
    if schema_file:
        try:
            schema = json.loads(Path(schema_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CliError(f"cannot read {schema_file}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise CliError(f"{schema_file} is not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise CliError(f"{schema_file} must hold a JSON schema object")
        return schema
    return "json" if json_mode else None


def parse_parameter(name: str, words: list[str]) -> Any:
    """A `/set parameter NAME VALUE...` value, typed like Ollama's options (stop takes every word)."""
    if not words:
        raise CliError(f"usage: /set parameter {name} VALUE")
    if name == "stop":
        return list(words)
    kind = _KINDS.get(name) or _EXTRA_OLLAMA_OPTIONS.get(name)
    if kind is None:
        known = ", ".join(sorted([*_KINDS, "stop", *_EXTRA_OLLAMA_OPTIONS]))
        raise CliError(f"unknown parameter {name!r} (known: {known})")
    text = " ".join(words)
    try:
        return kind(text)
    except ValueError:
        raise CliError(f"parameter {name} needs a {kind.__name__}, got {text!r}") from None

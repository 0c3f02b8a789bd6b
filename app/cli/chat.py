"""`hugllama chat` (and the streaming printer `run` shares): a conversation over /api/chat with slash commands,
a piped-stdin mode (one user message per line), and a JSON history file saved atomically after every turn."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from app.cli.client import OllamaClient
from app.cli.errors import CliError
from app.cli.options import parse_parameter
from app.registry.atomic import write_atomic

HELP = """Available commands:
  /set parameter NAME VALUE   set a generation option (Ollama names: temperature, top_p, top_k, min_p,
                              typical_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty,
                              seed, num_ctx, num_predict, stop WORD...)
  /set system TEXT            set the system message
  /set format json|off        JSON mode on or off
  /show                       show the model, system message and options in use
  /clear                      forget the conversation (the system message stays)
  /bye                        exit
  /help                       this help
"""


def _duration(ns: Any) -> str:
    seconds = float(ns or 0) / 1e9
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _rate(count: Any, ns: Any) -> str:
    return f"{float(count) * 1e9 / float(ns):.2f} tokens/s" if count and ns else "?"


def print_stats(final: dict[str, Any], err: TextIO) -> None:
    """Ollama's `--verbose` timing block, from a final (done) chunk."""
    lines = [
        ("total duration", _duration(final.get("total_duration"))),
        ("load duration", _duration(final.get("load_duration"))),
        ("prompt eval count", f"{final.get('prompt_eval_count', 0)} token(s)"),
        ("prompt eval duration", _duration(final.get("prompt_eval_duration"))),
        ("prompt eval rate", _rate(final.get("prompt_eval_count"), final.get("prompt_eval_duration"))),
        ("eval count", f"{final.get('eval_count', 0)} token(s)"),
        ("eval duration", _duration(final.get("eval_duration"))),
        ("eval rate", _rate(final.get("eval_count"), final.get("eval_duration"))),
    ]
    for label, value in lines:
        err.write(f"{label + ':':<22}{value}\n")
    err.flush()


def stream_text(
    chunks: Iterator[dict[str, Any]], piece: Callable[[dict[str, Any]], str], out: TextIO
) -> tuple[str, dict[str, Any]]:
    """Print each chunk's text as it arrives; returns the whole text and the final (done) chunk."""
    parts: list[str] = []
    final: dict[str, Any] = {}
    for chunk in chunks:
        text = piece(chunk)
        if text:
            parts.append(text)
            out.write(text)
            out.flush()
        if chunk.get("done"):
            final = chunk
    return "".join(parts), final


def chat_piece(chunk: dict[str, Any]) -> str:
    message = chunk.get("message") or {}
    return str(message.get("content") or "")


class History:
    """A conversation file: {"model", "messages": [...]} or a plain list of messages (kept in its form)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.model: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.plain_list = False
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "[]")
        except OSError as exc:
            raise CliError(f"cannot read history {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise CliError(f"history {path} is not valid JSON: {exc}") from None
        if isinstance(data, list):
            messages, self.plain_list = data, True
        elif isinstance(data, dict) and isinstance(data.get("messages", []), list):
            messages = data.get("messages", [])
            self.model = data.get("model") if isinstance(data.get("model"), str) else None
        else:
            raise CliError(f'history {path} must be {{"model": ..., "messages": [...]}} or a list of messages')
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise CliError(f"history {path}: message {i} needs a role")
        self.messages = [dict(m) for m in messages]

    def save(self, model: str, messages: list[dict[str, Any]]) -> None:
        data: Any = messages if self.plain_list else {"model": model, "messages": messages}
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_atomic(directory / self.path.name, text.encode("utf-8"))
        except OSError as exc:
            raise CliError(f"cannot save history {self.path}: {exc.strerror or exc}") from None


class ChatSession:
    """One conversation with `model`; `messages` starts with the system message when there is one."""

    def __init__(
        self,
        client: OllamaClient,
        model: str,
        *,
        out: TextIO,
        err: TextIO,
        options: dict[str, Any] | None = None,
        keep_alive: float | str | None = None,
        format: str | dict[str, Any] | None = None,
        system: str | None = None,
        history: History | None = None,
        verbose: bool = False,
    ) -> None:
        self.client = client
        self.model = model
        self.out = out
        self.err = err
        self.options: dict[str, Any] = dict(options or {})
        self.keep_alive = keep_alive
        self.format = format
        self.history = history
        self.verbose = verbose
        self.messages: list[dict[str, Any]] = list(history.messages) if history else []
        if system is not None:
            self.set_system(system)

    # --- state ---

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0].get("role") == "system":
            return str(self.messages[0].get("content") or "")
        return None

    def set_system(self, text: str) -> None:
        if self.system is not None:
            self.messages[0] = {"role": "system", "content": text}
        else:
            self.messages.insert(0, {"role": "system", "content": text})

    def clear(self) -> None:
        self.messages = self.messages[:1] if self.system is not None else []

    def save(self) -> None:
        if self.history is not None:
            self.history.save(self.model, self.messages)

    # --- talking ---

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.options:
            body["options"] = self.options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if self.format is not None:
            body["format"] = self.format
        return body

    def preload(self) -> None:
        """Load the model (an empty chat); fails early on an unknown model."""
        for _ in self.client.stream("POST", "/api/chat", self._body([])):
            pass

    def turn(self, text: str) -> str:
        """Send one user message, print the answer as it streams, keep both in the conversation."""
        pending = [*self.messages, {"role": "user", "content": text}]
        answer, final = stream_text(self.client.stream("POST", "/api/chat", self._body(pending)), chat_piece, self.out)
        self.out.write("\n")
        self.out.flush()
        self.messages = [*pending, {"role": "assistant", "content": answer}]
        self.save()
        if self.verbose and final:
            print_stats(final, self.err)
        return answer

    # --- slash commands ---

    def show(self) -> None:
        self.out.write(f"model: {self.model}\n")
        self.out.write(f"system: {self.system if self.system is not None else '(none)'}\n")
        if self.options:
            self.out.write("options:\n")
            for k, v in sorted(self.options.items()):
                self.out.write(f"  {k:<20} {json.dumps(v)}\n")
        else:
            self.out.write("options: (model defaults)\n")
        self.out.write(f"format: {json.dumps(self.format) if self.format is not None else '(none)'}\n")
        if self.keep_alive is not None:
            self.out.write(f"keep_alive: {self.keep_alive}\n")
        turns = sum(1 for m in self.messages if m.get("role") == "user")
        self.out.write(f"messages: {turns} turn(s)\n")
        self.out.flush()

    def command(self, line: str) -> bool:
        """Run a slash command; False means the session should end."""
        words = line.split()
        name = words[0].lower()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name in ("/help", "/?"):
            self.out.write(HELP)
        elif name == "/clear":
            self.clear()
            self.save()
            self.out.write("Cleared session context\n")
        elif name == "/show":
            self.show()
        elif name == "/set":
            self._set(line, words[1:])
        else:
            raise CliError(f"unknown command {words[0]!r}; type /help for the list")
        self.out.flush()
        return True

    def _set(self, line: str, words: list[str]) -> None:
        if not words:
            raise CliError("usage: /set parameter NAME VALUE | /set system TEXT | /set format json|off")
        what = words[0].lower()
        if what == "parameter":
            if len(words) < 2:
                raise CliError("usage: /set parameter NAME VALUE")
            name = words[1]
            self.options[name] = parse_parameter(name, words[2:])
            self.out.write(f"Set parameter '{name}' to '{', '.join(map(str, words[2:]))}'\n")
        elif what == "system":
            text = line.split(None, 2)[2] if len(line.split(None, 2)) > 2 else ""
            if not text:
                raise CliError("usage: /set system TEXT")
            self.set_system(text)
            self.save()
            self.out.write("Set system message.\n")
        elif what == "format":
            value = words[1].lower() if len(words) > 1 else ""
            if value not in ("json", "off", "none"):
                raise CliError("usage: /set format json|off")
            self.format = "json" if value == "json" else None
            self.out.write(f"Set format to '{value}'.\n")
        else:
            raise CliError(f"unknown /set target {words[0]!r} (parameter, system or format)")

    # --- the loop ---

    def run(self, lines: Iterable[str], *, interactive: bool, first: str | None = None) -> int:
        """Feed `first` then each line; in piped mode any failure ends the session with exit 1."""
        if first is not None and first.strip():
            self._handle_turn(first, interactive)
        for raw in lines:
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("/"):
                try:
                    if not self.command(line.strip()):
                        return 0
                except CliError as exc:
                    if not interactive:
                        raise
                    self.err.write(f"error: {exc.message}\n")
                    self.err.flush()
                continue
            self._handle_turn(line, interactive)
        return 0

    def _handle_turn(self, text: str, interactive: bool) -> None:
        if not interactive:
            self.turn(text)
            return
        try:
            self.turn(text)
        except KeyboardInterrupt:
            self.out.write("\n")
            self.out.flush()
        except CliError as exc:
            self.out.write("\n")
            self.err.write(f"error: {exc.message}\n")
            self.err.flush()
        self.out.write("\n")
        self.out.flush()


def prompt_lines(prompt: str, out: TextIO) -> Iterator[str]:
    """Lines typed at a tty prompt; Ctrl-C at the prompt only hints, Ctrl-D ends."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - platform without readline
        pass
    while True:
        try:
            yield input(prompt)
        except KeyboardInterrupt:
            out.write("\nUse Ctrl + d or /bye to exit.\n")
            out.flush()
        except EOFError:
            out.write("\n")
            out.flush()
            return

"""Generation commands: `run` (one prompt, or a chat on a terminal) and `chat`, against a server or an embedded one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from app.cli.chat import ChatSession, History, print_stats, prompt_lines, stream_text
from app.cli.context import Context
from app.cli.errors import CliError
from app.cli.options import keep_alive_request, load_format, ollama_options


def _request_common(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    body: dict[str, Any] = {}
    options = ollama_options(a)
    if options:
        body["options"] = options
    keep_alive = keep_alive_request(a.keep_alive)
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    fmt = load_format(a.json_mode, a.format_schema)
    if fmt is not None:
        body["format"] = fmt
    return body


def cmd_run(ctx: Context) -> int:
    a = ctx.args
    prompt = " ".join(a.prompt)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if not prompt.strip():
        if sys.stdin.isatty():
            return cmd_chat(ctx)
        raise CliError("no prompt: pass one as an argument or on stdin")
    body = {"model": a.model, "prompt": prompt, "stream": True, **_request_common(ctx)}
    if a.system is not None:
        body["system"] = a.system
    with ctx.generation_client() as client:
        _, final = stream_text(
            client.stream("POST", "/api/generate", body), lambda c: str(c.get("response") or ""), ctx.out
        )
        ctx.out.write("\n")
        ctx.out.flush()
    if a.verbose and final:
        print_stats(final, ctx.err)
    return 0


def cmd_chat(ctx: Context) -> int:
    a = ctx.args
    common = _request_common(ctx)
    history = History(Path(a.history)) if getattr(a, "history", None) else None
    first: str | None = None
    if getattr(a, "input_file", None):
        try:
            first = Path(a.input_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --input-file {a.input_file}: {exc}") from None
        if not first.strip():
            raise CliError(f"--input-file {a.input_file} is empty")
    interactive = sys.stdin.isatty()
    with ctx.generation_client() as client:
        session = ChatSession(
            client,
            a.model,
            out=ctx.out,
            err=ctx.err,
            options=common.get("options"),
            keep_alive=common.get("keep_alive"),
            format=common.get("format"),
            system=a.system,
            history=history,
            verbose=a.verbose,
        )
        if interactive:
            session.preload()
            lines = prompt_lines(">>> ", ctx.out)
        else:
            lines = iter(sys.stdin)
        return session.run(lines, interactive=interactive, first=first)

"""`hugllama`, the admin CLI: an Ollama-API client of a running server, or in-process when none answers.

Registry commands (list, show, create, cp, rm, pull) fall back to the registry files in this process;
generation commands (run, chat) start a private server in a background thread. torch is never imported
here: only `serve` and the embedded server reach the engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from app import __version__
from app.cli import embedded
from app.cli.backend import AliasSpec, LocalRegistry, Registry, RemoteRegistry
from app.cli.chat import ChatSession, History, print_stats, prompt_lines, stream_text
from app.cli.client import Address, OllamaClient, find_server, resolve_address
from app.cli.errors import CliError
from app.cli.options import add_generation_options, keep_alive_request, load_format, ollama_options, sampling_options
from app.cli.render import Progress, human_since, human_size, human_until, processor, table
from app.errors import ServiceError
from app.settings import Settings, get_settings

MODES = """modes:
  Every command talks to the server at HUGLLAMA_HOST (or OLLAMA_HOST; default 127.0.0.1:11434;
  --host/--port override it) when one answers there. When none does:
    list, show, create, cp, rm, pull   work on the registry in this process ($HUGLLAMA_HOME)
    run, chat                          start a private server inside this process on a free loopback port
    ps                                 says no server is running (nothing is loaded)
  cache always works in this process, on the Hugging Face cache.
"""
REGISTRY_MODE = (
    "mode: the server's Ollama API when a server answers at the configured address; otherwise the "
    "registry in this process ($HUGLLAMA_HOME/registry.json and the Hugging Face cache)."
)
GENERATION_MODE = (
    "mode: the server's Ollama API when a server answers at the configured address; otherwise a private "
    "server started inside this process on a free loopback port (the model loads on the first request)."
)


class Parser(argparse.ArgumentParser):
    """Usage errors as one `error:` line and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _common() -> Parser:
    common = Parser(add_help=False)
    g = common.add_argument_group("server address")
    g.add_argument("--host", default=None, help="server host[:port] (default: HUGLLAMA_HOST / OLLAMA_HOST)")
    g.add_argument("--port", type=int, default=None, help="server port (overrides the port in --host)")
    g.add_argument("--api-key", default=None, help="API key to send (default: the first of HUGLLAMA_API_KEYS)")
    common.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return common


def _generation_flags(p: argparse.ArgumentParser) -> None:
    add_generation_options(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json-mode", action="store_true", help='constrain the answer to JSON (format "json")')
    fmt.add_argument("--format-schema", metavar="FILE", help="constrain the answer to the JSON schema in FILE")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--verbose", action="store_true", help="print timings and token rates to stderr")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(
        prog="hugllama",
        description="Hugging Llama: Hugging Face transformers models behind the Ollama and OpenAI APIs.",
        epilog=MODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hugllama {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name: str, help: str, epilog: str, **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=epilog,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        return p

    p = add("serve", "run the server", "mode: runs the HTTP server in this process (same as `python -m app`).")
    p.set_defaults(func=cmd_serve)

    p = add("pull", "download a model from the Hugging Face Hub", REGISTRY_MODE)
    p.add_argument("model", help="org/repo[:tag][@revision] or hf.co/org/repo:QUANT")
    p.set_defaults(func=cmd_pull)

    p = add("list", "list models and aliases with their memory needs", REGISTRY_MODE, aliases=["ls"])
    p.set_defaults(func=cmd_list)

    p = add(
        "ps",
        "list the models loaded in the running server",
        "mode: the running server only; without one nothing is loaded.",
    )
    p.set_defaults(func=cmd_ps)

    p = add("show", "show a model's or alias's details", REGISTRY_MODE)
    p.add_argument("model")
    which = p.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system"):
        which.add_argument(f"--{flag}", action="store_const", dest="field", const=flag, help=f"print the {flag} only")
    p.set_defaults(func=cmd_show, field=None)

    p = add("create", "create or replace an alias: a model plus a system prompt and defaults", REGISTRY_MODE)
    p.add_argument("--alias", required=True, help="the alias name (name[:tag])")
    p.add_argument("--model", required=True, help="the model (or alias) it is based on")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--template", default=None, help="prompt template")
    add_generation_options(p)
    quant = p.add_mutually_exclusive_group()
    quant.add_argument("--load-in-8bit", action="store_true", help="load with bitsandbytes 8-bit")
    quant.add_argument("--load-in-4bit", action="store_true", help="load with bitsandbytes 4-bit (NF4)")
    p.add_argument("--json-mode", action="store_true", help='answer in JSON by default (format "json")')
    p.set_defaults(func=cmd_create)

    p = add("rm", "remove aliases or pulled models", REGISTRY_MODE)
    p.add_argument("models", nargs="+", metavar="model")
    p.set_defaults(func=cmd_rm)

    p = add("cp", "copy a model or alias to a new alias name", REGISTRY_MODE)
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=cmd_cp)

    p = add(
        "cache",
        "scan or clear the Hugging Face model cache",
        "mode: always in this process, on the Hugging Face cache (HF_HOME / HF_HUB_CACHE).",
    )
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--scan", action="store_true", help="list what the cache holds")
    action.add_argument(
        "--clear",
        nargs="?",
        const="",
        metavar="MODEL",
        help="delete MODEL (org/repo) from the cache, or every cached model",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_cache)

    p = add("run", "generate once from a prompt (no prompt on a terminal: chat)", GENERATION_MODE)
    p.add_argument("model")
    p.add_argument("prompt", nargs="*", help="the prompt (default: stdin when it is not a terminal)")
    _generation_flags(p)
    p.set_defaults(func=cmd_run)

    p = add("chat", "chat with a model or alias", GENERATION_MODE + "\n\n" + _CHAT_EPILOG)
    p.add_argument("model")
    _generation_flags(p)
    p.add_argument("--history", metavar="FILE", help="load the conversation from FILE and save it after every turn")
    p.add_argument("--input-file", metavar="FILE", help="send FILE's content as the first user message")
    p.set_defaults(func=cmd_chat)
    return parser


_CHAT_EPILOG = """On a terminal: type messages; /help lists /set parameter, /set system, /show, /clear, /bye.
With stdin not a terminal: every line is one user message (slash commands work too); exits at EOF."""


# --- context ---


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    address: Address
    api_key: str | None
    out: Any = field(default_factory=lambda: sys.stdout)
    err: Any = field(default_factory=lambda: sys.stderr)
    _server: OllamaClient | None = None
    _probed: bool = False

    def server(self) -> OllamaClient | None:
        """A client for the running server, or None (probed once per command)."""
        if not self._probed:
            self._server = find_server(self.address, api_key=self.api_key)
            self._probed = True
        return self._server

    def registry(self) -> Registry:
        client = self.server()
        return RemoteRegistry(client) if client is not None else LocalRegistry(self.settings)

    @contextmanager
    def generation_client(self) -> Iterator[OllamaClient]:
        client = self.server()
        if client is not None:
            yield client
            return
        server = embedded.start_embedded(self.settings)
        try:
            with OllamaClient(server.url, api_key=self.api_key) as local:
                yield local
        finally:
            server.stop()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _settings() -> Settings:
    from pydantic import ValidationError

    # Read the environment afresh for every command (in-process callers such as tests change it).
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            raise CliError(f"invalid configuration: {exc}") from None
        where = ".".join(str(p) for p in errors[0]["loc"]) or "settings"
        raise CliError(f"invalid configuration ({where}): {errors[0]['msg']}") from None
    except ValueError as exc:
        raise CliError(f"invalid configuration: {exc}") from None


# --- commands ---


def cmd_serve(ctx: Context) -> int:
    from app.server import run

    host = ctx.address.host if ctx.args.host is not None else None
    port = ctx.address.port if (ctx.args.host is not None or ctx.args.port is not None) else None
    run(ctx.settings, host=host, port=port)
    return 0


def cmd_pull(ctx: Context) -> int:
    progress = Progress(ctx.out, tty=ctx.out.isatty())
    try:
        for event in ctx.registry().pull(ctx.args.model):
            if "error" in event:
                raise CliError(str(event["error"]))
            progress.update(event)
    finally:
        progress.close()
    return 0


def cmd_list(ctx: Context) -> int:
    rows = ctx.registry().list_models()
    headers = ["NAME", "SIZE", "ESTIMATED MEMORY", "FITS", "MODIFIED"]
    with_base = any(r.base for r in rows)
    if with_base:
        headers.append("ALIAS OF")
    cells = []
    for r in rows:
        line = [r.name, human_size(r.size), human_size(r.estimate), r.fits, human_since(r.modified)]
        if with_base:
            line.append(r.base or "")
        cells.append(line)
    ctx.out.write(table(headers, cells) + "\n")
    return 0


def cmd_ps(ctx: Context) -> int:
    client = ctx.server()
    if client is None:
        ctx.out.write(f"no server running at {ctx.address.display}: no models are loaded\n")
        return 0
    data = client.request("GET", "/api/ps") or {}
    cells = [
        [
            str(m.get("name") or m.get("model") or "?"),
            human_size(m.get("size")),
            processor(m.get("size"), m.get("size_vram")),
            str(m.get("context_length") or "?"),
            human_until(m.get("expires_at")),
        ]
        for m in data.get("models") or []
    ]
    ctx.out.write(table(["NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], cells) + "\n")
    return 0


def _parameters_text(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k:<30} {v}" for k, v in value.items())
    return str(value or "")


def cmd_show(ctx: Context) -> int:
    data = ctx.registry().show(ctx.args.model)
    which = ctx.args.field
    if which is not None:
        text = _parameters_text(data.get("parameters")) if which == "parameters" else str(data.get(which) or "")
        ctx.out.write(text.rstrip("\n") + "\n" if text else "")
        return 0
    details = data.get("details") or {}
    info = data.get("model_info") or {}
    arch = str(info.get("general.architecture") or details.get("family") or "")
    model_rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size")),
        ("context length", info.get(f"{arch}.context_length")),
        ("embedding length", info.get(f"{arch}.embedding_length")),
        ("quantization", details.get("quantization_level")),
        ("parent model", details.get("parent_model")),
    ]
    out = ["  Model"] + [f"    {k:<20}{v}" for k, v in model_rows if v not in (None, "")]
    if data.get("capabilities"):
        out += ["", "  Capabilities"] + [f"    {c}" for c in data["capabilities"]]
    params = _parameters_text(data.get("parameters"))
    if params.strip():
        out += ["", "  Parameters"] + [f"    {line}" for line in params.splitlines()]
    if data.get("system"):
        out += ["", "  System"] + [f"    {line}" for line in str(data["system"]).splitlines()]
    if data.get("license"):
        first = str(data["license"]).strip().splitlines()
        out += ["", "  License"] + [f"    {line}" for line in first[:2]]
    ctx.out.write("\n".join(out) + "\n\n")
    return 0


def cmd_create(ctx: Context) -> int:
    a = ctx.args
    quantization: Literal["8bit", "4bit"] | None = "8bit" if a.load_in_8bit else "4bit" if a.load_in_4bit else None
    if a.keep_alive is not None:
        keep_alive_request(a.keep_alive)  # validate before touching anything
    spec = AliasSpec(
        name=a.alias,
        model=a.model,
        system=a.system,
        template=a.template,
        options=sampling_options(a),
        keep_alive=a.keep_alive,
        quantization=quantization,
        format="json" if a.json_mode else None,
    )
    ctx.registry().create(spec)
    ctx.out.write(f"created '{a.alias}' from '{a.model}'\n")
    return 0


def cmd_rm(ctx: Context) -> int:
    registry = ctx.registry()
    for name in ctx.args.models:
        registry.delete(name)
        ctx.out.write(f"deleted '{name}'\n")
    return 0


def cmd_cp(ctx: Context) -> int:
    ctx.registry().copy(ctx.args.source, ctx.args.destination)
    ctx.out.write(f"copied '{ctx.args.source}' to '{ctx.args.destination}'\n")
    return 0


def _confirm(ctx: Context, question: str) -> None:
    if ctx.args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError("refusing to delete without --yes: stdin is not a terminal to confirm on")
    ctx.out.write(f"{question} [y/N] ")
    ctx.out.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("cancelled")


def cmd_cache(ctx: Context) -> int:
    registry = LocalRegistry(ctx.settings)
    report = [r for r in registry.cache_report() if isinstance(r, dict)]
    if ctx.args.scan:
        cells = [
            [
                str(r.get("repo_id")),
                str(r.get("repo_type", "")),
                human_size(r.get("size_on_disk")),
                str(r.get("nb_files", "")),
                str(len(r.get("revisions") or [])),
                human_since(r.get("last_accessed")),
            ]
            for r in report
        ]
        ctx.out.write(table(["REPO", "TYPE", "SIZE", "FILES", "REVISIONS", "LAST ACCESSED"], cells) + "\n")
        total = sum(int(r.get("size_on_disk") or 0) for r in report)
        ctx.out.write(f"{len(report)} repo(s), {human_size(total)} in {registry.catalog.cache_dir}\n")
        return 0
    models = [r for r in report if r.get("repo_type", "model") == "model"]
    target: str | None = ctx.args.clear or None
    if target is not None:
        from app.registry.names import parse_name

        repo = parse_name(target).repo
        match = [r for r in models if str(r.get("repo_id", "")).lower() == repo.lower()]
        if not match:
            raise CliError(f"'{repo}' is not in the Hugging Face cache ({registry.catalog.cache_dir})")
        size = sum(int(r.get("size_on_disk") or 0) for r in match)
        _confirm(ctx, f"Delete {repo} ({human_size(size)}) from the Hugging Face cache?")
        freed = registry.clear_cache(repo)
    else:
        if not models:
            ctx.out.write("the Hugging Face cache holds no models\n")
            return 0
        size = sum(int(r.get("size_on_disk") or 0) for r in models)
        _confirm(ctx, f"Delete all {len(models)} cached model(s) ({human_size(size)})?")
        freed = registry.clear_cache(None)
    ctx.out.write(f"freed {human_size(freed)}\n")
    return 0


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


# --- entry point ---


def _silence_stdout() -> None:
    # After a broken pipe (`hugllama list | head`), the interpreter's final flush must not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    ctx: Context | None = None
    try:
        settings = _settings()
        address = resolve_address(settings, args.host, args.port)
        api_key = args.api_key or (settings.api_key_list[0] if settings.api_key_list else None)
        ctx = Context(args=args, settings=settings, address=address, api_key=api_key)
        code: int = args.func(ctx)
        return code
    except CliError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    except ServiceError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        if ctx is not None:
            ctx.close()

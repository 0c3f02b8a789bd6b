"""The `hugllama` argparse definition: every subcommand, its flags and help text, and the command it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from app import __version__
from app.cli.commands.cache import cmd_cache
from app.cli.commands.generate import cmd_chat, cmd_run
from app.cli.commands.models import cmd_cp, cmd_create, cmd_list, cmd_pull, cmd_rm, cmd_show
from app.cli.commands.server import cmd_ps, cmd_serve
from app.cli.options import add_generation_options

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
_CHAT_EPILOG = """On a terminal: type messages; /help lists /set parameter, /set system, /show, /clear, /bye.
With stdin not a terminal: every line is one user message (slash commands work too); exits at EOF."""


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
    g.add_argument(
        "--api-key",
        default=None,
        help="API key to send (default: the first of HUGLLAMA_ADMIN_KEYS, else of HUGLLAMA_API_KEYS)",
    )
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

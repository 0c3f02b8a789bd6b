"""`hugllama`, the admin CLI: an Ollama-API client of a running server, or in-process when none answers.

Registry commands (list, show, create, cp, rm, pull) fall back to the registry files in this process;
generation commands (run, chat) start a private server in a background thread. torch is never imported
here: only `serve` and the embedded server reach the engine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from app.cli.client import resolve_address
from app.cli.context import Context, load_settings
from app.cli.errors import CliError
from app.cli.parser import build_parser
from app.errors import ServiceError


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
        settings = load_settings()
        address = resolve_address(settings, args.host, args.port)
        # An admin key works wherever an ordinary key does, so the CLI prefers it when this machine has one.
        keys = settings.admin_key_list + settings.api_key_list
        api_key = args.api_key or (keys[0] if keys else None)
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

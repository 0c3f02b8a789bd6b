"""`cache`: scan or clear the Hugging Face model cache, always in this process."""

from __future__ import annotations

import sys

from app.cli.backend import LocalRegistry
from app.cli.context import Context
from app.cli.errors import CliError
from app.cli.render import human_since, human_size, table


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

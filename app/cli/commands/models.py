"""Model and alias commands over the registry (the server's or this process's): pull, list, show, create, rm, cp."""

from __future__ import annotations

from typing import Any, Literal

from app.cli.backend import AliasSpec
from app.cli.context import Context
from app.cli.errors import CliError
from app.cli.options import keep_alive_request, sampling_options
from app.cli.render import Progress, human_since, human_size, table


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

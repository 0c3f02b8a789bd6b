"""Commands about the server process: `serve` runs it here, `ps` lists what a running one has loaded."""

from __future__ import annotations

from app.cli.context import Context
from app.cli.render import human_size, human_until, processor, table


def cmd_serve(ctx: Context) -> int:
    from app.server import run

    host = ctx.address.host if ctx.args.host is not None else None
    port = ctx.address.port if (ctx.args.host is not None or ctx.args.port is not None) else None
    run(ctx.settings, host=host, port=port)
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

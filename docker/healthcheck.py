"""Container health check: GET /readyz (or the path given) on the server's own bind address; exit 0 when 200.

Slim images have no curl, so Docker's HEALTHCHECK and compose run this with the image's Python. The address
and API key come from the same Settings the server reads.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.settings import Settings

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


def probe_url(settings: Settings, path: str = "/readyz") -> str:
    """The URL that reaches this container's server: wildcard binds are probed over loopback."""
    host, port = settings.bind()
    host = _WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def check(settings: Settings, path: str = "/readyz", timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, one-line reason)."""
    request = urllib.request.Request(probe_url(settings, path))
    keys = settings.api_key_list
    if settings.auth_probes and keys:
        request.add_header("Authorization", f"Bearer {keys[0]}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200, f"{path}: {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{path}: {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{path}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    healthy, reason = check(Settings(), args[0] if args else "/readyz")
    if not healthy:
        sys.stderr.write(f"unhealthy: {reason}\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

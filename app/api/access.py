"""Who may call what: API-key tiers, the routes that need the admin tier, the Host-header allow list (DNS
rebinding) and CORS origin matching. Pure functions over headers and settings; the middleware applies them.

Decisions:
- Without HUGLLAMA_ADMIN_KEYS there is one tier (as before): whoever may use the API may also manage it.
- Admin routes are the ones that change what the server holds for everyone: aliases (create/copy/delete), the
  Hugging Face cache (pull/delete), residency and defaults (every non-GET under /api/v1/) and the prefix cache
  (warm-up). Generation, embeddings and read-only listings are ordinary.
- Origins are parsed into (scheme, host, port) and compared field by field: `http://localhost:*` matches any port
  of localhost, never `http://localhost.evil.com` or `http://localhost:3000@evil`.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from app.settings import Settings


class Tier(Enum):
    NONE = 0  # no key, or a key that is not ours
    USER = 1
    ADMIN = 2


_ADMIN_PATHS = frozenset({"/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_admin_route(method: str, path: str) -> bool:
    """Routes that change shared state. Exact paths (Starlette routes match the exact path too)."""
    if path in _ADMIN_PATHS or path.startswith("/api/blobs/"):
        return True
    return path.startswith("/api/v1/") and method.upper() not in _READ_METHODS


def _matches(given: bytes, keys: list[bytes]) -> bool:
    # Compare against every key (no early exit) so timing does not tell which key nearly matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok


class KeyTiers:
    def __init__(self, settings: Settings) -> None:
        self.user_keys = [k.encode() for k in settings.api_key_list]
        self.admin_keys = [k.encode() for k in settings.admin_key_list]

    @property
    def auth_enabled(self) -> bool:
        return bool(self.user_keys or self.admin_keys)

    def tier(self, authorization: str) -> Tier:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Tier.NONE
        given = token.strip().encode()
        admin = _matches(given, self.admin_keys)
        user = _matches(given, self.user_keys)
        return Tier.ADMIN if admin else Tier.USER if user else Tier.NONE

    def required(self, method: str, path: str) -> Tier:
        """The tier a route needs: NONE when it is open."""
        if self.admin_keys and is_admin_route(method, path):
            return Tier.ADMIN
        return Tier.USER if self.user_keys else Tier.NONE


# --- Host header ----------------------------------------------------------------------------------------------

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> str | None:
    """The host of a Host header value, lower case, without port or IPv6 brackets; None when malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?#\\ "):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not _is_port(value[end + 2 :], value[end + 1])):
            return None
        return value[1:end]
    if value.count(":") > 1:  # a bare IPv6 address without brackets
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            return None
    host, sep, port = value.partition(":")
    if sep and not _is_port(port, ":"):
        return None
    return host.rstrip(".") or None


def _is_port(text: str, sep: str) -> bool:
    return sep == ":" and text.isdigit() and 0 < int(text) < 65536


class HostPolicy:
    """HUGLLAMA_ALLOWED_HOSTS, or the default: loopback names while bound to loopback, anything otherwise."""

    def __init__(self, settings: Settings) -> None:
        configured = settings.allowed_host_list
        bind_host, _ = settings.bind()
        if configured:
            self.any = "*" in configured
            hosts = [split_host(h) or h for h in configured]  # a port in an entry is ignored, like in the header
            self.names = frozenset(h for h in hosts if not h.startswith("*."))
            self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        else:
            self.any = not _is_loopback(bind_host)
            self.names = LOOPBACK_NAMES
            self.suffixes = ()

    def allowed(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if host_header is None:
            return False
        host = split_host(host_header)
        if host is None:
            return False
        return host in self.names or any(host.endswith(s) for s in self.suffixes)


# --- CORS origins ---------------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Ollama's default allowed origins (envconfig.AllowedOrigins), before OLLAMA_ORIGINS is appended.
DEFAULT_ORIGINS = [
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]


_STAR = "wildcard-label-0"


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str  # "*" any host; "*.example.com" any subdomain; "192.168.1.*" one label of anything
    port: int | str | None  # "*" any port (or none); None the scheme's default


def _parse(text: str, *, pattern: bool) -> _Origin | None:
    scheme, sep, rest = text.strip().partition("://")
    if not sep or not scheme or not rest:
        return None
    scheme = scheme.lower()
    if pattern and rest == "*":
        return _Origin(scheme, "*", "*")
    if pattern and rest.endswith(":*"):
        parsed = _parse(f"{scheme}://{rest[:-2]}", pattern=True)
        return _Origin(scheme, parsed.host, "*") if parsed is not None else None
    if pattern and "*" in rest:  # a host label that is "*": mark it, parse the rest as an ordinary origin
        parsed = _parse(f"{scheme}://{rest.replace('*', _STAR)}", pattern=False)
        return _Origin(scheme, parsed.host.replace(_STAR, "*"), parsed.port) if parsed is not None else None
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError:
        return None
    # An origin is scheme://host[:port] and nothing else: no user info, path, query or fragment.
    if parts.username is not None or parts.password is not None or parts.path or parts.query or parts.fragment:
        return None
    if "@" in rest or not parts.hostname:
        return None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    return _Origin(scheme, parts.hostname.lower().rstrip("."), port)


class OriginPolicy:
    def __init__(self, settings: Settings) -> None:
        extra = [o.strip() for o in settings.origins.split(",") if o.strip()]
        texts = DEFAULT_ORIGINS + extra
        self.any = "*" in texts
        self.null = "null" in texts
        self.patterns = [p for t in texts if t not in ("*", "null") and (p := _parse(t, pattern=True)) is not None]

    def allowed(self, origin: str) -> bool:
        if self.any:
            return True
        if origin.strip() == "null":
            return self.null
        given = _parse(origin, pattern=False)
        if given is None:
            return False
        return any(_origin_matches(p, given) for p in self.patterns)


def _host_matches(pattern: str, host: str) -> bool:
    if pattern in ("*", host):
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        return host.endswith(pattern[1:])  # any depth of subdomain
    want, got = pattern.split("."), host.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def _origin_matches(p: _Origin, o: _Origin) -> bool:
    if p.scheme != o.scheme or not _host_matches(p.host, o.host):
        return False
    return p.port == "*" or p.port == o.port

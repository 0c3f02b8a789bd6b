"""app/api/access.py: key tiers, admin routes, the Host allow list and CORS origin matching."""

from __future__ import annotations

import pytest

from app.api.access import HostPolicy, KeyTiers, OriginPolicy, Tier, is_admin_route, split_host
from app.settings import Settings


def make(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update=update)


@pytest.mark.parametrize(
    ("method", "path", "admin"),
    [
        ("POST", "/api/create", True),
        ("POST", "/api/copy", True),
        ("DELETE", "/api/delete", True),
        ("POST", "/api/pull", True),
        ("POST", "/api/push", True),
        ("POST", "/api/blobs/sha256:abc", True),
        ("HEAD", "/api/blobs/sha256:abc", True),
        ("POST", "/api/v1/models/load", True),
        ("POST", "/api/v1/models/unload", True),
        ("PUT", "/api/v1/models/config", True),
        ("POST", "/api/v1/cache/warm", True),
        ("GET", "/api/v1/models/config", False),
        ("GET", "/api/v1/models/status", False),
        ("GET", "/api/v1/models/available", False),
        ("POST", "/api/generate", False),
        ("POST", "/api/chat", False),
        ("POST", "/api/embed", False),
        ("POST", "/api/show", False),
        ("GET", "/api/tags", False),
        ("GET", "/api/ps", False),
        ("GET", "/api/version", False),
        ("POST", "/v1/chat/completions", False),
        ("POST", "/api/createx", False),  # not a route: 404 for everyone, no admin check needed
    ],
)
def test_admin_routes(method: str, path: str, admin: bool) -> None:
    assert is_admin_route(method, path) is admin


def test_key_tiers(settings: Settings) -> None:
    tiers = KeyTiers(make(settings, api_keys="u1,u2", admin_keys="a1"))
    assert tiers.tier("Bearer u2") is Tier.USER
    assert tiers.tier("Bearer a1") is Tier.ADMIN
    assert tiers.tier("bearer  a1 ") is Tier.ADMIN
    for bad in ("", "Bearer", "Bearer ", "Basic a1", "Bearer a1x", "Bearer a", "a1"):
        assert tiers.tier(bad) is Tier.NONE, bad
    assert tiers.required("POST", "/api/create") is Tier.ADMIN
    assert tiers.required("POST", "/api/chat") is Tier.USER


def test_tiers_without_admin_keys_or_user_keys(settings: Settings) -> None:
    one_tier = KeyTiers(make(settings, api_keys="u1"))
    assert one_tier.required("POST", "/api/create") is Tier.USER  # no admin keys: one tier, as before
    admin_only = KeyTiers(make(settings, admin_keys="a1"))
    assert admin_only.required("POST", "/api/chat") is Tier.NONE  # using models stays open
    assert admin_only.required("DELETE", "/api/delete") is Tier.ADMIN
    assert KeyTiers(settings).required("POST", "/api/create") is Tier.NONE


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST:11434", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:11434", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("example.com.", "example.com"),
        ("evil.com:11434@localhost", None),
        ("localhost:abc", None),
        ("localhost:99999", None),
        ("[::1", None),
        ("", None),
        ("local host", None),
    ],
)
def test_split_host(value: str, host: str | None) -> None:
    assert split_host(value) == host


def test_host_policy_loopback_default(settings: Settings) -> None:
    policy = HostPolicy(settings)  # bound to 127.0.0.1 by default
    for ok in ("localhost", "localhost:11434", "127.0.0.1:11434", "[::1]:11434", "::1"):
        assert policy.allowed(ok), ok
    for bad in ("evil.com", "evil.com:11434", "localhost.evil.com", "127.0.0.1.nip.io", "attacker", None, ""):
        assert not policy.allowed(bad), bad


def test_host_policy_all_interfaces_and_configured(settings: Settings) -> None:
    assert HostPolicy(make(settings, host="0.0.0.0:11434")).allowed("anything.example:11434")
    assert HostPolicy(make(settings, host="[::]:11434")).allowed("pod-ip")
    assert not HostPolicy(make(settings, host="[::1]:11434")).allowed("evil.com")
    configured = HostPolicy(make(settings, allowed_hosts="llm.example.com, *.corp.example"))
    assert configured.allowed("llm.example.com:443")
    assert configured.allowed("a.corp.example")
    assert not configured.allowed("corp.example.evil")
    assert not configured.allowed("localhost")  # an explicit list replaces the default
    assert HostPolicy(make(settings, allowed_hosts="*")).allowed("whatever")


def test_origins_default_list(settings: Settings) -> None:
    policy = OriginPolicy(settings)
    for ok in (
        "http://localhost:3000",
        "http://localhost",
        "https://127.0.0.1:8443",
        "HTTP://LOCALHOST:3000",
        "http://localhost:80",
        "app://obsidian.md",
        "tauri://localhost",
        "vscode-webview://1abc2def",
    ):
        assert policy.allowed(ok), ok
    for bad in (
        "http://localhost.evil.com",
        "http://localhost:3000@evil.com",
        "http://localhost:3000@evil",
        "http://user@localhost:3000",
        "http://localhost:3000/path",
        "http://localhost:3000?x",
        "http://evil.com/http://localhost",
        "http://evil.com#http://localhost:1",
        "http://localhost:notaport",
        "ftp://localhost",
        "localhost:3000",
        "null",
        "",
        "https://evil.com",
    ):
        assert not policy.allowed(bad), bad


def test_origins_configured(settings: Settings) -> None:
    policy = OriginPolicy(make(settings, origins="https://webui.example.com, https://*.corp.example:*, null"))
    assert policy.allowed("https://webui.example.com")
    assert policy.allowed("https://webui.example.com:443")
    assert not policy.allowed("https://webui.example.com:8443")
    assert not policy.allowed("http://webui.example.com")
    assert not policy.allowed("https://webui.example.com.evil.org")
    assert policy.allowed("https://a.b.corp.example:9000")
    assert not policy.allowed("https://corp.example.evil:9000")
    assert policy.allowed("null")
    assert OriginPolicy(make(settings, origins="*")).allowed("https://anything.example")


def test_origin_label_wildcards(settings: Settings) -> None:
    policy = OriginPolicy(make(settings, origins="http://192.168.1.*:*,https://app-*.example.com"))
    assert policy.allowed("http://192.168.1.20:8080")
    assert not policy.allowed("http://192.168.1.evil.com:8080")  # a glob would let this through
    assert not policy.allowed("http://192.168.10.20:8080")
    assert not policy.allowed("https://app-1.example.com")  # "*" is a whole label, not part of one


def test_allowed_hosts_entries_may_carry_ports(settings: Settings) -> None:
    policy = HostPolicy(make(settings, allowed_hosts="llm.example.com:8443,[::1]:11434"))
    assert policy.allowed("llm.example.com") and policy.allowed("llm.example.com:9999") and policy.allowed("[::1]")


def test_serve_host_flag_decides_the_host_policy(settings: Settings) -> None:
    from app.server import bound_settings

    assert bound_settings(settings, None, None) is settings
    everywhere = bound_settings(settings, "0.0.0.0", 8080)
    assert everywhere.bind() == ("0.0.0.0", 8080) and HostPolicy(everywhere).allowed("pod-ip:8080")
    v6 = bound_settings(settings, "::1", None)
    assert v6.bind() == ("::1", 11434) and not HostPolicy(v6).allowed("evil.example")
    open_env = bound_settings(make(settings, host="0.0.0.0:11434"), "127.0.0.1", None)
    assert not HostPolicy(open_env).allowed("evil.example")  # --host 127.0.0.1 wins over HUGLLAMA_HOST

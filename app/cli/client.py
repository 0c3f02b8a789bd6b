"""The CLI's HTTP side: where the server is, whether one answers, and an Ollama-API client (NDJSON streams
included) that turns every failure into a one-line CliError."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.cli.errors import CliError
from app.settings import Settings

PROBE_TIMEOUT = httpx.Timeout(2.0, connect=0.5)
# Generation can go quiet for a long time (model load, slow CPU decode): no read timeout on requests.
REQUEST_TIMEOUT = httpx.Timeout(None, connect=5.0, write=60.0)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @property
    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        # A wildcard bind address is reached through loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        netloc = f"[{host}]" if ":" in host else host
        return f"http://{netloc}:{self.port}"


def resolve_address(settings: Settings, host: str | None = None, port: int | None = None) -> Address:
    """The configured server address (HUGLLAMA_HOST / OLLAMA_HOST), with --host (host[:port]) and --port on top."""
    try:
        base = settings.model_copy(update={"host": host}) if host is not None else settings
        h, p = base.bind()
    except (ValueError, IndexError):
        raise CliError(f"invalid --host {host!r}: expected host[:port]", exit_code=2) from None
    if port is not None:
        if not 0 < port < 65536:
            raise CliError(f"invalid --port {port}", exit_code=2)
        p = port
    return Address(h, p)


def error_message(response: httpx.Response) -> str:
    """The server's error text: Ollama's {"error": "..."} as is, OpenAI's nested message, else the body."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        if isinstance(err, dict):
            return str(err.get("message") or json.dumps(err))
        return str(err)
    text = response.text.strip()
    if text and len(text) <= 200 and "\n" not in text:
        return f"server answered {response.status_code}: {text}"
    return f"server answered {response.status_code} {response.reason_phrase}".rstrip()


class OllamaClient:
    """A small synchronous client for the Ollama API of one server."""

    def __init__(self, base_url: str, *, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": "hugllama-cli", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lost(self, exc: httpx.HTTPError) -> CliError:
        return CliError(f"could not talk to the server at {self.base_url}: {exc or type(exc).__name__}")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON request; returns the decoded body (None when empty). Non-2xx raises CliError."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._lost(exc) from None
        if response.status_code >= 400:
            raise CliError(error_message(response))
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"the server sent something that is not JSON for {method} {path}") from None

    def get_optional(self, path: str) -> Any | None:
        """GET that answers None for a non-2xx status instead of failing (for optional endpoints)."""
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise self._lost(exc) from None
        if response.status_code >= 300:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def stream(self, method: str, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The objects of an NDJSON response (a plain JSON object counts as a one-line stream).

        An `{"error": ...}` line (a failure after the stream started) raises CliError with that text.
        """
        try:
            with self._http.stream(method, path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(error_message(response))
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        raise CliError(f"the server sent a line that is not JSON: {line[:80]!r}") from None
                    if isinstance(obj, dict) and "error" in obj:
                        err = obj["error"]
                        raise CliError(str(err.get("message") if isinstance(err, dict) else err))
                    if isinstance(obj, dict):
                        yield obj
        except httpx.HTTPError as exc:
            raise self._lost(exc) from None


def server_answers(url: str) -> bool:
    """True when anything speaks HTTP at `url` (Ollama's `GET /` needs no API key)."""
    try:
        httpx.get(url + "/", timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return False
    return True


def find_server(address: Address, *, api_key: str | None = None) -> OllamaClient | None:
    """A client for the server at `address`, or None when nothing answers there."""
    if not server_answers(address.url):
        return None
    return OllamaClient(address.url, api_key=api_key)

"""Model names: parse, normalise and validate Ollama-style `[namespace/]name[:tag]` and Hugging Face
`[hf.co/]org/repo[:tag][@revision]` names. Pure; lookups use the lower-case `key`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import InvalidRequest

MAX_NAME_LENGTH = 200
DEFAULT_TAG = "latest"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
_HF_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")


@dataclass(frozen=True, slots=True)
class ModelName:
    namespace: str | None
    name: str
    tag: str
    revision: str | None = None
    is_hf: bool = False

    @property
    def repo(self) -> str:
        """`namespace/name` (or `name`), without tag or revision: the Hugging Face repo id for HF names."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def display(self) -> str:
        text = f"{self.repo}:{self.tag}"
        return f"{text}@{self.revision}" if self.revision else text

    @property
    def key(self) -> str:
        return self.display.lower()


def _invalid(text: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid model name {text!r}: {why}", param="model")


def parse_name(text: str) -> ModelName:
    """Parse a model name; the tag defaults to `latest`.

    Raises:
        InvalidRequest: the name is empty, too long, or has a forbidden part (param="model").
    """
    if not isinstance(text, str):
        raise _invalid(str(text), "not a string")
    raw = text
    s = text.strip()
    if not s:
        raise _invalid(raw, "empty")
    if len(s) > MAX_NAME_LENGTH:
        raise _invalid(raw[:40] + "...", f"longer than {MAX_NAME_LENGTH} characters")
    if "\\" in s:
        raise _invalid(raw, "backslashes are not allowed")
    if ".." in s:
        raise _invalid(raw, "'..' is not allowed")
    is_hf = False
    lowered = s.lower()
    for prefix in _HF_PREFIXES:
        if lowered.startswith(prefix):
            s, is_hf = s[len(prefix) :], True
            break
    if s.startswith("/"):
        raise _invalid(raw, "absolute paths are not allowed")

    revision: str | None = None
    tag: str | None = None
    if "@" in s:
        s, revision = s.split("@", 1)
        if ":" in revision:  # accept `org/repo@rev:tag` as well as `org/repo:tag@rev`
            revision, tag = revision.rsplit(":", 1)
        if not revision or not _REVISION.match(revision) or revision.endswith("/") or "//" in revision:
            raise _invalid(raw, "bad revision")
        is_hf = True
    last_slash = s.rfind("/")
    colon = s.rfind(":")
    if colon > last_slash:
        if tag is not None:
            raise _invalid(raw, "two tags")
        s, tag = s[:colon], s[colon + 1 :]
        if not tag:
            raise _invalid(raw, "empty tag")
    parts = s.split("/")
    if len(parts) > 2:
        raise _invalid(raw, "too many '/' parts (expected [namespace/]name)")
    for part in parts:
        if not part:
            raise _invalid(raw, "empty part")
        if not _PART.match(part):
            raise _invalid(raw, f"part {part!r} must start with a letter, digit or '_' and use only [A-Za-z0-9_.-]")
    if tag is not None and not _PART.match(tag):
        raise _invalid(raw, f"tag {tag!r} must start with a letter, digit or '_' and use only [A-Za-z0-9_.-]")
    namespace, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    if namespace is not None and namespace.lower() == "library" and not is_hf:
        namespace = None  # Ollama's default namespace: `library/llama3` is `llama3`
    if namespace is not None:
        is_hf = True
    return ModelName(namespace=namespace, name=name, tag=tag or DEFAULT_TAG, revision=revision, is_hf=is_hf)


def validate_alias_name(text: str) -> str:
    """The canonical display form of an alias name (`name:tag`, optional namespace; no revision, no hf.co/).

    Raises:
        InvalidRequest: malformed, or a revision / hf.co prefix was given (param="model").
    """
    parsed = parse_name(text)
    if parsed.revision is not None:
        raise _invalid(text, "an alias name cannot carry an @revision")
    if text.strip().lower().startswith(_HF_PREFIXES):
        raise _invalid(text, "an alias name cannot start with hf.co/")
    return parsed.display


def name_key(text: str) -> str:
    """The lookup key of a name (lower-case canonical display)."""
    return parse_name(text).key

"""Size limits of what an alias stores: it is kept for everyone and replayed into every request that names it,
so each field is bounded when it is saved (HUGLLAMA_ALIAS_MAX_*, HUGLLAMA_MAX_TEMPLATE_BYTES, HUGLLAMA_MAX_STOP*).
Each violation is an InvalidRequest naming the field."""

from __future__ import annotations

import json
from typing import Any

from app.errors import InvalidRequest
from app.param_rules import check_stop
from app.registry.types import Alias
from app.settings import Settings


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))


def _cap(value: Any, limit: int, field: str, env: str) -> None:
    if value is None:
        return
    size = _size(value)
    if size > limit:
        raise InvalidRequest(f"{field} is too large: {size} bytes > {limit} ({env})", param=field)


def check_alias(alias: Alias, settings: Settings) -> None:
    _cap(alias.system, settings.alias_max_system_bytes, "system", "HUGLLAMA_ALIAS_MAX_SYSTEM_BYTES")
    _cap(alias.template, settings.max_template_bytes, "template", "HUGLLAMA_MAX_TEMPLATE_BYTES")
    if len(alias.messages) > settings.alias_max_messages:
        raise InvalidRequest(
            f"too many messages: {len(alias.messages)} > {settings.alias_max_messages} (HUGLLAMA_ALIAS_MAX_MESSAGES)",
            param="messages",
        )
    if alias.messages:
        _cap(list(alias.messages), settings.alias_max_messages_bytes, "messages", "HUGLLAMA_ALIAS_MAX_MESSAGES_BYTES")
    check_options(alias.options, settings)


def check_options(options: dict[str, Any], settings: Settings) -> None:
    """Stored default options (an alias's, or a model's through PUT /api/v1/models/config): size and stop list."""
    _cap(options or None, settings.alias_max_options_bytes, "parameters", "HUGLLAMA_ALIAS_MAX_OPTIONS_BYTES")
    check_stop(options.get("stop") if options else None, settings)


def check_count(existing: int, limit: int) -> None:
    """Before a new alias is added to a registry that holds `existing` aliases."""
    if existing >= limit:
        raise InvalidRequest(
            f"the alias registry is full: {existing} aliases (HUGLLAMA_MAX_ALIASES={limit}); delete some first",
            param="model",
        )

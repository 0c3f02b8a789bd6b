"""Tool calling: validate `tools`/`tool_choice`, the fallback tool prompt, forced-call schemas, and parsing tool
calls out of model text (<tool_call> blocks, Hermes/Qwen style, bare JSON, Mistral's [TOOL_CALLS]). Pure Python.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Sequence
from typing import Any

from app.engine.formats import check_json_schema
from app.engine.types import ToolCall
from app.errors import GenerationFailed, InvalidRequest

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEYWORDS = ("none", "auto", "required")
_ID_ALPHABET = string.ascii_letters + string.digits

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_MISTRAL = "[TOOL_CALLS]"
_PYTHON_TAG = "<|python_tag|>"  # Llama 3.x prefixes its JSON calls with it

_NO_PARAMS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function")
    return fn if isinstance(fn, dict) else {}


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [str(_function(t).get("name", "")) for t in tools]


def validate_tools(tools: Sequence[dict[str, Any]], tool_choice: str | dict[str, Any] | None) -> str:
    """Check `tools` and normalise `tool_choice` to "none" | "auto" | "required" | "<function name>".

    A missing choice, or "auto" with no tools, becomes "none" when there is nothing to call.
    """
    names = check_tools(tools)
    return check_choice(_choice_name(tool_choice), names)


def check_tools(tools: Sequence[dict[str, Any]]) -> list[str]:
    """The function names of `tools`, or an InvalidRequest whose `param` is the JSON path of what is wrong
    (`tools[1].function.name`): both protocols send tools in this one shape, so the path is theirs too."""
    if not isinstance(tools, list | tuple):
        raise InvalidRequest("tools must be a list of tool objects", param="tools")
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        # Some Ollama clients omit "type"; "function" is the only kind there is.
        if tool.get("type", "function") != "function":
            raise InvalidRequest(f"{where}.type must be 'function', got {tool.get('type')!r}", param=f"{where}.type")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequest(f"{where}.function must be an object", param=f"{where}.function")
        name = fn.get("name")
        at = f"{where}.function.name"
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{at} must be a non-empty string", param=at)
        if not _NAME.fullmatch(name):
            raise InvalidRequest(f"{at} {name!r} must be 1-64 characters of letters, digits, '_', '.' or '-'", param=at)
        if name in names:
            raise InvalidRequest(f"duplicate function name {name!r} in tools", param="tools")
        names.append(name)
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise InvalidRequest(
                f"{where}.function.description must be a string", param=f"{where}.function.description"
            )
        params = fn.get("parameters")
        at = f"{where}.function.parameters"
        if params is not None:
            if not isinstance(params, dict):
                raise InvalidRequest(f"{at} must be a JSON Schema object", param=at)
            check_json_schema(params, param=at, what=at)
    return names


def check_choice(choice: str | None, names: Sequence[str], param: str = "tool_choice") -> str:
    """The tool choice rules on a choice already reduced to a keyword, a function name or None (unset)."""
    if choice is None or choice == "auto":
        return "auto" if names else "none"
    if choice == "none":
        return "none"
    if not names:
        raise InvalidRequest(f"{param} {choice!r} needs at least one tool in tools", param=param)
    if choice == "required":
        return "required"
    if choice not in names:
        raise InvalidRequest(f"{param} names function {choice!r}, which is not in tools", param=param)
    return choice


def _choice_name(tool_choice: str | dict[str, Any] | None) -> str | None:
    if tool_choice is None or tool_choice == "":
        return None
    if isinstance(tool_choice, str):
        return tool_choice
    if isinstance(tool_choice, dict):
        if tool_choice.get("type", "function") == "function":
            fn = tool_choice.get("function")
            name = fn.get("name") if isinstance(fn, dict) else tool_choice.get("name")
            if isinstance(name, str) and name:
                return name
        raise InvalidRequest(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    raise InvalidRequest("tool_choice must be a string or an object", param="tool_choice")


def tool_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """System text that teaches tool calling to models whose chat template has no tool support."""
    listing = []
    for tool in tools:
        fn = _function(tool)
        entry: dict[str, Any] = {"name": fn.get("name", "")}
        if fn.get("description"):
            entry["description"] = fn["description"]
        entry["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
        listing.append(entry)
    return (
        "You can call these functions:\n"
        + "\n".join(json.dumps(e, ensure_ascii=False) for e in listing)
        + "\nTo call one, reply with only "
        + '<tool_call>{"name": "<function name>", "arguments": {<arguments>}}</tool_call>'
        + ". Otherwise reply normally."
    )


def call_schema(tools: Sequence[dict[str, Any]], name: str | None) -> dict[str, Any]:
    """The JSON schema of one forced call: of function `name`, or of any tool when None (tool_choice=required)."""

    def one(tool: dict[str, Any]) -> dict[str, Any]:
        fn = _function(tool)
        params = fn.get("parameters")
        return {
            "type": "object",
            "properties": {"name": {"const": fn.get("name")}, "arguments": params if params else _NO_PARAMS},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }

    if name is not None:
        for tool in tools:
            if _function(tool).get("name") == name:
                return one(tool)
        raise InvalidRequest(f"tool_choice names function {name!r}, which is not in tools", param="tool_choice")
    if not tools:
        raise InvalidRequest("tool_choice 'required' needs at least one tool in tools", param="tool_choice")
    if len(tools) == 1:
        return one(tools[0])
    return {"anyOf": [one(t) for t in tools]}


def _as_call(obj: Any, known: set[str] | None) -> ToolCall | None:
    """A ToolCall from {"name", "arguments"|"parameters"} (also nested under "function"), else None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name or (known is not None and name not in known):
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    else:
        return None if set(obj) - {"name", "type", "id"} else ToolCall(name=name, arguments={}, id=new_call_id())
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return ToolCall(name=name, arguments=args, id=new_call_id())


def parse_forced_call(text: str) -> ToolCall:
    """The call in constrained output (the JSON of `call_schema`)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenerationFailed(f"the forced tool call is not complete JSON ({e.msg}); raise max_tokens") from None
    call = _as_call(obj, None)
    if call is None:
        raise GenerationFailed("the forced tool call has no function name and arguments")
    return call


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _calls_in(payload: str, known: set[str]) -> list[ToolCall] | None:
    """The calls in one JSON payload (an object or a list of them); None unless every item is a known call."""
    obj = _loads(payload)
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        return None
    calls = [_as_call(item, known) for item in items]
    if any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str, tools: Sequence[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
    """Split model output into (remaining content, calls) for tool_choice="auto".

    Recognised: <tool_call>{...}</tool_call> blocks anywhere (the closing tag may be missing at the very end),
    a whole answer that is a call object or a list of them (optionally in a ```json fence), and
    "[TOOL_CALLS] [...]". Anything naming an unknown tool, or not valid JSON, stays in the content.
    """
    known = set(tool_names(tools))
    if not known or not text:
        return text, []

    if TOOL_CALL_OPEN in text:
        calls: list[ToolCall] = []
        kept: list[str] = []
        pos = 0
        for m in _BLOCK.finditer(text):
            found = _calls_in(m.group(1), known)
            if found is None:
                continue
            kept.append(text[pos : m.start()])
            calls.extend(found)
            pos = m.end()
        if calls:
            kept.append(text[pos:])
            return "".join(kept).strip(), calls
        return text, []

    body = text.strip()
    if body.startswith(_PYTHON_TAG):
        body = body[len(_PYTHON_TAG) :].strip()
    if body.startswith(_MISTRAL):
        found = _calls_in(body[len(_MISTRAL) :].strip(), known)
        return ("", found) if found else (text, [])
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1)
    if body.startswith(("{", "[")):
        found = _calls_in(body, known)
        if found:
            return "", found
    return text, []


def content_holdback(text: str) -> int:
    """How many leading characters of streamed `text` are surely plain content under tool_choice="auto".

    The rest may be (the start of) a tool call and should be held until the answer ends or rules it out.
    """
    start = text.find(TOOL_CALL_OPEN)
    if start >= 0:
        return start
    body = text.lstrip()
    if not body:
        return 0
    if body[0] in "{[" or "```".startswith(body[:3]) or _PYTHON_TAG.startswith(body[: len(_PYTHON_TAG)]):
        return 0
    # A partial "<tool_call>" at the very end.
    for k in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-k:]):
            return len(text) - k
    return len(text)

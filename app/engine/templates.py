"""Prompt rendering (HF chat templates, raw prompts, fill-in-the-middle) and trimming prompts to the context window."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from app.engine.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from app.engine.types import Message
from app.errors import InvalidRequest

# Used when a tokenizer has no chat template at all (base models): plain ChatML.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# (prefix, suffix, middle) spellings used by FIM-trained tokenizers (StarCoder/SantaCoder, Qwen2.5-Coder, CodeGemma).
_FIM_SPELLINGS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
)
_TOOLS_RE = re.compile(r"\btools\b")


def renders_tools(template: str | None) -> bool:
    """Whether a chat template renders a `tools` list itself (else tools go through the fallback tool prompt);
    /api/show advertises the `tools` capability from this too."""
    return bool(template) and _TOOLS_RE.search(template or "") is not None


def message_to_dict(message: Message, *, inline_calls: bool = False) -> dict[str, Any]:
    """The HF chat-template shape of a message (OpenAI-like, with arguments as a dict).

    `inline_calls` also writes assistant tool calls into the content as <tool_call> blocks.
    """
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls and inline_calls:
        blocks = [
            TOOL_CALL_OPEN
            + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
            + TOOL_CALL_CLOSE
            for c in message.tool_calls
        ]
        out["content"] = "\n".join([message.content, *blocks] if message.content else blocks)
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            item: dict[str, Any] = {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            if call.id:
                item["id"] = call.id
            calls.append(item)
        out["tool_calls"] = calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


class PromptRenderer:
    """Turns requests into prompt token ids for one tokenizer."""

    def __init__(self, tokenizer: Any, chat_template: str | None = None) -> None:
        self.tokenizer = tokenizer
        template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
        # Older tokenizers may carry several named templates.
        self._named: dict[str, str] = dict(template) if isinstance(template, dict) else {}
        self.chat_template: str | None = self._named.get("default") if self._named else template
        vocab: dict[str, int] = tokenizer.get_vocab()
        self._fim: tuple[int, int, int] | None = None
        for spelling in _FIM_SPELLINGS:
            if all(t in vocab for t in spelling):
                self._fim = (vocab[spelling[0]], vocab[spelling[1]], vocab[spelling[2]])
                break

    def supports_tools(self) -> bool:
        return any(renders_tools(t) for t in (self.chat_template or "", *self._named.values()))

    def supports_insert(self) -> bool:
        return self._fim is not None

    def _template(self, override: str | None, tools: bool) -> str:
        if override:
            return override
        if tools and "tool_use" in self._named:
            return self._named["tool_use"]
        return self.chat_template or FALLBACK_TEMPLATE

    # ------------------------------------------------------------------ chat

    def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] = (),
        template: str | None = None,
        tool_prompt: str | None = None,
        prefill: bool = False,
    ) -> str:
        """The chat as prompt text, ending with the assistant generation prompt.

        With `prefill` and a final assistant message (no tool calls), that message is left open for the model to
        continue instead (Ollama's behaviour).
        """
        chat_template = self._template(template, bool(tools))
        native_tools = bool(tools) and _TOOLS_RE.search(chat_template) is not None
        # Templates that cannot show tool calls still need the history to: inline them as the fallback tool
        # prompt teaches the model to write them.
        inline_calls = "tool_calls" not in chat_template
        conversation = [message_to_dict(m, inline_calls=inline_calls) for m in messages]
        if tools and not native_tools and tool_prompt:
            conversation = _with_system_text(conversation, tool_prompt)
        last = messages[-1] if messages else None
        cont = prefill and last is not None and last.role == "assistant" and not last.tool_calls
        try:
            rendered = self.tokenizer.apply_chat_template(
                conversation,
                tools=list(tools) if native_tools else None,
                chat_template=chat_template,
                add_generation_prompt=not cont,
                continue_final_message=cont,
                tokenize=False,
            )
        except Exception as exc:  # jinja2 errors, raise_exception() in templates, type errors in user templates
            param = "template" if template else "messages"
            raise InvalidRequest(f"could not render the chat template: {exc}", param=param) from exc
        return str(rendered)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] = (),
        template: str | None = None,
        tool_prompt: str | None = None,
        num_ctx: int,
        reserve: int,
        truncate: bool = True,
        prefill: bool = False,
    ) -> tuple[list[int], int]:
        """Prompt ids that leave `reserve` tokens for the answer, and how many messages were dropped to fit.

        Trimming keeps the system message(s) and the last user message with everything after it; it drops the
        oldest other turns first (starting the kept history at a user turn where possible), then cuts the longest
        remaining message from the left.
        """
        budget = _budget(num_ctx, reserve)
        msgs = list(messages)

        def encode(ms: Sequence[Message]) -> list[int]:
            return self._encode(
                self.render_chat(ms, tools=tools, template=template, tool_prompt=tool_prompt, prefill=prefill)
            )

        ids = encode(msgs)
        if len(ids) <= budget:
            return ids, 0
        if not truncate:
            raise InvalidRequest(
                f"the input length exceeds the context length: {len(ids)} prompt tokens + "
                f"{num_ctx - budget} reserved for the answer > num_ctx {num_ctx}",
                param="num_ctx",
            )

        last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=len(msgs) - 1)
        droppable = [i for i in range(last_user) if msgs[i].role != "system"]
        # Cut points: drop droppable[:k]. Prefer k where the kept history starts with a user turn, so templates
        # that insist on user/assistant alternation still render; the last option drops all of them.
        cuts = [k for k in range(1, len(droppable)) if msgs[droppable[k]].role == "user"]
        cuts.append(len(droppable))
        if droppable:
            lo, hi = 0, len(cuts) - 1
            best: tuple[list[int], list[Message]] | None = None
            while lo <= hi:  # fewest dropped that fits (fewer dropped never gets shorter)
                mid = (lo + hi) // 2
                gone = set(droppable[: cuts[mid]])
                kept = [m for i, m in enumerate(msgs) if i not in gone]
                kept_ids = encode(kept)
                if len(kept_ids) <= budget:
                    best, hi = (kept_ids, kept), mid - 1
                else:
                    lo = mid + 1
            if best is not None:
                return best[0], len(msgs) - len(best[1])
            msgs = [m for i, m in enumerate(msgs) if i not in set(droppable)]
        dropped = len(messages) - len(msgs)
        return self._cut_contents(msgs, encode, budget), dropped

    def _cut_contents(self, msgs: list[Message], encode: Any, budget: int) -> list[int]:
        """Cut message contents from the left, longest message first, until the rendering fits the budget."""
        ids: list[int] = encode(msgs)
        content_ids = [self._encode(m.content) for m in msgs]
        while len(ids) > budget:
            candidates = [i for i, c in enumerate(content_ids) if c]
            if not candidates:
                break
            # the longest content; on a tie the later message
            target = max(candidates, key=lambda i: (len(content_ids[i]), i))
            excess = len(ids) - budget
            content_ids[target] = content_ids[target][excess:]
            text = self.tokenizer.decode(content_ids[target], skip_special_tokens=False).lstrip("\ufffd")
            msgs[target] = _replace_content(msgs[target], text)
            ids = encode(msgs)
        if len(ids) > budget:  # template overhead alone is too long: keep the end, where generation continues
            ids = ids[len(ids) - budget :]
        return ids

    # ------------------------------------------------------------------ generate

    def encode_prompt(
        self,
        prompt: str,
        *,
        system: str | None = None,
        template: str | None = None,
        raw: bool = False,
        suffix: str | None = None,
        context: Sequence[int] | None = None,
        num_ctx: int,
        reserve: int,
        truncate: bool = True,
        num_keep: int = 4,
    ) -> list[int]:
        """Prompt ids for Ollama's /api/generate; over-long prompts keep their first `num_keep` tokens."""
        if raw and (template or system or context):
            raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
        if suffix:
            if self._fim is None:
                raise InvalidRequest("model does not support insert", param="suffix")
            pre, suf, mid = self._fim
            ids = [pre, *self._encode(prompt), suf, *self._encode(suffix), mid]
        elif raw:
            ids = list(self.tokenizer.encode(prompt))
        else:
            msgs = [Message(role="system", content=system)] if system else []
            msgs.append(Message(role="user", content=prompt))
            ids = self._encode(self.render_chat(msgs, template=template))
        if context:
            ids = [int(t) for t in context] + ids
        budget = _budget(num_ctx, reserve)
        if len(ids) <= budget:
            return ids
        if not truncate:
            raise InvalidRequest(
                f"the input length exceeds the context length: {len(ids)} prompt tokens + "
                f"{num_ctx - budget} reserved for the answer > num_ctx {num_ctx}",
                param="num_ctx",
            )
        keep = len(ids) if num_keep < 0 else num_keep
        keep = min(keep, budget - 1)
        return ids[:keep] + ids[len(ids) - (budget - keep) :]


def _budget(num_ctx: int, reserve: int) -> int:
    return max(1, num_ctx - min(max(reserve, 0), num_ctx // 2))


def _with_system_text(conversation: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    for i, msg in enumerate(conversation):
        if msg["role"] == "system":
            joined = f"{msg['content']}\n\n{text}" if msg["content"] else text
            return [*conversation[:i], {**msg, "content": joined}, *conversation[i + 1 :]]
    return [{"role": "system", "content": text}, *conversation]


def _replace_content(message: Message, content: str) -> Message:
    return dataclasses.replace(message, content=content)

"""Prompt rendering (HF chat templates, raw prompts, fill-in-the-middle) and trimming prompts to the context window."""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Callable, Sequence
from typing import Any

from app.engine.template_sandbox import RenderGuard
from app.engine.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from app.engine.types import Message
from app.errors import InvalidRequest
from app.registry.facts import renders_tools
from app.registry.gguf_info import FIM_SPELLINGS

# Used when a tokenizer has no chat template at all (base models): plain ChatML.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


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
        for spelling in FIM_SPELLINGS:
            if all(t in vocab for t in spelling):
                self._fim = (vocab[spelling[0]], vocab[spelling[1]], vocab[spelling[2]])
                break

    def supports_tools(self) -> bool:
        return any(renders_tools(t) for t in (self.chat_template or "", *self._named.values()))

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
        guard: RenderGuard | None = None,
    ) -> str:
        """The chat as prompt text, ending with the assistant generation prompt.

        With `prefill` and a final assistant message (no tool calls), that message is left open for the model to
        continue instead (Ollama's behaviour). A `template` override is user input: with a `guard` it renders in
        the sandbox (bounded time and memory), as every request's and alias's template does in the server.
        """
        chat_template = self._template(template, bool(tools))
        native_tools = bool(tools) and renders_tools(chat_template)
        # Templates that cannot show tool calls still need the history to: inline them as the fallback tool
        # prompt teaches the model to write them.
        inline_calls = "tool_calls" not in chat_template
        conversation = [message_to_dict(m, inline_calls=inline_calls) for m in messages]
        if tools and not native_tools and tool_prompt:
            conversation = _with_system_text(conversation, tool_prompt)
        last = messages[-1] if messages else None
        cont = prefill and last is not None and last.role == "assistant" and not last.tool_calls
        if template and guard is not None:
            return guard.sandbox.render(
                chat_template,
                conversation,
                tools=list(tools) if native_tools else None,
                kwargs=dict(self.tokenizer.special_tokens_map),
                add_generation_prompt=not cont,
                continue_final_message=cont,
                cancel=guard.cancel,
            )
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
        guard: RenderGuard | None = None,
    ) -> tuple[list[int], int]:
        """Prompt ids that leave `reserve` tokens for the answer, and how many messages were dropped to fit.

        Trimming keeps the system message(s) and the last user message with everything after it; it drops the
        oldest other turns first (starting the kept history at a user turn where possible), then cuts the longest
        remaining message from the left. Each message is tokenized once and the chat rendered a few times whatever
        its length: the cut is estimated from per-message token counts, then confirmed by rendering.
        """
        budget = _budget(num_ctx, reserve)
        msgs = list(messages)

        def encode(ms: Sequence[Message]) -> list[int]:
            text = self.render_chat(
                ms, tools=tools, template=template, tool_prompt=tool_prompt, prefill=prefill, guard=guard
            )
            if not text:
                raise InvalidRequest("the chat renders an empty prompt", param="template" if template else "messages")
            return self._encode(text)

        ids = encode(msgs)
        if len(ids) <= budget:
            return ids, 0
        if not truncate:
            raise InvalidRequest(
                f"the input length exceeds the context length: {len(ids)} prompt tokens + "
                f"{num_ctx - budget} reserved for the answer > num_ctx {num_ctx}",
                param="num_ctx",
            )

        content_ids = [self._encode(m.content) for m in msgs]
        last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=len(msgs) - 1)
        droppable = [i for i in range(last_user) if msgs[i].role != "system"]
        # Cut points: drop droppable[:k]. Prefer k where the kept history starts with a user turn, so templates
        # that insist on user/assistant alternation still render; the last option drops all of them.
        cuts = [k for k in range(1, len(droppable)) if msgs[droppable[k]].role == "user"]
        cuts.append(len(droppable))
        if droppable:
            renders: dict[int, list[int] | None] = {}

            def fits(c: int) -> bool:  # renders the chat without droppable[:cuts[c]]; None when too long
                if c not in renders:
                    gone = set(droppable[: cuts[c]])
                    kept_ids = encode([m for i, m in enumerate(msgs) if i not in gone])
                    renders[c] = kept_ids if len(kept_ids) <= budget else None
                return renders[c] is not None

            # Each message's share of the rendering: its content plus an even share of the template's overhead.
            overhead = max(0, len(ids) - sum(len(c) for c in content_ids)) / len(msgs)
            saved, done, guess = 0.0, 0, len(cuts) - 1
            for c, k in enumerate(cuts):
                saved += sum(len(content_ids[j]) + overhead for j in droppable[done:k])
                done = k
                if len(ids) - saved <= budget:
                    guess = c
                    break
            best = _fewest_fitting(fits, guess, len(cuts))
            if best is not None:
                kept_ids = renders[best]
                assert kept_ids is not None
                return kept_ids, cuts[best]
            gone_all = set(droppable)
            msgs = [m for i, m in enumerate(msgs) if i not in gone_all]
            content_ids = [c for i, c in enumerate(content_ids) if i not in gone_all]
        dropped = len(messages) - len(msgs)
        return self._cut_contents(msgs, content_ids, encode, budget), dropped

    def _cut_contents(
        self,
        msgs: list[Message],
        content_ids: list[list[int]],
        encode: Callable[[Sequence[Message]], list[int]],
        budget: int,
    ) -> list[int]:
        """Cut message contents from the left, longest message first, until the rendering fits the budget."""
        ids = encode(msgs)
        for _ in range(3):  # a cut is computed from token counts; re-rendering corrects what the template adds
            excess = len(ids) - budget
            if excess <= 0:
                break
            # the longest content first; on a tie the later message
            heap = [(-len(c), -i) for i, c in enumerate(content_ids) if c]
            heapq.heapify(heap)
            changed: set[int] = set()
            while excess > 0 and heap:
                _, neg_i = heapq.heappop(heap)
                target = -neg_i
                take = min(excess, len(content_ids[target]))
                content_ids[target] = content_ids[target][take:]
                excess -= take
                changed.add(target)
            if not changed:
                break
            for target in changed:
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
        guard: RenderGuard | None = None,
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
            ids = self._encode(self.render_chat(msgs, template=template, guard=guard))
        if not ids:
            raise InvalidRequest(
                "the prompt is empty after rendering" if template else "the prompt is empty",
                param="template" if template else "prompt",
            )
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


def _fewest_fitting(fits: Callable[[int], bool], guess: int, n: int) -> int | None:
    """The smallest c in [0, n) with fits(c), given that fits is monotonic; probes `guess` and its neighbour first,
    so a good estimate costs two renders."""
    if fits(guess):
        if guess == 0 or not fits(guess - 1):
            return guess
        lo, hi, best = 0, guess - 1, guess - 1
    else:
        if guess + 1 >= n:
            return None
        if fits(guess + 1):
            return guess + 1
        lo, hi, best = guess + 2, n - 1, -1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best if best >= 0 else None


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

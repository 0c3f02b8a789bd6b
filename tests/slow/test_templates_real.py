"""PromptRenderer: chat rendering, tools, trimming to num_ctx, /api/generate prompts and fill-in-the-middle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.engine.templates import PromptRenderer
from app.engine.types import Message, ToolCall
from app.errors import InvalidRequest

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

# A template that shows everything message_to_dict produces (and so supports tools natively). Newlines are
# written as expressions because HF renders with trim_blocks.
DEBUG_TEMPLATE = (
    "{% if tools %}TOOLS={{ tools | map(attribute='function.name') | join(',') }}{{ '\\n' }}{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% for c in m.tool_calls or [] %}"
    "[{{ c.id }} {{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}"
    "{% if m.tool_call_id %}<{{ m.tool_call_id }} {{ m.name }}>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tok(embedded_snapshot: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_snapshot))


@pytest.fixture(scope="module")
def renderer(tok: Any) -> PromptRenderer:
    return PromptRenderer(tok)


@pytest.fixture(scope="module")
def fim_tok() -> Any:
    """A word-level tokenizer with FIM tokens and no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|im_start|>", "<|im_end|>"]
    words += ["def", "f", "(", ")", ":", "return", "x", "hello"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")  # type: ignore[no-untyped-call]
    fast.add_special_tokens({"additional_special_tokens": words[1:6]})
    return fast


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


def encode(tok: Any, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


# ---------------------------------------------------------------- rendering


def test_render_uses_the_model_template(renderer: PromptRenderer, tok: Any) -> None:
    msgs = [Message(role="system", content="Be brief."), user("Hi"), assistant("Hello!"), user("Bye")]
    text = renderer.render_chat(msgs)
    expected = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in msgs], tokenize=False, add_generation_prompt=True
    )
    assert text == expected
    assert text.index("Be brief.") < text.index("Hi") < text.index("Hello!") < text.index("Bye")
    assert text.endswith("<|im_start|>assistant\n")


def test_template_override(renderer: PromptRenderer) -> None:
    text = renderer.render_chat([user("Hi")], template=DEBUG_TEMPLATE)
    assert text == "user:Hi\nassistant:"


def test_prefill_continues_the_last_assistant_message(renderer: PromptRenderer) -> None:
    msgs = [user("Count"), assistant("1, 2,")]
    assert renderer.render_chat(msgs, prefill=True).endswith("<|im_start|>assistant\n1, 2,")
    assert renderer.render_chat(msgs).endswith("1, 2,<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "bad", ["{% for m in messages %}", "{{ messages[0].content + 1 }}", "{{ raise_exception('no') }}"]
)
def test_template_error_is_invalid_request(renderer: PromptRenderer, bad: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        renderer.render_chat([user("Hi")], template=bad)
    assert exc.value.param == "template"


def test_native_tools_and_tool_messages(renderer: PromptRenderer) -> None:
    msgs = [
        user("Weather?"),
        Message(role="assistant", tool_calls=(ToolCall(name="get_weather", arguments={"city": "Paris"}, id="c1"),)),
        Message(role="tool", content="22C", tool_call_id="c1", name="get_weather"),
    ]
    text = renderer.render_chat(msgs, tools=TOOLS, template=DEBUG_TEMPLATE, tool_prompt="SHOULD NOT APPEAR")
    assert text == (
        "TOOLS=get_weather\n"
        "user:Weather?\n"
        'assistant:[c1 get_weather {"city": "Paris"}]\n'
        "tool:22C<c1 get_weather>\n"
        "assistant:"
    )


def test_tool_fallback_prompt_goes_into_the_system_message(renderer: PromptRenderer, tok: Any) -> None:
    assert not renderer.supports_tools()
    text = renderer.render_chat([user("Weather?")], tools=TOOLS, tool_prompt="TOOL LIST")
    assert text.startswith("<|im_start|>system\nTOOL LIST<|im_end|>\n<|im_start|>user\nWeather?")
    text = renderer.render_chat([Message(role="system", content="Be brief."), user("Hi")], tools=TOOLS, tool_prompt="T")
    assert text.startswith("<|im_start|>system\nBe brief.\n\nT<|im_end|>\n")
    assert text.count("<|im_start|>system") == 1
    # no tools: no tool prompt
    assert "TOOL LIST" not in renderer.render_chat([user("Hi")], tool_prompt="TOOL LIST")


def test_tool_calls_are_inlined_for_templates_without_them(renderer: PromptRenderer) -> None:
    call = ToolCall(name="get_weather", arguments={"city": "Zürich"}, id="c1")
    msgs = [user("Weather?"), Message(role="assistant", tool_calls=(call,)), Message(role="tool", content="22C")]
    text = renderer.render_chat(msgs, tools=TOOLS, tool_prompt="T")
    block = "<tool_call>" + json.dumps({"name": "get_weather", "arguments": {"city": "Zürich"}}, ensure_ascii=False)
    assert f"<|im_start|>assistant\n{block}</tool_call><|im_end|>" in text
    assert "<|im_start|>tool\n22C<|im_end|>" in text


def test_supports_tools_detects_tool_templates(tok: Any) -> None:
    assert PromptRenderer(tok, chat_template=DEBUG_TEMPLATE).supports_tools()
    assert not PromptRenderer(tok).supports_tools()


def test_no_chat_template_falls_back_to_chatml(fim_tok: Any) -> None:
    text = PromptRenderer(fim_tok).render_chat([user("hello")])
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------- encode_chat and trimming


def history(turns: int, words: int = 12) -> list[Message]:
    msgs = [Message(role="system", content="SYSTEM PROMPT")]
    for i in range(turns):
        msgs.append(user(f"question {i} " + "lorem ipsum " * words))
        msgs.append(assistant(f"answer {i} " + "dolor sit " * words))
    msgs.append(user("FINAL QUESTION"))
    return msgs


def test_encode_chat_fits_untouched(renderer: PromptRenderer, tok: Any) -> None:
    msgs = history(2)
    ids, dropped = renderer.encode_chat(msgs, num_ctx=4096, reserve=256)
    assert dropped == 0
    assert ids == encode(tok, renderer.render_chat(msgs))


def test_trimming_drops_oldest_turns(renderer: PromptRenderer, tok: Any) -> None:
    msgs = history(8)
    full = len(encode(tok, renderer.render_chat(msgs)))
    num_ctx, reserve = full // 2 + 20, 20
    ids, dropped = renderer.encode_chat(msgs, num_ctx=num_ctx, reserve=reserve)
    assert len(ids) <= num_ctx - reserve
    assert 0 < dropped < len(msgs) - 2
    text = tok.decode(ids)
    assert text.count("SYSTEM PROMPT") == 1 and "FINAL QUESTION" in text
    assert "question 0 " not in text and "answer 7 " in text
    kept = [msgs[0], *msgs[1 + dropped :]]
    assert ids == encode(tok, renderer.render_chat(kept))
    assert kept[1].role == "user"  # the kept history starts at a user turn
    # the fewest messages were dropped: keeping one more turn would not fit
    assert len(encode(tok, renderer.render_chat([msgs[0], *msgs[dropped - 1 :]]))) > num_ctx - reserve


def test_trimming_keeps_everything_after_the_last_user_message(renderer: PromptRenderer, tok: Any) -> None:
    msgs = [*history(6), assistant("PARTIAL ANSWER"), Message(role="tool", content="TOOL RESULT")]
    full = len(encode(tok, renderer.render_chat(msgs)))
    ids, dropped = renderer.encode_chat(msgs, num_ctx=full // 2, reserve=10)
    text = tok.decode(ids)
    assert dropped > 0
    for needle in ("SYSTEM PROMPT", "FINAL QUESTION", "PARTIAL ANSWER", "TOOL RESULT"):
        assert needle in text


def test_left_cut_of_the_longest_message(renderer: PromptRenderer, tok: Any) -> None:
    long_text = "START " + " ".join(f"w{i}" for i in range(400)) + " END"
    msgs = [Message(role="system", content="SYSTEM PROMPT"), user(long_text)]
    ids, dropped = renderer.encode_chat(msgs, num_ctx=200, reserve=50)
    assert dropped == 0
    assert len(ids) <= 150
    assert len(ids) >= 140  # cut just enough
    text = tok.decode(ids)
    assert "SYSTEM PROMPT" in text and "w399 END" in text and "START" not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_drop_then_cut(renderer: PromptRenderer, tok: Any) -> None:
    msgs = [*history(3), user("LAST " + "very long " * 300 + "TAIL")]
    ids, dropped = renderer.encode_chat(msgs, num_ctx=256, reserve=56)
    assert len(ids) <= 200
    assert dropped == len(msgs) - 2  # only system + last user remain
    text = tok.decode(ids)
    assert "SYSTEM PROMPT" in text and "TAIL" in text and "LAST" not in text


def test_truncate_false_raises(renderer: PromptRenderer) -> None:
    with pytest.raises(InvalidRequest) as exc:
        renderer.encode_chat(history(8), num_ctx=128, reserve=28, truncate=False)
    assert exc.value.param == "num_ctx"
    assert "num_ctx 128" in exc.value.message and "28 reserved" in exc.value.message


@pytest.mark.parametrize(("num_ctx", "reserve", "limit"), [(64, 1000, 32), (100, 0, 100), (100, 10, 90)])
def test_never_exceeds_the_budget(renderer: PromptRenderer, num_ctx: int, reserve: int, limit: int) -> None:
    ids, _ = renderer.encode_chat(history(4, words=40), num_ctx=num_ctx, reserve=reserve)
    assert len(ids) <= limit


def test_template_overhead_alone_too_long(renderer: PromptRenderer) -> None:
    ids, _ = renderer.encode_chat([user("hi")], num_ctx=8, reserve=0)
    assert 0 < len(ids) <= 8


# ---------------------------------------------------------------- encode_prompt


def test_prompt_is_rendered_as_one_chat_turn(renderer: PromptRenderer, tok: Any) -> None:
    ids = renderer.encode_prompt("Why is the sky blue?", system="Be brief.", num_ctx=4096, reserve=100)
    msgs = [Message(role="system", content="Be brief."), user("Why is the sky blue?")]
    assert ids == encode(tok, renderer.render_chat(msgs))
    no_system = renderer.encode_prompt("Why?", num_ctx=4096, reserve=100)
    assert no_system == encode(tok, renderer.render_chat([user("Why?")]))
    custom = renderer.encode_prompt("Why?", template=DEBUG_TEMPLATE, num_ctx=4096, reserve=100)
    assert tok.decode(custom) == "user:Why?\nassistant:"


def test_raw_prompt_and_context(renderer: PromptRenderer, tok: Any) -> None:
    raw = renderer.encode_prompt("<|im_start|>user\nhi", raw=True, num_ctx=4096, reserve=100)
    assert raw == list(tok.encode("<|im_start|>user\nhi"))
    ids = renderer.encode_prompt("next", context=[1, 2, 3], num_ctx=4096, reserve=100)
    assert ids[:3] == [1, 2, 3]
    assert ids[3:] == encode(tok, renderer.render_chat([user("next")]))


@pytest.mark.parametrize("kw", [{"system": "s"}, {"template": DEBUG_TEMPLATE}, {"context": [1]}])
def test_raw_conflicts(renderer: PromptRenderer, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        renderer.encode_prompt("x", raw=True, num_ctx=100, reserve=10, **kw)
    assert exc.value.param == "raw"


def test_prompt_truncation_keeps_num_keep(renderer: PromptRenderer, tok: Any) -> None:
    prompt = " ".join(f"w{i}" for i in range(300))
    full = list(tok.encode(prompt))
    ids = renderer.encode_prompt(prompt, raw=True, num_ctx=100, reserve=20, num_keep=5)
    assert len(ids) == 80
    assert ids == full[:5] + full[-75:]
    with pytest.raises(InvalidRequest) as exc:
        renderer.encode_prompt(prompt, raw=True, num_ctx=100, reserve=20, truncate=False)
    assert exc.value.param == "num_ctx"
    assert renderer.encode_prompt(prompt, raw=True, num_ctx=100, reserve=20, num_keep=0) == full[-80:]


def test_suffix_without_fim_is_rejected(renderer: PromptRenderer) -> None:
    assert renderer._fim is None  # the tokenizer has no fill-in-the-middle tokens
    with pytest.raises(InvalidRequest) as exc:
        renderer.encode_prompt("def f(", suffix="return x", num_ctx=100, reserve=10)
    assert exc.value.param == "suffix"
    assert "insert" in exc.value.message


def test_fill_in_the_middle(fim_tok: Any) -> None:
    r = PromptRenderer(fim_tok)
    assert r._fim is not None
    ids = r.encode_prompt("def f ( x ) :", suffix="return x", num_ctx=100, reserve=10)
    vocab = fim_tok.get_vocab()
    prefix, suffix = encode(fim_tok, "def f ( x ) :"), encode(fim_tok, "return x")
    assert vocab["<unk>"] not in prefix + suffix
    assert ids == [vocab["<fim_prefix>"], *prefix, vocab["<fim_suffix>"], *suffix, vocab["<fim_middle>"]]
    # an empty suffix is no suffix
    assert r.encode_prompt("hello", suffix="", raw=True, num_ctx=100, reserve=10) == list(fim_tok.encode("hello"))


class _CountingRenderer(PromptRenderer):
    renders = 0

    def render_chat(self, *args: Any, **kwargs: Any) -> str:
        type(self).renders += 1
        return super().render_chat(*args, **kwargs)


@pytest.mark.parametrize("role", ["system", "user"])
@pytest.mark.parametrize("n", [100, 1000])
def test_trimming_renders_a_few_times_whatever_the_length(tok: Any, role: str, n: int) -> None:
    # 1,000 short system messages with num_ctx 64 took 35 s when trimming re-rendered once per message.
    r = _CountingRenderer(tok)
    _CountingRenderer.renders = 0
    msgs = [Message(role=role, content=f"note {i}") for i in range(n)] + [Message(role="user", content="Hi")]
    ids, _ = r.encode_chat(msgs, num_ctx=64, reserve=32)
    assert 0 < len(ids) <= 32
    assert _CountingRenderer.renders <= 6


def test_trimming_still_drops_the_fewest_turns(renderer: PromptRenderer, tok: Any) -> None:
    msgs = []
    for i in range(60):
        msgs += [Message(role="user", content=f"question {i} " * 3), Message(role="assistant", content=f"answer {i}")]
    msgs.append(Message(role="user", content="last"))
    full = len(renderer.encode_chat(msgs, num_ctx=100_000, reserve=0)[0])
    for num_ctx in (full // 2, full // 3, 300):
        ids, dropped = renderer.encode_chat(msgs, num_ctx=num_ctx, reserve=0)
        assert len(ids) <= num_ctx
        # one user/assistant turn fewer dropped would not fit
        kept_more = msgs[dropped - 2 :] if dropped >= 2 else msgs
        assert len(renderer.encode_chat(kept_more, num_ctx=100_000, reserve=0)[0]) > num_ctx


def test_empty_rendering_is_a_400(renderer: PromptRenderer) -> None:
    with pytest.raises(InvalidRequest) as err:
        renderer.encode_chat([Message(role="user", content="hi")], template="{{ '' }}", num_ctx=64, reserve=8)
    assert err.value.param == "template"
    with pytest.raises(InvalidRequest) as err:
        renderer.encode_prompt("hi", template="{{ '' }}", num_ctx=64, reserve=8)
    assert err.value.param == "template"
    with pytest.raises(InvalidRequest) as err:
        renderer.encode_prompt("", raw=True, num_ctx=64, reserve=8)
    assert err.value.param == "prompt"


@pytest.fixture(scope="module")
def sandbox() -> Any:
    from app.engine.template_sandbox import TemplateSandbox

    box = TemplateSandbox(timeout=2.0, memory_bytes=1 << 30, max_chars=100_000)
    yield box
    box.close()


def test_override_templates_render_in_the_sandbox_like_in_process(renderer: PromptRenderer, sandbox: Any) -> None:
    from app.engine.template_sandbox import RenderGuard

    msgs = [Message(role="system", content="Be brief."), Message(role="user", content="Hi")]
    inside = renderer.render_chat(msgs, template=DEBUG_TEMPLATE)
    boxed = renderer.render_chat(msgs, template=DEBUG_TEMPLATE, guard=RenderGuard(sandbox))
    assert boxed == inside == "system:Be brief.\nuser:Hi\nassistant:"
    # bos/eos and the other special tokens are there as for the model's own template
    assert renderer.render_chat(msgs, template="{{ eos_token }}", guard=RenderGuard(sandbox)) == "<|im_end|>"


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{ 'ab ' * 333333 }}", "characters"),  # over max_chars=100,000
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
        (
            "{% set ns = namespace(a='x') %}{% for i in range(60) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}",
            "memory|longer than",
        ),
        ("{{ raise_exception('nope') }}", "nope"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ],
)
def test_hostile_templates_are_400s_in_bounded_time(
    renderer: PromptRenderer, sandbox: Any, template: str, says: str
) -> None:
    from app.engine.template_sandbox import RenderGuard

    with pytest.raises(InvalidRequest) as err:
        renderer.render_chat([Message(role="user", content="hi")], template=template, guard=RenderGuard(sandbox))
    assert err.value.param == "template" and any(word in str(err.value) for word in says.split("|"))
    # the sandbox recovers: the next render works
    assert (
        renderer.render_chat(
            [Message(role="user", content="x")], template="{{ messages[0].content }}", guard=RenderGuard(sandbox)
        )
        == "x"
    )


def test_a_cancelled_render_stops_its_worker(renderer: PromptRenderer, sandbox: Any) -> None:
    import threading
    import time

    from app.engine.template_sandbox import RenderCancelled, RenderGuard

    guard = RenderGuard(sandbox)
    threading.Timer(0.3, guard.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(RenderCancelled):
        renderer.render_chat(
            [Message(role="user", content="hi")],
            template="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            guard=guard,
        )
    assert time.monotonic() - started < 1.5  # well before the 2 s deadline

"""/api/show capabilities list only what the model does: `tools` from templates that render tools, `insert` from
FIM tokens, never `vision`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.engine.templates import renders_tools
from app.registry.facts import ModelFacts, gguf_facts, hf_dir_facts
from app.registry.gguf_info import FIM_SPELLINGS, read_gguf_info
from app.registry.show import show_payload
from app.registry.types import Alias, ModelSource, ResolvedModel

# The shape of chat templates that render tools (Qwen2.5, Llama 3.1) and of ones that do not (SmolLM2).
TOOLS_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)
PLAIN_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def facts(template: str | None, fim: bool = False) -> ModelFacts:
    return ModelFacts(
        size_bytes=1,
        digest="0" * 64,
        modified_at=0.0,
        format="gguf",
        family="llama",
        parameter_count=1,
        parameter_size="1",
        quantization_level="F32",
        context_length=8,
        template=template,
        fim=fim,
    )


def resolved(alias: Alias | None = None) -> ResolvedModel:
    source = ModelSource(kind="gguf", path=Path("/x"))
    return ResolvedModel(requested="m", base_name="m:latest", source=source, alias=alias)


@pytest.mark.parametrize(
    ("template", "fim", "expected"),
    [
        (TOOLS_TEMPLATE, False, ["completion", "tools"]),
        (PLAIN_TEMPLATE, False, ["completion"]),
        (None, False, ["completion"]),
        (PLAIN_TEMPLATE, True, ["completion", "insert"]),
        (TOOLS_TEMPLATE, True, ["completion", "tools", "insert"]),
    ],
)
def test_capabilities_follow_the_template_and_tokens(template: str | None, fim: bool, expected: list[str]) -> None:
    shown = show_payload("m", resolved(), facts(template, fim))
    assert shown["capabilities"] == expected
    assert "vision" not in shown["capabilities"]


def test_an_alias_template_decides_tools() -> None:
    with_tools = Alias(name="a", model="m", template=TOOLS_TEMPLATE)
    assert "tools" in show_payload("a", resolved(with_tools), facts(PLAIN_TEMPLATE))["capabilities"]
    without = Alias(name="b", model="m", template=PLAIN_TEMPLATE)
    assert "tools" not in show_payload("b", resolved(without), facts(TOOLS_TEMPLATE))["capabilities"]


def test_renders_tools_is_what_the_renderer_uses() -> None:
    assert renders_tools(TOOLS_TEMPLATE) and not renders_tools(PLAIN_TEMPLATE) and not renders_tools(None)
    # A word that merely contains "tools" is not a tools variable.
    assert not renders_tools("{{ 'toolset' }}{{ messages_tools_x }}")


@pytest.mark.parametrize("spelling", FIM_SPELLINGS)
def test_insert_from_every_fim_spelling_the_renderer_knows(spelling: tuple[str, str, str], tmp_path: Path) -> None:
    from tests.unit.registry.conftest import make_gguf

    gguf = make_gguf(tmp_path / "m.gguf", tokens=[*spelling, *(f"t{i}" for i in range(7))])
    assert read_gguf_info(gguf).has_fim and gguf_facts(gguf).fim
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    vocab = {t: i for i, t in enumerate([*spelling, "a", "b"])}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}, ensure_ascii=False))
    assert hf_dir_facts(folder).fim


def test_no_insert_from_an_incomplete_spelling(tmp_path: Path) -> None:
    from tests.unit.registry.conftest import make_gguf

    mixed = ["<fim_prefix>", "<|fim_suffix|>", "<fim_middle>", "a", "b"]
    assert not read_gguf_info(make_gguf(tmp_path / "m.gguf", tokens=mixed)).has_fim

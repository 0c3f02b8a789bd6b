"""Request limits: each violation is an InvalidRequest naming the field, checked without tokenizing."""

from __future__ import annotations

import pytest

from app.engine import limits
from app.engine.types import EmbeddingRequest, GenerationRequest, Message, SamplingParams
from app.errors import InvalidRequest
from app.settings import Settings


def _param(req: GenerationRequest, settings: Settings) -> str | None:
    with pytest.raises(InvalidRequest) as err:
        limits.check_generation(req, settings)
    return err.value.param


def test_within_limits_passes(settings: Settings) -> None:
    limits.check_generation(
        GenerationRequest(
            model="m",
            messages=(Message(role="user", content="hi"),),
            sampling=SamplingParams(stop=("a",) * 16, seed=-1),
            tools=({"type": "function", "function": {"name": "f"}},),
        ),
        settings,
    )


def test_each_limit_names_its_field(settings: Settings) -> None:
    s = settings.model_copy(
        update={"max_messages": 3, "max_message_chars": 10, "max_prompt_chars": 25, "max_stop": 2, "max_stop_chars": 4}
    )
    msg = Message(role="user", content="x")
    assert _param(GenerationRequest(model="m", messages=(msg,) * 4), s) == "messages"
    long = Message(role="user", content="x" * 11)
    assert _param(GenerationRequest(model="m", messages=(msg, long)), s) == "messages[1].content"
    nine = Message(role="user", content="x" * 9)
    assert _param(GenerationRequest(model="m", messages=(nine, nine, nine)), s) == "messages"
    assert _param(GenerationRequest(model="m", prompt="y" * 11), s) == "prompt"
    assert _param(GenerationRequest(model="m", prompt="y", system="z" * 11), s) == "system"
    assert _param(GenerationRequest(model="m", prompt="y", sampling=SamplingParams(stop=("a", "b", "c"))), s) == "stop"
    assert _param(GenerationRequest(model="m", prompt="y", sampling=SamplingParams(stop=("abcde",))), s) == "stop"


@pytest.mark.parametrize("seed", [-2, 2**63, 10**30])
def test_seed_range(settings: Settings, seed: int) -> None:
    assert _param(GenerationRequest(model="m", prompt="y", sampling=SamplingParams(seed=seed)), settings) == "seed"


@pytest.mark.parametrize("context", [(-5,), (1, True), (1.5,)])
def test_context_must_be_token_ids(settings: Settings, context: tuple[object, ...]) -> None:
    req = GenerationRequest(model="m", prompt="y", context=context)  # type: ignore[arg-type]
    assert _param(req, settings) == "context"


def test_tools_count_and_size(settings: Settings) -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 100}}
    s = settings.model_copy(update={"max_tools": 2, "max_tools_bytes": 250})
    assert _param(GenerationRequest(model="m", prompt="y", tools=(tool,) * 3), s) == "tools"
    assert _param(GenerationRequest(model="m", prompt="y", tools=(tool,) * 2), s) == "tools"


def test_templates_size_and_switch(settings: Settings) -> None:
    s = settings.model_copy(update={"max_template_bytes": 10})
    assert _param(GenerationRequest(model="m", prompt="y", template="{{ x }}" * 3), s) == "template"
    off = settings.model_copy(update={"request_templates": False})
    assert _param(GenerationRequest(model="m", prompt="y", template="{{ x }}"), off) == "template"


def test_embedding_inputs(settings: Settings) -> None:
    s = settings.model_copy(update={"max_embed_inputs": 2, "max_message_chars": 5})
    with pytest.raises(InvalidRequest) as err:
        limits.check_embedding(EmbeddingRequest(model="m", inputs=("a", "b", "c")), s)
    assert err.value.param == "input"
    with pytest.raises(InvalidRequest) as err:
        limits.check_embedding(EmbeddingRequest(model="m", inputs=("a", "bbbbbb")), s)
    assert err.value.param == "input[1]"

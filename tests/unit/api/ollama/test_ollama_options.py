"""Ollama `options` -> SamplingParams: names, types, ranges, ignored keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.api.ollama.options import IGNORED_OPTIONS, option_values, parse_options
from app.engine.types import SamplingParams
from app.errors import InvalidRequest


def test_every_option_maps_to_its_sampling_field() -> None:
    p = parse_options(
        {
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 20,
            "min_p": 0.05,
            "typical_p": 0.7,
            "repeat_penalty": 1.2,
            "repeat_last_n": 32,
            "presence_penalty": 0.3,
            "frequency_penalty": -0.4,
            "seed": 42,
            "stop": ["\n\n", "User:"],
            "num_predict": 64,
            "num_ctx": 2048,
            "num_keep": 8,
        }
    )
    assert p == SamplingParams(
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        typical_p=0.7,
        repetition_penalty=1.2,
        repeat_last_n=32,
        presence_penalty=0.3,
        frequency_penalty=-0.4,
        seed=42,
        stop=("\n\n", "User:"),
        max_tokens=64,
        num_ctx=2048,
        num_keep=8,
    )


def test_absent_and_null_leave_fields_unset() -> None:
    assert parse_options(None) == SamplingParams()
    assert parse_options({}) == SamplingParams()
    # langchain's OllamaEmbeddings sends every key, most of them null
    assert parse_options({"temperature": None, "stop": None, "mirostat": None}) == SamplingParams()


def test_ints_accept_whole_floats_and_floats_accept_ints() -> None:
    p = parse_options({"num_predict": 5.0, "top_k": 3.0, "temperature": 1})
    assert p.max_tokens == 5 and isinstance(p.max_tokens, int)
    assert p.top_k == 3 and isinstance(p.top_k, int)
    assert p.temperature == 1.0 and isinstance(p.temperature, float)


@pytest.mark.parametrize("value", [-1, -2])
def test_num_predict_special_values_pass_through(value: int) -> None:
    assert parse_options({"num_predict": value}).max_tokens == value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("top_p", -0.1),
        ("min_p", 2),
        ("typical_p", -1),
        ("top_k", -1),
        ("repeat_penalty", 0),
        ("repeat_last_n", -2),
        ("num_predict", -3),
        ("num_ctx", 3),
        ("num_keep", -5),
    ],
)
def test_out_of_range_is_rejected_naming_the_option(key: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_options({key: value})
    assert f'option "{key}" must be' in e.value.message
    assert e.value.param == f"options.{key}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", "0.7"),
        ("temperature", True),
        ("top_k", 2.5),
        ("seed", "1"),
        ("num_predict", [1]),
        ("stop", "###"),
        ("stop", [1, 2]),
        ("temperature", float("nan")),
    ],
)
def test_wrong_types_are_rejected(key: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_options({key: value})
    assert f'option "{key}"' in e.value.message


def test_edges_are_accepted() -> None:
    p = parse_options({"temperature": 0, "top_p": 0, "top_k": 0, "num_ctx": 4, "repeat_last_n": -1, "seed": -1})
    assert (p.temperature, p.top_p, p.top_k, p.num_ctx, p.repeat_last_n, p.seed) == (0.0, 0.0, 0, 4, -1, -1)


def test_unknown_and_hardware_keys_are_ignored_with_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    assert {"mirostat", "tfs_z", "numa", "num_gpu", "num_thread", "num_batch", "use_mmap"} <= IGNORED_OPTIONS
    with caplog.at_level(logging.DEBUG, logger="app.api.ollama.options"):
        p = parse_options({"mirostat": 2, "num_gpu": 99, "made_up": 1, "temperature": 0.2})
    assert p == SamplingParams(temperature=0.2)
    text = caplog.text
    assert "mirostat" in text and "num_gpu" in text and "made_up" in text


def test_empty_stop_strings_are_dropped() -> None:
    assert parse_options({"stop": ["", "x"]}).stop == ("x",)
    assert parse_options({"stop": []}).stop == ()


def test_options_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_options([1, 2])
    assert e.value.param == "options"
    with pytest.raises(InvalidRequest) as e:
        option_values("x", where="parameters")
    assert e.value.message == "parameters must be an object"

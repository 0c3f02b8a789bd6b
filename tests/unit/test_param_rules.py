"""The one home of the sampling-option rules (app/param_rules.py), and each caller naming a broken rule its own way:
Ollama `options.<ollama name>`, OpenAI `<field>`, stored options (aliases, model configs) `options.<field>`, the
engine's check of merged options `<field>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.api.ollama.options import OPTIONS, parse_options
from app.api.openai.schemas import ChatCompletionRequest
from app.errors import InvalidRequest
from app.param_rules import RANGES, SEED_MAX, check_params, check_value, validate_options
from app.params import SamplingParams
from app.registry.catalog import ModelCatalog
from app.registry.types import Alias
from app.settings import Settings

# (SamplingParams field, Ollama option, OpenAI field, a value the engine refuses, what the rule says)
CASES = [
    ("typical_p", "typical_p", "typical_p", 0, "in (0, 1]"),
    ("min_p", "min_p", "min_p", 1.5, "between 0 and 1"),
    ("top_p", "top_p", "top_p", -0.1, "between 0 and 1"),
    ("repetition_penalty", "repeat_penalty", "repetition_penalty", 0, "> 0"),
    ("seed", "seed", "seed", -7, f"-1 (random) or between 0 and {SEED_MAX}"),
    ("temperature", "temperature", "temperature", -1, ">= 0"),
]
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("field", "ollama", "openai", "value", "rule"), CASES)
def test_one_bad_value_is_refused_everywhere_named_each_way(
    field: str, ollama: str, openai: str, value: Any, rule: str
) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_options({ollama: value})
    assert (e.value.message, e.value.param) == (f'option "{ollama}" must be {rule}', f"options.{ollama}")

    with pytest.raises(ValidationError) as v:  # the API renders it as a 400 with param = the field (tests/api)
        ChatCompletionRequest.model_validate({"model": "m", "messages": USER, openai: value})
    assert v.value.errors()[0]["loc"] == (openai,)

    with pytest.raises(InvalidRequest) as e:
        validate_options({field: value})
    assert (e.value.message, e.value.param) == (f"{field} must be {rule}", f"options.{field}")

    with pytest.raises(InvalidRequest) as e:
        check_params(SamplingParams(**{field: value}))
    assert (e.value.message, e.value.param) == (f"{field} must be {rule}", field)


def test_typical_p_zero_is_refused_by_ollama_under_its_option_name() -> None:
    # It used to pass Ollama's own range (0 to 1), then fail in the engine named `typical_p`.
    with pytest.raises(InvalidRequest) as e:
        parse_options({"typical_p": 0})
    assert e.value.param == "options.typical_p"
    assert parse_options({"typical_p": 1}).typical_p == 1.0


def test_every_ollama_option_with_a_range_uses_the_engine_range() -> None:
    for key, spec in OPTIONS.items():
        rule = RANGES.get(spec.target)
        if rule is None or rule.ge is None or rule.ge == -1:
            continue
        below = rule.ge - 1 if spec.kind == "int" else rule.ge - 0.5
        with pytest.raises(InvalidRequest):
            parse_options({key: below})


def test_openai_bounds_come_from_the_engine_rules() -> None:
    fields = ChatCompletionRequest.model_fields

    def limits(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in fields[name].metadata:
            for attr in ("ge", "gt", "le"):
                if getattr(m, attr, None) is not None:
                    out[attr] = getattr(m, attr)
        return out

    for name in ("min_p", "typical_p", "seed", "min_tokens", "top_logprobs"):
        assert limits(name) == RANGES[name].bounds(), name
    assert limits("temperature") == {"ge": 0, "le": 2}  # OpenAI's ceiling over the engine's floor
    assert limits("top_p") == {"gt": 0, "le": 1}  # OpenAI's open lower bound


def test_stored_options_gain_the_ranges_the_ollama_side_had() -> None:
    # repeat_last_n, num_predict (max_tokens) and num_keep were checked for Ollama requests only.
    for field, value in (("repeat_last_n", -2), ("max_tokens", -3), ("num_keep", -5), ("min_tokens", -1)):
        with pytest.raises(InvalidRequest) as e:
            validate_options({field: value})
        assert e.value.param == f"options.{field}"
    assert validate_options({"max_tokens": -2, "repeat_last_n": -1, "seed": -1}).max_tokens == -2


def test_stored_options_names_types_and_format() -> None:
    with pytest.raises(InvalidRequest) as e:
        validate_options({"temprature": 1})
    assert e.value.param == "options.temprature" and "valid options" in e.value.message
    with pytest.raises(InvalidRequest) as e:
        validate_options({"temperature": "hot"})
    assert (e.value.message, e.value.param) == ("temperature must be a number", "options.temperature")
    with pytest.raises(InvalidRequest) as e:
        validate_options({"format": "xml"})
    assert e.value.param == "format"
    assert validate_options({"format": {"type": "object"}, "top_k": 3}) == SamplingParams(top_k=3)


def test_check_value_edges() -> None:
    for field, rule in RANGES.items():
        for edge in (rule.ge, rule.le):
            if edge is not None:
                check_value(field, edge)
        if rule.gt is not None:
            with pytest.raises(InvalidRequest):
                check_value(field, rule.gt)
    check_value("top_p", None)
    check_value("presence_penalty", 99.0)  # no engine range (OpenAI bounds its own)
    with pytest.raises(InvalidRequest):
        check_value("seed", SEED_MAX + 1)


def test_the_catalog_stores_only_what_the_engine_accepts(tmp_path: Path, settings: Settings) -> None:
    models = tmp_path / "models"
    models.mkdir()
    catalog = ModelCatalog(settings.model_copy(update={"models_dir": models}), cache_dir=tmp_path / "hub")
    with pytest.raises(InvalidRequest) as e:
        catalog.put_alias(Alias(name="x", model="smollm2:135m", options={"typical_p": 0}))
    assert (e.value.message, e.value.param) == ("typical_p must be in (0, 1]", "options.typical_p")
    # A schema the engine refuses on every request was stored (only "json or an object" was checked).
    with pytest.raises(InvalidRequest) as e:
        catalog.put_alias(Alias(name="x", model="smollm2:135m", options={"format": {"type": "nonsense"}}))
    assert e.value.param == "format" and "invalid format" in e.value.message
    assert catalog.store.list() == []


def test_stop_limits_are_one_rule_for_requests_and_stored_options(settings: Settings) -> None:
    from app.engine.limits import check_sampling_limits
    from app.registry.limits import check_options

    small = settings.model_copy(update={"max_stop": 2, "max_stop_chars": 5})
    for stop, needle in ((["a", "b", "c"], "at most 2"), (["toolong"], "longer than 5"), ([1], "must be strings")):
        with pytest.raises(InvalidRequest) as request_error:
            check_sampling_limits(SamplingParams(stop=tuple(stop)), small)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest) as stored_error:
            check_options({"stop": stop}, small)
        assert request_error.value.message == stored_error.value.message and needle in stored_error.value.message
        assert request_error.value.param == stored_error.value.param == "stop"
    check_options({"stop": "12345"}, small)
    with pytest.raises(InvalidRequest):
        check_options({"stop": "123456"}, small)  # one string, as an alias may store it, is checked too

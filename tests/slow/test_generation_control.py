"""Generation control on the real model, as a user drives it: sampling options, stops, lengths, penalties, biases,
seeds, context trimming, logprobs and Ollama's system/template/raw/suffix/think, over both protocols."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.prompts import FRANCE as Q

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
STORY: Any = [{"role": "user", "content": "Write a long story about a dragon."}]
# Greedy SmolLM2 answers this with the same token over and over: a clean baseline for the penalties.
REPEAT: Any = [{"role": "user", "content": "List the numbers 1 1 1 1 1 1 1 1 1 1 1 1 and keep repeating 1."}]
GREEDY = {"temperature": 0}


# --- helpers ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(real_server: str, shared_snapshots: Path) -> Any:
    """The served model's tokenizer (from the snapshot the server converted), for token ids and counts."""
    found = sorted(shared_snapshots.glob("*/tokenizer.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip("no converted snapshot with a tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(found[-1].parent))


def parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls concurrently (so they share the engine's batch) and return their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def chat(http: httpx.Client, messages: Any, options: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = http.post("/api/chat", json={"model": MODEL, "messages": messages, "stream": False, "options": options, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def generate(http: httpx.Client, prompt: str, options: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = http.post("/api/generate", json={"model": MODEL, "prompt": prompt, "stream": False, "options": options, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def oa_chat(http: httpx.Client, messages: Any, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def oa_text(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


def distinct_ratio(text: str) -> float:
    words = text.split()
    return len(set(words)) / max(1, len(words))


def ndjson(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.strip()]


def sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


# --- lengths ----------------------------------------------------------------------------------------------------


def test_num_predict_and_max_tokens_bound_the_length(http: httpx.Client, oc: ollama.Client, oa: openai.OpenAI) -> None:
    ol, ol_stream, ol_gen, oa_max, oa_mct = parallel(
        lambda: chat(http, STORY, {**GREEDY, "num_predict": 7}),
        lambda: list(oc.chat(model=MODEL, messages=STORY, options={**GREEDY, "num_predict": 7}, stream=True)),
        lambda: oc.generate(model=MODEL, prompt="Once upon a time", options={"num_predict": 5, "seed": 1}),
        lambda: oa.chat.completions.create(model=MODEL, messages=STORY, temperature=0, max_tokens=7),
        lambda: oa.chat.completions.create(model=MODEL, messages=STORY, max_completion_tokens=4, seed=3),
    )
    assert ol["eval_count"] == 7 and ol["done_reason"] == "length" and ol["message"]["content"]
    final = ol_stream[-1]
    assert final.done and final.eval_count == 7 and final.done_reason == "length"
    assert 1 <= len([c for c in ol_stream if c.message.content]) <= 7
    assert "".join(c.message.content or "" for c in ol_stream) == ol["message"]["content"]
    assert ol_gen.eval_count == 5 and ol_gen.done_reason == "length"
    assert oa_max.usage is not None and oa_max.usage.completion_tokens == 7
    assert oa_max.choices[0].finish_reason == "length"
    assert oa_max.choices[0].message.content == ol["message"]["content"]  # same greedy tokens on both protocols
    assert oa_mct.usage is not None and oa_mct.usage.completion_tokens == 4
    assert oa_mct.choices[0].finish_reason == "length"


def test_n_choices_and_usage_counts_them_all(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(model=MODEL, messages=STORY, temperature=1.0, max_tokens=6, seed=11, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.message.content for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 18
    single = oa.chat.completions.create(model=MODEL, messages=STORY, temperature=1.0, max_tokens=6, seed=11)
    assert single.usage is not None and r.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt once
    assert r.choices[0].message.content == single.choices[0].message.content  # choice 0 uses the seed itself


def test_min_tokens_and_ignore_eos_force_the_length(http: httpx.Client) -> None:
    base, minimum, ignore = parallel(
        lambda: oa_chat(http, Q, temperature=0, max_tokens=24),
        lambda: oa_chat(http, Q, temperature=0, max_tokens=24, min_tokens=14),
        lambda: oa_chat(http, Q, temperature=0, max_tokens=20, ignore_eos=True),
    )
    short = base["usage"]["completion_tokens"]
    assert base["choices"][0]["finish_reason"] == "stop" and short < 14, "the baseline must end on its own"
    assert minimum["usage"]["completion_tokens"] >= 14
    assert ignore["usage"]["completion_tokens"] == 20 and ignore["choices"][0]["finish_reason"] == "length"
    # Both continue the same greedy path past the point where the model wanted to stop.
    assert minimum["choices"][0]["message"]["content"].startswith(base["choices"][0]["message"]["content"])
    assert "<|im_end|>" not in ignore["choices"][0]["message"]["content"]


# --- stop sequences ---------------------------------------------------------------------------------------------


def test_stop_sequences_never_leak(http: httpx.Client, oc: ollama.Client, oa: openai.OpenAI) -> None:
    base = chat(http, Q, {**GREEDY, "num_predict": 24})["message"]["content"]
    assert "Paris" in base
    # "ris" ends inside the " Paris" token: the matcher must cut mid-token and hold back the partial match.
    for stop in ("Paris", "ris"):
        _check_stop(http, oc, oa, stop, base[: base.index(stop)])


def _check_stop(http: httpx.Client, oc: ollama.Client, oa: openai.OpenAI, stop: str, want: str) -> None:
    opts = {**GREEDY, "num_predict": 24, "stop": [stop]}
    ol, ol_stream, oa_r, oa_stream, comp = parallel(
        lambda: chat(http, Q, opts),
        lambda: list(oc.chat(model=MODEL, messages=Q, options=opts, stream=True)),
        lambda: oa.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=24, stop=stop),
        lambda: list(
            oa.chat.completions.create(
                model=MODEL, messages=Q, temperature=0, max_tokens=24, stop=[stop, "never-there"], stream=True
            )
        ),
        lambda: oa.completions.create(
            model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8, stop=[stop]
        ),
    )
    assert ol["message"]["content"] == want and ol["done_reason"] == "stop"
    pieces = [c.message.content or "" for c in ol_stream]
    assert "".join(pieces) == want and ol_stream[-1].done_reason == "stop"
    assert oa_r.choices[0].message.content == want and oa_r.choices[0].finish_reason == "stop"
    deltas = [c.choices[0].delta.content or "" for c in oa_stream if c.choices]
    assert "".join(deltas) == want
    assert [c.choices[0].finish_reason for c in oa_stream if c.choices][-1] == "stop"
    assert stop not in comp.choices[0].text and comp.choices[0].finish_reason == "stop"


# --- penalties --------------------------------------------------------------------------------------------------


def test_penalties_lower_repetition(http: httpx.Client) -> None:
    opts = {**GREEDY, "num_predict": 48}
    oa_kw: dict[str, Any] = {"temperature": 0, "max_tokens": 48}
    base, rep, rep_off, pres, freq, oa_base, oa_rep, oa_pres, oa_freq = parallel(
        lambda: chat(http, REPEAT, opts)["message"]["content"],
        lambda: chat(http, REPEAT, {**opts, "repeat_penalty": 1.3})["message"]["content"],
        lambda: chat(http, REPEAT, {**opts, "repeat_penalty": 1.3, "repeat_last_n": 0})["message"]["content"],
        lambda: chat(http, REPEAT, {**opts, "presence_penalty": 2.0})["message"]["content"],
        lambda: chat(http, REPEAT, {**opts, "frequency_penalty": 1.0})["message"]["content"],
        lambda: oa_chat(http, REPEAT, **oa_kw)["choices"][0]["message"]["content"],
        lambda: oa_chat(http, REPEAT, **oa_kw, repetition_penalty=1.3)["choices"][0]["message"]["content"],
        lambda: oa_chat(http, REPEAT, **oa_kw, presence_penalty=2.0)["choices"][0]["message"]["content"],
        lambda: oa_chat(http, REPEAT, **oa_kw, frequency_penalty=1.0)["choices"][0]["message"]["content"],
    )
    low = distinct_ratio(base)
    assert low < 0.2, f"the baseline should repeat itself: {base!r}"
    assert rep_off == base  # repeat_last_n 0 switches the repeat penalty off
    assert oa_base == base
    for name, text in [
        ("repeat_penalty", rep),
        ("presence_penalty", pres),
        ("frequency_penalty", freq),
        ("openai repetition_penalty", oa_rep),
        ("openai presence_penalty", oa_pres),
        ("openai frequency_penalty", oa_freq),
    ]:
        assert distinct_ratio(text) > low, f"{name} did not lower repetition: {text!r}"
    assert (oa_rep, oa_pres, oa_freq) == (rep, pres, freq)  # one sampler behind both protocols


# --- truncation samplers and temperature --------------------------------------------------------------------------


def test_truncation_to_one_token_equals_greedy(http: httpx.Client) -> None:
    hot = {"temperature": 1.5, "num_predict": 16}
    greedy, top_k, min_p, top_p, oa_top_k, oa_min_p, oa_top_p = parallel(
        lambda: chat(http, STORY, {**GREEDY, "num_predict": 16})["message"]["content"],
        lambda: chat(http, STORY, {**hot, "top_k": 1, "seed": 1})["message"]["content"],
        lambda: chat(http, STORY, {**hot, "top_k": 0, "top_p": 1.0, "min_p": 1.0, "seed": 2})["message"]["content"],
        lambda: chat(http, STORY, {**hot, "top_k": 0, "top_p": 1e-6, "seed": 3})["message"]["content"],
        lambda: oa_text(oa_chat(http, STORY, temperature=1.5, max_tokens=16, top_k=1, seed=4)),
        lambda: oa_text(oa_chat(http, STORY, temperature=1.5, max_tokens=16, min_p=1.0, seed=5)),
        lambda: oa_text(oa_chat(http, STORY, temperature=1.5, max_tokens=16, top_p=1e-6, seed=6)),
    )
    assert greedy
    assert top_k == greedy and min_p == greedy and top_p == greedy
    assert oa_top_k == greedy and oa_min_p == greedy and oa_top_p == greedy


def test_temperature_and_seed(http: httpx.Client, oa: openai.OpenAI) -> None:
    sampled = {"temperature": 1.2, "top_k": 40, "top_p": 0.95, "typical_p": 0.9, "num_predict": 12}

    def ol(seed: int, temperature: float | None = None) -> str:
        opts = {**sampled, "seed": seed}
        if temperature is not None:
            opts["temperature"] = temperature
        return str(chat(http, STORY, opts)["message"]["content"])

    def oai(seed: int) -> str:
        r = oa.chat.completions.create(
            model=MODEL, messages=STORY, temperature=1.2, top_p=0.95, max_tokens=12, seed=seed
        )
        return r.choices[0].message.content or ""

    a1, a2, b, c, d, cold1, cold2, o1, o2 = parallel(
        lambda: ol(7),
        lambda: ol(7),
        lambda: ol(8),
        lambda: ol(9),
        lambda: ol(10),
        lambda: ol(1, 0.0),
        lambda: ol(2, 0.0),
        lambda: oai(7),
        lambda: oai(7),
    )
    assert a1 == a2, "same seed and options must give the same text"
    assert len({a1, b, c, d}) > 1, "different seeds at temperature 1.2 should not all agree"
    assert cold1 == cold2  # temperature 0 ignores the seed
    assert o1 == o2


# --- logit_bias -------------------------------------------------------------------------------------------------


def test_logit_bias_bans_and_forces_tokens(http: httpx.Client, tokenizer: Any) -> None:
    paris = tokenizer.encode(" Paris", add_special_tokens=False)
    banana = tokenizer.encode(" banana", add_special_tokens=False)
    assert len(paris) == 1 and len(banana) == 1
    prompt = "The capital of France is"
    body = {"model": MODEL, "prompt": prompt, "temperature": 0, "max_tokens": 4, "logprobs": 1}

    def comp(**extra: Any) -> dict[str, Any]:
        r = http.post("/v1/completions", json={**body, **extra})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()["choices"][0]
        return out

    free, banned, forced, chat_free, chat_banned = parallel(
        lambda: comp(),
        lambda: comp(logit_bias={str(paris[0]): -100}),
        lambda: comp(logit_bias={str(banana[0]): 100}),
        lambda: oa_chat(http, Q, temperature=0, max_tokens=12, logprobs=True),
        lambda: oa_chat(http, Q, temperature=0, max_tokens=12, logprobs=True, logit_bias={str(paris[0]): -100}),
    )
    assert free["logprobs"]["tokens"][0] == " Paris", "the greedy continuation starts with ' Paris'"
    assert " Paris" not in banned["logprobs"]["tokens"] and not banned["text"].startswith(" Paris")
    assert forced["logprobs"]["tokens"] == [" banana"] * 4
    free_tokens = [t["token"] for t in chat_free["choices"][0]["logprobs"]["content"]]
    banned_tokens = [t["token"] for t in chat_banned["choices"][0]["logprobs"]["content"]]
    assert " Paris" in free_tokens and " Paris" not in banned_tokens


def test_logit_bias_outside_the_vocabulary_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": Q, "logit_bias": {"99999999": 5}})
    assert r.status_code == 400 and "logit_bias" in r.text


# --- context window ---------------------------------------------------------------------------------------------


def _long_history() -> list[dict[str, str]]:
    filler = " ".join(f"The {i}th fact about rivers is that water flows downhill to the sea." for i in range(20))
    return [
        {"role": "user", "content": "Tell me about rivers. " + filler},
        {"role": "assistant", "content": "Rivers are fascinating. " + filler},
        {"role": "user", "content": "And more about rivers? " + filler},
        {"role": "assistant", "content": "Certainly. " + filler},
    ]


SYSTEM = {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."}


def test_long_chat_is_trimmed_to_num_ctx_keeping_the_system_prompt(http: httpx.Client, tokenizer: Any) -> None:
    history = _long_history()
    assert len(tokenizer.encode(history[0]["content"])) > 256
    opts = {**GREEDY, "num_ctx": 256, "num_predict": 16}
    long, short = parallel(
        lambda: chat(http, [SYSTEM, *history, *Q], opts),
        lambda: chat(http, [SYSTEM, *Q], opts),
    )
    assert long["message"]["content"].strip(), "a trimmed conversation still gets an answer"
    fed = long["prompt_eval_count"]
    assert 0 < fed <= 256 - 16
    # No old turn fits next to the system prompt and the question, so exactly those two are fed.
    assert fed == short["prompt_eval_count"]
    assert long["message"]["content"] == short["message"]["content"]
    rendered = tokenizer.apply_chat_template([SYSTEM, *Q], add_generation_prompt=True, tokenize=False)
    assert fed == len(tokenizer.encode(rendered, add_special_tokens=False))


def test_openai_prompt_tokens_report_the_trimmed_prompt(http: httpx.Client) -> None:
    alias = "gc-ctx256:latest"
    r = http.post("/api/create", json={"model": alias, "from": MODEL, "parameters": {"num_ctx": 256}, "stream": False})
    assert r.status_code == 200, r.text
    try:
        long = oa_chat(http, [SYSTEM, *_long_history(), *Q], model=alias, temperature=0, max_tokens=16)
        short = oa_chat(http, [SYSTEM, *Q], model=alias, temperature=0, max_tokens=16)
    finally:
        http.request("DELETE", "/api/delete", json={"model": alias})
    assert 0 < long["usage"]["prompt_tokens"] <= 256 - 16
    assert long["usage"]["prompt_tokens"] == short["usage"]["prompt_tokens"]
    assert long["choices"][0]["message"]["content"] == short["choices"][0]["message"]["content"]


def test_generate_trimming_keeps_num_keep_tokens(http: httpx.Client) -> None:
    prompt = " ".join(f"word{i}" for i in range(200))
    full, kept, none = parallel(
        lambda: generate(http, prompt, {**GREEDY, "num_predict": 1, "num_ctx": 2048}),
        lambda: generate(http, prompt, {**GREEDY, "num_predict": 4, "num_ctx": 128, "num_keep": 20}),
        lambda: generate(http, prompt, {**GREEDY, "num_predict": 4, "num_ctx": 128, "num_keep": 0}),
    )
    ids = full["context"][: full["prompt_eval_count"]]
    assert len(ids) > 128
    budget = 128 - 4
    for r, keep in ((kept, 20), (none, 0)):
        fed = r["context"][: r["prompt_eval_count"]]
        assert r["prompt_eval_count"] == budget and r["response"]
        assert fed[:keep] == ids[:keep] and fed[keep:] == ids[len(ids) - (budget - keep) :]


def test_truncate_false_refuses_an_over_long_prompt(http: httpx.Client) -> None:
    history = _long_history()
    long_prompt = " ".join(f"word{i}" for i in range(400))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/api/chat", {"messages": [*history, *Q]}),
        ("/api/generate", {"prompt": long_prompt}),
    ]
    for path, body in cases:
        opts = {"num_ctx": 256, "num_predict": 4}
        r = http.post(path, json={"model": MODEL, "stream": False, "truncate": False, "options": opts, **body})
        assert r.status_code == 400, r.text
        assert "context length" in r.json()["error"]
        ok = http.post(path, json={"model": MODEL, "stream": False, "truncate": True, "options": opts, **body})
        assert ok.status_code == 200 and ok.json()["prompt_eval_count"] <= 256


# --- logprobs ---------------------------------------------------------------------------------------------------


def _strip_eos(tokens: list[str]) -> list[str]:
    return tokens[:-1] if tokens and tokens[-1] == "<|im_end|>" else tokens


def test_logprobs_on_both_protocols(http: httpx.Client) -> None:
    ol_chat, ol_gen, oa_r, comp = parallel(
        lambda: chat(http, Q, {**GREEDY, "num_predict": 12}, logprobs=True, top_logprobs=3),
        lambda: generate(http, "The capital of France is", {**GREEDY, "num_predict": 6}, raw=True, logprobs=True),
        lambda: oa_chat(http, Q, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3),
        lambda: http.post(
            "/v1/completions",
            json={
                "model": MODEL,
                "prompt": "The capital of France is",
                "temperature": 0,
                "max_tokens": 6,
                "logprobs": 2,
            },
        ).json(),
    )
    # Ollama chat: greedy picks the top-1 token, whose logprob heads the list; the tokens spell the answer.
    lps = ol_chat["logprobs"]
    assert lps and all(len(t["top_logprobs"]) == 3 for t in lps)
    assert all(t["top_logprobs"][0]["token"] == t["token"] for t in lps)
    assert all(abs(t["top_logprobs"][0]["logprob"] - t["logprob"]) < 1e-5 and t["logprob"] <= 0 for t in lps)
    assert all(
        a["logprob"] >= b["logprob"]
        for t in lps
        for a, b in zip(t["top_logprobs"], t["top_logprobs"][1:], strict=False)
    )
    assert "".join(_strip_eos([t["token"] for t in lps])) == ol_chat["message"]["content"]
    gen_lps = ol_gen["logprobs"]
    assert len(gen_lps) == ol_gen["eval_count"] and "".join(t["token"] for t in gen_lps) == ol_gen["response"]
    assert not gen_lps[0].get("top_logprobs")  # top_logprobs unset: only the chosen token
    # OpenAI chat: same model distribution, same numbers.
    content = oa_r["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == [t["token"] for t in lps]
    assert all(abs(a["logprob"] - b["logprob"]) < 1e-3 for a, b in zip(content, lps, strict=True))
    assert all(
        t["top_logprobs"][0]["token"] == t["token"] and bytes(t["bytes"]).decode() == t["token"] for t in content
    )
    # Legacy completions: tokens, offsets, top dictionaries.
    lp = comp["choices"][0]["logprobs"]
    assert "".join(lp["tokens"]) == comp["choices"][0]["text"]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
    assert all(max(top, key=top.get) == tok for top, tok in zip(lp["top_logprobs"], lp["tokens"], strict=True))


# --- Ollama prompt shaping --------------------------------------------------------------------------------------


def test_system_template_and_raw_are_equivalent_spellings(http: httpx.Client) -> None:
    question = "Name a color."
    system = "You answer with exactly one word."
    chatml = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\nThe answer in French: "
    )
    opts = {**GREEDY, "num_predict": 10}
    with_system, raw, default, templated, raw_templated = parallel(
        lambda: generate(http, question, opts, system=system),
        lambda: generate(http, chatml, opts, raw=True),
        lambda: generate(http, question, opts),
        lambda: generate(http, question, opts, template=template),
        lambda: generate(
            http,
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\nThe answer in French: ",
            opts,
            raw=True,
        ),
    )
    # `system` replaces the template's default system prompt: the same tokens as the hand-written ChatML.
    assert with_system["prompt_eval_count"] == raw["prompt_eval_count"]
    assert with_system["response"] == raw["response"]
    assert default["prompt_eval_count"] != with_system["prompt_eval_count"]
    # A Jinja template override renders the prompt instead of the model's template.
    assert templated["prompt_eval_count"] == raw_templated["prompt_eval_count"]
    assert templated["response"] == raw_templated["response"]
    assert raw.get("context") is None and with_system["context"]


def test_raw_mode_conflicts_suffix_and_think(http: httpx.Client, tokenizer: Any) -> None:
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "hi", "raw": True, "template": "{{ x }}"})
    assert r.status_code == 400 and "raw" in r.json()["error"]
    fim = any("fim" in tok.lower() for tok in tokenizer.get_vocab())
    r = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "def add(a, b):\n    ",
            "suffix": "\n    return c",
            "stream": False,
            "options": {**GREEDY, "num_predict": 8},
        },
    )
    if fim:
        assert r.status_code == 200 and r.json()["response"]
    else:
        assert r.status_code == 400 and "does not support insert" in r.json()["error"]
    for path, body in (("/api/generate", {"prompt": "hi"}), ("/api/chat", {"messages": Q})):
        r = http.post(path, json={"model": MODEL, "think": True, "stream": False, **body})
        assert r.status_code == 400 and "does not support thinking" in r.json()["error"]
    r = http.post(
        "/api/chat",
        json={"model": MODEL, "messages": Q, "think": False, "stream": False, "options": {**GREEDY, "num_predict": 2}},
    )
    assert r.status_code == 200


def test_streamed_generate_respects_options(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Count: one, two,", "raw": True, "options": {**GREEDY, "num_predict": 6}}
    with http.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200
        lines = ndjson(r.iter_lines())
    whole = generate(http, "Count: one, two,", {**GREEDY, "num_predict": 6}, raw=True)
    assert lines[-1]["done"] and lines[-1]["eval_count"] == 6
    assert "".join(line["response"] for line in lines) == whole["response"]
    with http.stream(
        "POST",
        "/v1/completions",
        json={"model": MODEL, "prompt": "Count: one, two,", "temperature": 0, "max_tokens": 6, "stream": True},
    ) as r:
        chunks = sse(r.iter_lines())
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == whole["response"]

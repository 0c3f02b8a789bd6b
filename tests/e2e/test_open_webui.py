"""Open WebUI 0.12.4 against our server, through Open WebUI's own API and then in a real browser.

Both connections list the embedded model and chat (streaming and not), an alias is created, used, copied and
deleted through Open WebUI's Ollama proxy, a document is answered from with our embeddings (RAG), and in
chromium, with Open WebUI's default settings (its built-in tools on), the model answers "What is the capital of
France?" with Paris.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM, OPENAI_PREFIX, VENV, WebUI

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODEL = "smollm2:135m"
OAI_MODEL = f"{OPENAI_PREFIX}.{MODEL}"
FRANCE = "What is the capital of France?"
GREEDY = {"temperature": 0}


def access_count(ui: WebUI, method_path: str) -> int:
    """Requests our server finished on `method_path` ("POST /api/chat"), from its access log."""
    return len(re.findall(rf"\] {re.escape(method_path)} 200 ", ui.server.log()))


def chat(ui: WebUI, model: str, content: str, *, stream: bool, **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream, **extra}
    with ui.client() as c:
        if not stream:
            r = c.post("/api/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["message"]["content"])
        parts: list[str] = []
        with c.stream("POST", "/api/chat/completions", json=body) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                for choice in event.get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
        assert len([p for p in parts if p]) > 1, parts  # arrived in pieces
        return "".join(parts)


def test_both_connections_list_the_model(webui: WebUI) -> None:
    with webui.client() as c:
        models = {m["id"]: m for m in c.get("/api/models").json()["data"]}
    assert models[MODEL]["owned_by"] == "ollama"
    # Without the OpenAI connection's prefix_id, Open WebUI would merge the two same-named entries into one.
    assert models[OAI_MODEL]["owned_by"] == "openai"


CONNECTIONS = [(MODEL, "POST /api/chat"), (OAI_MODEL, "POST /v1/chat/completions")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("model", "upstream"), CONNECTIONS, ids=["ollama", "openai"])
def test_chat_on_each_connection(webui: WebUI, model: str, upstream: str, stream: bool) -> None:
    before = access_count(webui, upstream)
    answer = chat(webui, model, FRANCE, stream=stream, params=GREEDY)
    assert "Paris" in answer, answer
    deadline = time.monotonic() + 10
    while access_count(webui, upstream) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert access_count(webui, upstream) > before, f"{upstream} never reached the server"


def test_a_stopped_stream_reaches_the_server_as_a_disconnect(webui: WebUI) -> None:
    """What Open WebUI's stop button does to a streamed answer: the stream is closed, Open WebUI closes its
    request to us, and the server cancels the generation and logs a 499 that says why."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about a dragon who learns to bake."}],
        "stream": True,
    }
    with webui.client() as c, c.stream("POST", "/api/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data: ")
            if events >= 3:
                break
    deadline = time.monotonic() + 30
    while "(client disconnected mid-stream; 200 had been sent)" not in webui.server.log():
        assert time.monotonic() < deadline, webui.server.log()[-2000:]
        time.sleep(0.5)
    assert re.search(r"POST /api/chat 499 .*client disconnected mid-stream", webui.server.log())


def test_alias_created_used_copied_and_deleted_through_the_ollama_proxy(webui: WebUI) -> None:
    with webui.client() as c:
        r = c.post(
            "/ollama/api/create",
            json={
                "model": "e2e-paris",
                "from": MODEL,
                "system": "You answer geography questions in one short sentence.",
                "parameters": {"temperature": 0, "num_predict": 24},
                "stream": False,
            },
        )
        assert r.status_code == 200, r.text
        tags = [m["name"] for m in c.get("/ollama/api/tags").json()["models"]]
        assert "e2e-paris:latest" in tags
        used = c.post(
            "/ollama/api/chat",
            json={"model": "e2e-paris:latest", "messages": [{"role": "user", "content": FRANCE}], "stream": False},
        ).json()
        assert "Paris" in used["message"]["content"] and used["eval_count"] <= 24
        r = c.post("/ollama/api/copy", json={"source": "e2e-paris:latest", "destination": "e2e-paris-copy"})
        assert r.status_code == 200, r.text
        # Open WebUI caches the model list for a second (MODELS_CACHE_TTL): a new name shows up right after.
        deadline = time.monotonic() + 15
        while True:
            shown = c.post("/ollama/api/show", json={"model": "e2e-paris-copy:latest"}).json()
            if "detail" not in shown or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert re.search(r"num_predict\s+24", shown.get("parameters", "")), shown
        assert "one short sentence" in shown["system"]
        for name in ("e2e-paris-copy:latest", "e2e-paris:latest"):
            r = c.request("DELETE", "/ollama/api/delete", json={"model": name})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 15
        while True:
            tags = [m["name"] for m in c.get("/ollama/api/tags").json()["models"]]
            if not [t for t in tags if t.startswith("e2e-paris")] or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert not [t for t in tags if t.startswith("e2e-paris")]
    ours = [m["name"] for m in httpx.get(webui.server.url + "/api/tags", timeout=30).json()["models"]]
    assert not [t for t in ours if t.startswith("e2e-paris")]


DOCUMENT = (
    "Field notes of the Blue Harbor survey.\n"
    "The lighthouse keeper of Blue Harbor is named Ottilie Marchetti.\n"
    "The harbor was dredged in 1911 and again in 1968.\n"
)


def test_rag_over_an_uploaded_document_uses_our_embeddings(webui: WebUI) -> None:
    embeds = access_count(webui, "POST /api/embed")
    with webui.client() as c:
        r = c.post(
            "/api/v1/files/",
            params={"process_in_background": "false"},
            files={"file": ("blue-harbor.txt", DOCUMENT.encode(), "text/plain")},
        )
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
        assert c.get(f"/api/v1/files/{file_id}/process/status").json()["status"] == "completed"
        assert access_count(webui, "POST /api/embed") > embeds, "the document was not embedded by our server"
        # Open WebUI first asks the model for search queries (sampled at its default temperature); the 135M model
        # sometimes writes none, and then nothing is retrieved ("all queries were None or empty"). Searching with
        # the question itself (README "Open WebUI") keeps this test about retrieval; restored afterwards.
        tasks = c.get("/api/v1/tasks/config").json()
        r = c.post("/api/v1/tasks/config/update", json={**tasks, "ENABLE_RETRIEVAL_QUERY_GENERATION": False})
        assert r.status_code == 200, r.text
        try:
            embeds = access_count(webui, "POST /api/embed")
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "What is the name of the lighthouse keeper of Blue Harbor?"}],
                "stream": False,
                "params": GREEDY,
                "files": [{"type": "file", "id": file_id}],
            }
            r = c.post("/api/chat/completions", json=body)
        finally:
            c.post("/api/v1/tasks/config/update", json=tasks)
    assert r.status_code == 200, r.text
    out = r.json()
    assert access_count(webui, "POST /api/embed") > embeds, "the question was not embedded by our server"
    documents = [d for s in out.get("sources") or [] for d in s.get("document") or []]
    assert any("Ottilie Marchetti" in d for d in documents), out.get("sources")
    answer = out["choices"][0]["message"]["content"]
    assert "Marchetti" in answer, answer


def test_browser_chat_answers_paris(webui: WebUI) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed (tests/e2e/setup.sh installs Debian's chromium with apt-get)")
    # Temperature 0 through the model's parameters in Open WebUI (Workspace > Models); everything else default,
    # built-in tools included.
    with webui.client() as c:
        r = c.post(
            "/api/v1/models/create",
            json={"id": MODEL, "name": MODEL, "base_model_id": None, "meta": {}, "params": GREEDY},
        )
        assert r.status_code == 200, r.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "open-webui-paris.png"
    before = access_count(webui, "POST /api/chat")
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "tests/e2e/browser_chat.py", webui.url, MODEL, FRANCE, "Paris", str(shot)]
        + [CHROMIUM],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nbrowser answer after {result['seconds']}s: {result['answer']!r}; screenshot: {shot}")
    assert "Paris" in result["answer"], result
    assert result["partials"] > 1, result  # seen growing: streamed
    assert shot.stat().st_size > 10_000
    assert access_count(webui, "POST /api/chat") > before

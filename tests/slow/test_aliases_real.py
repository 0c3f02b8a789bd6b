"""Aliases on the real engine: the `hugllama create` seed workflow seen by a running server, alias settings applied
to generation on both protocols (system prompt, stop, 8-bit loading, request overrides), and the Ollama
create/copy/delete/show/tags surface."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.env import clean_environ
from tests.helpers.net import free_port
from tests.helpers.prompts import FRANCE
from tests.slow.conftest import HUGLLAMA, REPO, ServerProcess, make_home, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
SYSTEM = "You are a helpful and creative assistant."
USER = [{"role": "user", "content": "Say hi."}]
TIMEOUT = 300


@pytest.fixture(scope="module")
def server(shared_snapshots: Path) -> Iterator[ServerProcess]:
    home = make_home()
    with running_server(
        shared_snapshots,
        {"HUGLLAMA_PRELOAD": "", "HUGLLAMA_CONTEXT_LENGTH": "512", "HUGLLAMA_NUM_PARALLEL": "2"},
        home=home,
    ) as srv:
        yield srv


def cli(server: ServerProcess, *args: str, remote: bool) -> str:
    """Run `hugllama` on the server's HUGLLAMA_HOME: through the server (remote) or on the files (no server there)."""
    host = server.url.removeprefix("http://") if remote else f"127.0.0.1:{free_port()}"
    env = clean_environ()
    env.update(HUGLLAMA_HOME=str(server.home), HUGLLAMA_HOST=host, HF_HUB_OFFLINE="1")
    done = subprocess.run([str(HUGLLAMA), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def create_paris_stop(server: ServerProcess, *settings: str, remote: bool) -> None:
    """`hugllama create` of the greedy alias paris-stop on the embedded model, with these settings."""
    cli(server, "create", "--alias", "paris-stop", "--model", MODEL, "--temperature", "0", *settings, remote=remote)


def chat(url: str, model: str, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    r = httpx.post(
        url + "/api/chat",
        json={"model": model, "messages": messages, "stream": False, "options": {"num_predict": 4, **options}},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def names(url: str, path: str, key: str) -> set[str]:
    items = httpx.get(url + path, timeout=30).json()[key]
    return {str(m.get("name") or m.get("id")).removesuffix(":latest") for m in items}


def test_cli_alias_seen_by_running_server_and_applied(server: ServerProcess) -> None:
    url = server.url
    assert "mistral-instruct" not in names(url, "/api/tags", "models")
    # Written on the registry file while the server runs: the server must see it without a restart.
    cli(
        server,
        "create",
        "--alias",
        "mistral-instruct",
        "--model",
        MODEL,
        "--system",
        SYSTEM,
        "--temperature",
        "0.7",
        "--load-in-8bit",
        "--stop",
        "<|eot_id|>",
        remote=False,
    )
    assert "mistral-instruct" in names(url, "/api/tags", "models")
    assert "mistral-instruct" in names(url, "/v1/models", "data")

    shown = httpx.post(url + "/api/show", json={"model": "mistral-instruct"}, timeout=30).json()
    assert shown["system"] == SYSTEM
    modelfile = shown["modelfile"]
    assert f'SYSTEM """{SYSTEM}"""' in modelfile and f"FROM {MODEL}" in modelfile
    assert any(
        line.split()[:2] == ["PARAMETER", "temperature"] and float(line.split()[2]) == 0.7
        for line in modelfile.splitlines()
    ), modelfile
    assert "PARAMETER stop" in modelfile and '"<|eot_id|>"' in modelfile and "8bit" in modelfile
    assert shown["details"]["quantization_level"] == "Q8_0" and shown["details"]["parent_model"] == MODEL
    config = httpx.get(url + "/api/v1/models/config", params={"model": "mistral-instruct"}, timeout=30).json()
    assert config["options"]["temperature"] == 0.7 and config["options"]["stop"] == ["<|eot_id|>"]

    # The alias's system prompt is rendered: the same prompt as the plain model given that system message,
    # and not the plain model's default system prompt.
    aliased = chat(url, "mistral-instruct", USER, top_p=0.9)
    explicit = chat(url, MODEL, [{"role": "system", "content": SYSTEM}, *USER])
    plain = chat(url, MODEL, USER)
    assert explicit["prompt_eval_count"] != plain["prompt_eval_count"], "test needs distinguishable prompts"
    assert aliased["prompt_eval_count"] == explicit["prompt_eval_count"]
    assert aliased["done"] and aliased["eval_count"] >= 1

    # ... and it runs 8-bit, next to the plain fp32 copy.
    ps = {m["name"].removesuffix(":latest"): m for m in httpx.get(url + "/api/ps", timeout=30).json()["models"]}
    assert ps["mistral-instruct"]["details"]["quantization_level"] == "8bit"
    assert ps[MODEL]["details"]["quantization_level"] == "float32"
    status = {
        m["model"].removesuffix(":latest"): m
        for m in httpx.get(url + "/api/v1/models/status", timeout=30).json()["models"]
    }
    assert status["mistral-instruct"]["quantization"] == "8bit"
    assert status["mistral-instruct"]["memory_bytes"] < status[MODEL]["memory_bytes"]

    # The CLI through the server shows the same alias.
    out = cli(server, "show", "mistral-instruct", "--system", remote=True)
    assert SYSTEM in out


def test_alias_stop_applies_request_overrides_and_cli_changes_are_live(server: ServerProcess) -> None:
    url = server.url
    create_paris_stop(server, "--stop", "Paris", remote=True)
    stopped = chat(url, "paris-stop", FRANCE, num_predict=40)
    assert "Paris" not in stopped["message"]["content"] and stopped["done_reason"] == "stop"
    overridden = chat(url, "paris-stop", FRANCE, num_predict=40, stop=["#never#"])
    assert "Paris" in overridden["message"]["content"], "the request's stop must replace the alias's"

    # Re-created on the files while the server runs: the next request sees the new definition.
    create_paris_stop(server, "--system", "Answer in French.", remote=False)
    shown = httpx.post(url + "/api/show", json={"model": "paris-stop"}, timeout=30).json()
    assert shown["system"] == "Answer in French." and "Paris" not in shown["parameters"]


def test_alias_on_openai_protocol(server: ServerProcess) -> None:
    url = server.url
    httpx.post(
        url + "/api/create", json={"model": "creative", "from": MODEL, "system": SYSTEM, "stream": False}, timeout=30
    ).raise_for_status()
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=TIMEOUT)
    assert "creative" in {m.id.removesuffix(":latest") for m in client.models.list().data}
    aliased = client.chat.completions.create(model="creative", messages=USER, max_tokens=4, top_p=0.5)  # type: ignore[arg-type]
    explicit = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, *USER],  # type: ignore[list-item]
        max_tokens=4,
    )
    assert aliased.model.startswith("creative")
    assert aliased.usage is not None and explicit.usage is not None
    assert aliased.usage.prompt_tokens == explicit.usage.prompt_tokens
    assert aliased.choices[0].message.content


def test_create_copy_delete_show_tags(server: ServerProcess) -> None:
    url = server.url
    oc = ollama.Client(host=url, timeout=TIMEOUT)
    httpx.post(
        url + "/api/create",
        json={
            "model": "base-sys",
            "from": MODEL,
            "system": SYSTEM,
            "parameters": {"temperature": 0.3},
            "stream": False,
        },
        timeout=30,
    ).raise_for_status()
    r = httpx.post(
        url + "/api/create",
        json={"model": "q4-alias", "from": "base-sys", "quantize": "q4_0", "stream": False},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["status"] == "success"
    q4 = oc.show("q4-alias")
    assert q4.details is not None and q4.details.quantization_level == "Q4_0"
    assert "temperature" in (q4.parameters or "") and f'SYSTEM """{SYSTEM}"""' in (q4.modelfile or "")  # inherited
    available = {
        m["name"].removesuffix(":latest"): m
        for m in httpx.get(url + "/api/v1/models/available", timeout=60).json()["models"]
    }
    assert available["q4-alias"]["quantization"] == "4bit"
    assert available["q4-alias"]["estimated_memory"] < available[MODEL]["estimated_memory"]

    assert (
        httpx.post(url + "/api/copy", json={"source": "q4-alias", "destination": "q4-copy"}, timeout=30).status_code
        == 200
    )
    copied = oc.show("q4-copy")
    assert (
        SYSTEM in (copied.modelfile or "")
        and copied.details is not None
        and copied.details.quantization_level == "Q4_0"
    )
    listed = {m.model.removesuffix(":latest") for m in oc.list().models if m.model}
    assert {"q4-alias", "q4-copy", "base-sys", MODEL} <= listed

    r = httpx.request("DELETE", url + "/api/delete", json={"model": "q4-copy"}, timeout=30)
    assert r.status_code == 200
    assert httpx.post(url + "/api/show", json={"model": "q4-copy"}, timeout=30).status_code == 404
    assert "q4-copy" not in names(url, "/api/tags", "models") and "q4-alias" in names(url, "/api/tags", "models")
    r = httpx.request("DELETE", url + "/api/delete", json={"model": "q4-copy"}, timeout=30)
    assert r.status_code == 404
    r = httpx.request("DELETE", url + "/api/delete", json={"model": MODEL}, timeout=30)
    assert r.status_code == 400 and MODEL in r.json()["error"]

"""Hostile inputs against a real server while a victim stream decodes beside them (issue 12's "done when").

Every input gets its answer in bounded time and never a 5xx (except the documented 502/503/504/507) or a traceback
in the server's log; the victim's greedy text is the same as when it runs alone, and its time at most 1.5x alone.
Each input says what it expects; the closing table of the README's Limits section lists the same rules.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.helpers.env import clean_environ
from tests.slow.conftest import HUGLLAMA, MODEL, ServerProcess

pytestmark = pytest.mark.slow

LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
DOUBLING = "{% set ns = namespace(a='x') %}{% for i in range(60) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a }}"
AMPLIFIER = "{{ 'ab ' * 333333 }}"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
ALLOWED_5XX = {502, 503, 504, 507}
SLOW = 5.0  # seconds any hostile request may take (none of them generates more than a few tokens)
TEMPLATE_DEADLINE = 2.0  # HUGLLAMA_TEMPLATE_TIMEOUT_SECONDS' default


def worker_start_seconds() -> float:
    """How long a fresh template worker takes to be ready on this machine now (its imports). A template that hits
    the deadline costs its worker, and when the spare is not up yet the next render waits for a new one's start
    (which the deadline does not count), and the render itself starts late on a busy machine: a template case's
    bound is the deadline plus three starts and a second and a half."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.engine.template_worker", str(512 << 20)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert b"ready" in proc.stdout.readline()
        return time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: Any = None
    expect: set[int] = field(default_factory=lambda: {400})
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _gen(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    opts = kw.pop("options", {})
    body["options"].update(opts)
    body.update(kw)
    return body


def _chat(messages: Any = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": messages if messages is not None else [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 2},
    }
    opts = kw.pop("options", {})
    body["options"].update(opts)
    body.update(kw)
    return body


def _oai(messages: Any = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": messages if messages is not None else [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    }
    body.update(kw)
    return body


def _deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


def _deep_obj(n: int) -> bytes:
    return ('{"a":' * n + "1" + "}" * n).encode()


def cases() -> list[Case]:
    big = "x" * 1_000_001
    c: list[Case] = []
    g = "/api/generate"
    # --- issue 12, item 1: inputs that used to fail every generation in flight
    c += [
        Case("v1 completions empty prompt", "POST", "/v1/completions", {"model": MODEL, "prompt": ""}),
        Case("template renders nothing", "POST", g, _gen(template='{{ "" }}')),
        Case("context id past the vocabulary", "POST", g, _gen(context=[999999999])),
        Case("negative context id", "POST", g, _gen(context=[-5])),
        Case("context 1e23", "POST", g, _gen(context=[1e23])),
        Case("context string", "POST", g, _gen(context=["a"])),
        Case("context not a list", "POST", g, _gen(context={"a": 1})),
        Case("context 2^64", "POST", g, _gen(context=[2**64])),
    ]
    # --- item 2: unbounded work
    c += [
        Case("template amplifier", "POST", g, _gen(template=AMPLIFIER)),
        Case("template nested loops", "POST", g, _gen(template=LOOP)),
        Case("template doubling", "POST", g, _gen(template=DOUBLING)),
        Case("template raise_exception", "POST", g, _gen(template="{{ raise_exception('boom') }}")),
        Case("template dunder", "POST", g, _gen(template="{{ ''.__class__.__mro__[1].__subclasses__() }}")),
        Case("template syntax error", "POST", g, _gen(template="{% for %}")),
        Case("template too large", "POST", g, _gen(template="{{ messages }}" + " " * 70_000)),
        Case("template recursion", "POST", g, _gen(template="{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")),
        Case("template huge range", "POST", g, _gen(template="{% for i in range(10**9) %}x{% endfor %}")),
        Case("template format width", "POST", g, _gen(template="{{ '%999999999s' % 'a' }}")),
        Case("template center", "POST", g, _gen(template="{{ 'a'|center(999999999) }}")),
        Case(
            "1000 system messages into num_ctx 64",
            "POST",
            "/api/chat",
            _chat(
                [{"role": "system", "content": f"s{i}"} for i in range(1000)] + [{"role": "user", "content": "hi"}],
                options={"num_ctx": 64},
            ),
            {200},
        ),
        Case(
            "2000 turns into num_ctx 64",
            "POST",
            "/api/chat",
            _chat(
                [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(2001)],
                options={"num_ctx": 64},
            ),
            {200},
        ),
        Case("3000 messages", "POST", "/api/chat", _chat([{"role": "user", "content": "m"}] * 3000)),
        Case("150,000 stop strings", "POST", g, _gen(options={"stop": [f"s{i}" for i in range(150_000)]})),
        Case("17 stop strings", "POST", g, _gen(options={"stop": [f"s{i}" for i in range(17)]})),
        Case("long stop string", "POST", g, _gen(options={"stop": ["s" * 10_000]})),
        Case("3000 embedding inputs", "POST", "/api/embed", {"model": MODEL, "input": ["a"] * 3000}),
        Case("embedding input too long", "POST", "/api/embed", {"model": MODEL, "input": [big]}),
        Case("legacy embedding prompt too long", "POST", "/api/embeddings", {"model": MODEL, "prompt": big}),
        Case("v1 3000 embedding inputs", "POST", "/v1/embeddings", {"model": MODEL, "input": ["a"] * 3000}),
        Case("prompt too long", "POST", g, _gen(prompt=big)),
        Case("system too long", "POST", g, _gen(system=big)),
        Case("message too long", "POST", "/api/chat", _chat([{"role": "user", "content": big}])),
        Case("messages too long in all", "POST", "/api/chat", _chat([{"role": "user", "content": "x" * 900_000}] * 3)),
        Case("200 tools", "POST", "/api/chat", _chat(tools=[TOOL] * 200)),
        Case(
            "tools too large",
            "POST",
            "/api/chat",
            _chat(tools=[{"type": "function", "function": {"name": "f", "description": "d" * 300_000}}]),
        ),
    ]
    # --- item 4: errors
    c += [
        Case("deep JSON list (generate)", "POST", g, raw=_deep(100_000)),
        Case("deep JSON object (chat)", "POST", "/api/chat", raw=_deep_obj(100_000)),
        Case("deep JSON (v1 chat)", "POST", "/v1/chat/completions", raw=_deep_obj(100_000)),
        Case("deep JSON (create)", "POST", "/api/create", raw=_deep_obj(100_000)),
        Case("deep JSON (show)", "POST", "/api/show", raw=_deep(100_000)),
        Case(
            "deep JSON in options",
            "POST",
            g,
            raw=b'{"model":"' + MODEL.encode() + b'","options":' + _deep(50_000) + b"}",
        ),
        Case("seed 2^64", "POST", g, _gen(options={"seed": 2**64})),
        Case("seed -7", "POST", g, _gen(options={"seed": -7})),
        Case("seed string", "POST", g, _gen(options={"seed": "x"})),
        Case("v1 seed 2^64", "POST", "/v1/chat/completions", _oai(seed=2**64)),
        Case("v1 seed -7", "POST", "/v1/chat/completions", _oai(seed=-7)),
        Case("not JSON", "POST", g, raw=b"{nope"),
        Case("JSON array body", "POST", g, raw=b"[1,2]"),
        Case("JSON null body", "POST", "/api/chat", raw=b"null"),
        Case("v1 not JSON", "POST", "/v1/chat/completions", raw=b"\xff\xfe"),
        Case("empty body", "POST", "/api/chat", raw=b""),
    ]
    # --- generation options out of range, both protocols
    c += [
        Case("temperature -1", "POST", g, _gen(options={"temperature": -1})),
        Case("top_p 2", "POST", g, _gen(options={"top_p": 2})),
        Case("typical_p 0", "POST", g, _gen(options={"typical_p": 0})),
        Case("top_k -3", "POST", g, _gen(options={"top_k": -3})),
        Case("num_ctx 1", "POST", g, _gen(options={"num_ctx": 1})),
        Case("num_predict string", "POST", g, _gen(options={"num_predict": "many"})),
        Case("options a list", "POST", g, _gen() | {"options": [1, 2]}),
        Case("format xml", "POST", g, _gen(format="xml")),
        Case("format bad schema", "POST", g, _gen(format={"type": "nonsense"})),
        Case("prompt a number", "POST", g, _gen(prompt=42)),
        Case("raw with template", "POST", g, _gen(raw=True, template="{{ x }}")),
        Case("suffix on a model without FIM", "POST", g, _gen(suffix="end")),
        Case("keep_alive nonsense", "POST", g, _gen(keep_alive="forever-ish")),
        Case("images not base64", "POST", g, _gen(images=["%%%"])),
        Case("chat role unknown", "POST", "/api/chat", _chat([{"role": "wizard", "content": "hi"}])),
        Case("chat content an object", "POST", "/api/chat", _chat([{"role": "user", "content": {"a": 1}}])),
        Case("chat messages a string", "POST", "/api/chat", _chat("hello")),
        Case("chat tool bad", "POST", "/api/chat", _chat(tools=[{"type": "function"}])),
        Case("chat empty messages", "POST", "/api/chat", _chat([]), {200, 400}),
        Case("v1 empty messages", "POST", "/v1/chat/completions", _oai([])),
        Case("v1 3000 messages", "POST", "/v1/chat/completions", _oai([{"role": "user", "content": "m"}] * 3000)),
        Case("v1 message too long", "POST", "/v1/chat/completions", _oai([{"role": "user", "content": big}])),
        Case("v1 17 stops", "POST", "/v1/chat/completions", _oai(stop=[f"s{i}" for i in range(17)])),
        Case("v1 n 1000", "POST", "/v1/chat/completions", _oai(n=1000)),
        Case("v1 max_tokens -5", "POST", "/v1/chat/completions", _oai(max_tokens=-5)),
        Case("v1 top_logprobs 50", "POST", "/v1/chat/completions", _oai(logprobs=True, top_logprobs=50)),
        Case("v1 temperature 9", "POST", "/v1/chat/completions", _oai(temperature=9)),
        Case("v1 response_format bad", "POST", "/v1/chat/completions", _oai(response_format={"type": "xml"})),
        Case("v1 200 tools", "POST", "/v1/chat/completions", _oai(tools=[TOOL] * 200)),
        Case(
            "v1 tool_choice unknown",
            "POST",
            "/v1/chat/completions",
            _oai(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "zz"}}),
        ),
        Case("v1 chat_template", "POST", "/v1/chat/completions", _oai(chat_template=LOOP)),
        Case("v1 logit_bias junk", "POST", "/v1/chat/completions", _oai(logit_bias={"abc": 5})),
        Case("v1 logit_bias huge id", "POST", "/v1/chat/completions", _oai(logit_bias={"99999999": 5})),
        Case("v1 completions token prompt", "POST", "/v1/completions", {"model": MODEL, "prompt": [999999999]}),
        Case(
            "v1 completions 1000 choices", "POST", "/v1/completions", {"model": MODEL, "prompt": ["a"] * 100, "n": 10}
        ),
        Case("v1 completions long prompt", "POST", "/v1/completions", {"model": MODEL, "prompt": big}),
        Case("v1 completions stop 17", "POST", "/v1/completions", {"model": MODEL, "prompt": "a", "stop": ["x"] * 17}),
        Case("v1 embeddings empty", "POST", "/v1/embeddings", {"model": MODEL, "input": []}),
        Case("v1 embeddings nested", "POST", "/v1/embeddings", {"model": MODEL, "input": [[[1]]]}),
        Case("v1 embeddings dimensions 0", "POST", "/v1/embeddings", {"model": MODEL, "input": "a", "dimensions": 0}),
    ]
    # --- names: traversal and junk, every protocol and the management API
    for bad in ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "x" * 300, "bad name!", "%2e%2e/x", "a\x00b"):
        c += [
            Case(f"generate model {bad[:12]!r}", "POST", g, _gen(model=bad), {400, 404}),
            Case(f"v1 model {bad[:12]!r}", "POST", "/v1/chat/completions", _oai(model=bad), {400, 404}),
            Case(f"show {bad[:12]!r}", "POST", "/api/show", {"model": bad}, {400, 404}),
            Case(f"delete {bad[:12]!r}", "DELETE", "/api/delete", {"model": bad}, {400, 404}),
            Case(f"create {bad[:12]!r}", "POST", "/api/create", {"model": bad, "from": MODEL}, {400}),
            Case(f"copy to {bad[:12]!r}", "POST", "/api/copy", {"source": MODEL, "destination": bad}, {400}),
        ]
    # --- management: aliases that would break later requests, pulls
    c += [
        Case(
            "alias template renders nothing",
            "POST",
            "/api/create",
            {"model": "hostile-a", "from": MODEL, "template": '{{ "" }}'},
        ),
        Case("alias template loops", "POST", "/api/create", {"model": "hostile-b", "from": MODEL, "template": LOOP}),
        Case(
            "alias template amplifier",
            "POST",
            "/api/create",
            {"model": "hostile-c", "from": MODEL, "template": AMPLIFIER},
        ),
        Case(
            "alias template too large",
            "POST",
            "/api/create",
            {"model": "hostile-d", "from": MODEL, "template": "{{ messages }}" + " " * 70_000},
        ),
        Case(
            "alias system 20 MB",
            "POST",
            "/api/create",
            {"model": "hostile-e", "from": MODEL, "system": "x" * 20_000_000},
        ),
        Case(
            "alias bad option",
            "POST",
            "/api/create",
            {"model": "hostile-f", "from": MODEL, "parameters": {"temperature": -1}},
        ),
        Case(
            "alias unknown option",
            "POST",
            "/api/create",
            {"model": "hostile-g", "from": MODEL, "parameters": {"rm -rf": 1}},
            {200, 400},  # unknown option names are ignored, as Ollama ignores them in options
        ),
        Case(
            "alias 5000 messages",
            "POST",
            "/api/create",
            {"model": "hostile-h", "from": MODEL, "messages": [{"role": "user", "content": "m"}] * 5000},
        ),
        Case("alias of nothing", "POST", "/api/create", {"model": "hostile-i", "from": "no-such-model"}, {400, 404}),
        Case("pull traversal", "POST", "/api/pull", {"model": "../../etc", "stream": False}, {400}),
        Case("pull junk name", "POST", "/api/pull", {"model": "a b c", "stream": False}, {400}),
        Case("v1 models config bad", "PUT", "/api/v1/models/config", {"temperature": 9}, {400, 422}),
        Case(
            "v1 models load traversal", "POST", "/api/v1/models/load", {"model_name_or_path": "../../etc"}, {400, 404}
        ),
        Case("keep_alive 0 on pinned model", "POST", g, {"model": MODEL, "keep_alive": 0}, {200}),
        Case("body too large", "POST", g, raw=b'{"prompt":"' + b"x" * 40_000_000 + b'"}', expect={413}),
    ]
    # --- browsers: Host header (DNS rebinding) and origins
    c += [
        Case("Host evil", "GET", "/api/tags", headers={"Host": "evil.example"}, expect={403}),
        Case("Host rebinding", "POST", g, _gen(), headers={"Host": "attacker.localhost.evil.com"}, expect={403}),
        Case("Origin evil", "POST", g, _gen(), headers={"Origin": "http://localhost.evil.com"}, expect={200, 403}),
    ]
    return c


def _check_shape(case: Case, resp: httpx.Response) -> None:
    if resp.status_code < 400 or resp.status_code == 413 and not resp.content:
        return
    body = resp.json()
    if case.path.startswith("/v1/"):
        err = body["error"]
        assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err), body
        assert isinstance(err["message"], str) and err["message"]
    else:
        assert isinstance(body.get("error"), str) and body["error"], body
    text = json.dumps(body)
    assert "Traceback" not in text and "/work/" not in text and "/root/" not in text and "/tmp/" not in text, text


def _send(client: httpx.Client, case: Case) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    headers = {"content-type": "application/json", **case.headers}
    content = case.raw if case.raw is not None else (json.dumps(case.body).encode() if case.body is not None else None)
    resp = client.request(case.method, case.path, content=content, headers=headers)
    return resp, time.monotonic() - started


# 400 tokens: long enough that the bound below measures a stall, not the CPU a template input's worker takes from
# the victim's core, about 3 s over the whole burst (the 4-bit decode step made 120 tokens take 3 s on one thread).
VICTIM = {
    "model": MODEL,
    "prompt": "Tell me a long story about a dragon.",
    "options": {"temperature": 0, "num_predict": 400},
}


def _victim(url: str) -> tuple[str, float]:
    started = time.monotonic()
    text = ""
    with httpx.stream("POST", url + "/api/generate", json=VICTIM, timeout=300, headers={"Host": "localhost"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            item = json.loads(line)
            assert "error" not in item, item
            text += item.get("response", "")
    return text, time.monotonic() - started


@pytest.fixture(scope="module")
def hostile_server(server_factory_module: Callable[..., ServerProcess]) -> ServerProcess:
    # The victim decodes on one core and the inputs are handled beside it: with every core given to decoding, any
    # input's CPU time (a template worker's start, trimming a long chat) is taken from the victim, and the bound
    # below would measure this machine's core count rather than a stall.
    return server_factory_module({"HUGLLAMA_LOG_LEVEL": "INFO", "HUGLLAMA_TORCH_THREADS": "1"})


@pytest.fixture(scope="module")
def server_factory_module(shared_snapshots: Any) -> Iterator[Callable[..., ServerProcess]]:
    from tests.slow.conftest import start_server

    started: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None) -> ServerProcess:
        server = start_server(shared_snapshots, env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_hostile_inputs_beside_a_victim(hostile_server: ServerProcess) -> None:
    url = hostile_server.url
    all_cases = cases()
    assert len(all_cases) >= 100
    # Warm every path once (the template worker, the embedding pass), then the victim alone, twice.
    _victim(url)
    alone = [_victim(url) for _ in range(2)]
    assert alone[0][0] == alone[1][0]
    baseline = statistics.mean(t for _, t in alone)

    victims: list[tuple[str, float]] = []
    done = threading.Event()

    def run_victims() -> None:
        while not done.is_set():
            victims.append(_victim(url))

    thread = threading.Thread(target=run_victims)
    thread.start()
    results: list[tuple[Case, int, float]] = []
    failures: list[str] = []
    template_bound = max(SLOW, TEMPLATE_DEADLINE + 3 * worker_start_seconds() + 1.5)
    try:
        with httpx.Client(base_url=url, timeout=60, headers={"Host": "localhost"}) as client:
            for case in all_cases:
                resp, took = _send(client, case)
                results.append((case, resp.status_code, took))
                try:
                    assert resp.status_code < 500 or resp.status_code in ALLOWED_5XX, resp.text[:300]
                    assert resp.status_code in case.expect, f"{resp.status_code}: {resp.text[:300]}"
                    _check_shape(case, resp)
                    bound = template_bound if case.name.startswith("template") else SLOW
                    assert took < bound, f"took {took:.1f} s (bound {bound:.1f} s)"
                except (AssertionError, ValueError, KeyError, TypeError) as exc:
                    failures.append(f"{case.name}: {resp.status_code} {type(exc).__name__} {exc} {resp.text[:200]!r}")
    finally:
        done.set()
        thread.join(timeout=600)
    report = "\n".join(f"{s} {t:5.2f}s {c.method} {c.path} {c.name}" for c, s, t in results)
    print(f"\nvictim alone {baseline:.2f}s; beside the inputs {[round(t, 2) for _, t in victims]}\n{report}")
    assert not failures, "\n".join(failures)
    assert victims, "the victim never ran"
    for text, took in victims:
        assert text == alone[0][0]
        assert took <= 1.5 * baseline, f"victim took {took:.2f}s, alone {baseline:.2f}s"
    log = hostile_server.log()
    assert "Traceback" not in log, log[-5000:]


def test_the_cli_refuses_hostile_names_and_templates(hostile_server: ServerProcess) -> None:
    env = clean_environ()
    env["HUGLLAMA_HOST"] = hostile_server.url.removeprefix("http://")
    commands = [
        ["show", "../../etc/passwd"],
        ["rm", "../x"],
        ["cp", MODEL, "../evil"],
        ["create", "--alias", "cli-empty", "--model", MODEL, "--template", '{{ "" }}'],
        ["create", "--alias", "cli-loop", "--model", MODEL, "--template", LOOP],
        ["create", "--alias", "../cli", "--model", MODEL],
        ["pull", "../../etc"],
        ["run", "../../etc/passwd", "hi"],
    ]
    for args in commands:
        started = time.monotonic()
        proc = subprocess.run([str(HUGLLAMA), *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip(), args
        assert time.monotonic() - started < 15, args
    # Nothing of the above was saved.
    names = [
        m["name"] for m in httpx.get(hostile_server.url + "/api/tags", headers={"Host": "localhost"}).json()["models"]
    ]
    assert not any(n.startswith(("cli-", "hostile-")) and n != "hostile-g:latest" for n in names), names


def _worker_ticks(server_pid: int) -> dict[int, int]:
    """utime+stime of each of the server's template worker processes (children running app.engine.template_worker)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(stat[1]) == server_pid and b"template_worker" in cmd and stat[0] != "Z":
            out[int(entry)] = int(stat[11]) + int(stat[12])
    return out


def test_a_client_that_leaves_stops_its_template_render(hostile_server: ServerProcess) -> None:
    pid = hostile_server.proc.pid
    with httpx.Client(base_url=hostile_server.url, headers={"Host": "localhost"}, timeout=60) as client:
        assert client.post("/api/generate", json=_gen(template="{{ messages[0].content }}")).status_code == 200
        before = _worker_ticks(pid)
        assert before, "no template worker is running"
        # The render would spin for its whole 2 s deadline; the client leaves after 0.4 s.
        try:
            client.post("/api/generate", json=_gen(template=LOOP, stream=True), timeout=0.4)
        except httpx.TimeoutException:
            pass
    time.sleep(0.4)  # the render thread polls the cancel flag every 50 ms
    first = _worker_ticks(pid)
    time.sleep(0.6)
    second = _worker_ticks(pid)
    # The worker that rendered is gone; none of the workers that were there before is still busy.
    assert set(before) - set(second), (before, second)
    busy = {p: second[p] - first[p] for p in set(before) & set(first) & set(second) if second[p] - first[p] > 10}
    assert not busy, f"template workers still rendering after the client left: {busy}"

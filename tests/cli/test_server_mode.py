"""The CLI against a running server (the real app over FakeEngine): run, chat, list, ps, show, create, cp, rm."""

from __future__ import annotations

import json
from pathlib import Path

from app.registry.types import Alias
from tests.cli.conftest import CliRunner, FakeServer

ANSWER = "Hello!"  # FakeEngine's default script, joined


def test_run_streams_the_answer_and_sends_options(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli(
        "run", "smollm2:135m", "say", "hi",
        "--temperature", "0.2", "--top-k", "7", "--repetition-penalty", "1.3", "--ctx", "512",
        "--max-new-tokens", "9", "--stop", "###", "--stop", "END", "--seed", "42", "--keep-alive", "5m", "--json-mode",
    )  # fmt: skip
    assert (r.code, r.out, r.err) == (0, ANSWER + "\n", "")
    req = fake_server.engine.requests[-1]
    assert req.prompt == "say hi"
    s = req.sampling
    assert (s.temperature, s.top_k, s.repetition_penalty, s.num_ctx, s.max_tokens, s.seed) == (0.2, 7, 1.3, 512, 9, 42)
    assert s.stop == ("###", "END")
    assert req.format == "json"
    assert req.keep_alive == 300.0


def test_run_reads_the_prompt_from_stdin_and_applies_a_schema(
    cli: CliRunner, fake_server: FakeServer, tmp_path: Path
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    r = cli("run", "smollm2:135m", "--format-schema", str(tmp_path / "s.json"), "--verbose", stdin="from stdin\n")
    assert r.code == 0 and r.out == ANSWER + "\n"
    assert "eval count:" in r.err  # --verbose timings
    req = fake_server.engine.requests[-1]
    assert req.prompt == "from stdin\n"
    assert req.format == schema


def test_unknown_model_is_one_error_line(cli: CliRunner, fake_server: FakeServer) -> None:
    for argv in (["run", "nope", "hi"], ["chat", "nope"], ["show", "nope"], ["rm", "nope"]):
        r = cli(*argv, stdin="hello\n")
        assert r.code == 1, argv
        assert r.err == "error: model 'nope' not found\n", argv
        assert "Traceback" not in r.out + r.err


def test_chat_piped_stdin_keeps_the_conversation(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli("chat", "smollm2:135m", "--system", "be kind", stdin="first\n\nsecond\n")
    assert r.code == 0
    assert r.out == f"{ANSWER}\n{ANSWER}\n"  # no prompt decoration when piped; blank lines skipped
    reqs = fake_server.engine.requests
    assert len(reqs) == 2
    assert [(m.role, m.content) for m in reqs[-1].messages or ()] == [
        ("system", "be kind"),
        ("user", "first"),
        ("assistant", ANSWER),
        ("user", "second"),
    ]


def test_chat_set_parameter_system_and_show(cli: CliRunner, fake_server: FakeServer) -> None:
    script = "/set parameter temperature 0.1\n/set parameter stop a b\n/set parameter num_predict 2\n" \
             "/set system Be brief\n/show\nhi\n"  # fmt: skip
    r = cli("chat", "smollm2:135m", "--top-p", "0.5", stdin=script)
    assert r.code == 0, r.err
    req = fake_server.engine.requests[-1]
    assert req.sampling.temperature == 0.1
    assert req.sampling.top_p == 0.5
    assert req.sampling.stop == ("a", "b")
    assert req.sampling.max_tokens == 2
    assert req.messages is not None and (req.messages[0].role, req.messages[0].content) == ("system", "Be brief")
    assert "system: Be brief" in r.out and "temperature" in r.out  # /show


def test_chat_clear_and_bye(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli("chat", "smollm2:135m", "--system", "sys", stdin="one\n/clear\ntwo\n/bye\nthree\n")
    assert r.code == 0
    reqs = fake_server.engine.requests
    assert len(reqs) == 2  # nothing after /bye
    assert [(m.role, m.content) for m in reqs[-1].messages or ()] == [("system", "sys"), ("user", "two")]


def test_chat_bad_slash_command_fails_when_piped(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli("chat", "smollm2:135m", stdin="/set parameter bogus 1\nhi\n")
    assert r.code == 1
    assert r.err.startswith("error: unknown parameter 'bogus'")
    assert fake_server.engine.requests == []


def test_chat_history_round_trip(cli: CliRunner, fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "conv.json"
    old = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]
    path.write_text(json.dumps({"model": "smollm2:135m", "messages": old}))
    r = cli("chat", "smollm2:135m", "--history", str(path), stdin="next\n")
    assert r.code == 0
    sent = fake_server.engine.requests[-1].messages or ()
    assert [m.content for m in sent] == ["earlier", "reply", "next"]
    saved = json.loads(path.read_text())
    assert saved == {"model": "smollm2:135m", "messages": [*old, {"role": "user", "content": "next"},
                                                           {"role": "assistant", "content": ANSWER}]}  # fmt: skip
    assert not list(tmp_path.glob(".conv.json.*"))  # the temp file was renamed into place

    # a plain list stays a plain list, and a new file is created on the first turn
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(old))
    assert cli("chat", "smollm2:135m", "--history", str(plain), stdin="x\n").code == 0
    assert isinstance(json.loads(plain.read_text()), list) and len(json.loads(plain.read_text())) == 4
    fresh = tmp_path / "sub" / "new.json"
    assert cli("chat", "smollm2:135m", "--history", str(fresh), stdin="y\n").code == 0
    assert [m["role"] for m in json.loads(fresh.read_text())["messages"]] == ["user", "assistant"]


def test_chat_bad_history_file_is_an_error(cli: CliRunner, fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    r = cli("chat", "smollm2:135m", "--history", str(path), stdin="hi\n")
    assert r.code == 1 and r.err.startswith(f"error: history {path} is not valid JSON")


def test_chat_input_file_seeds_the_first_message(cli: CliRunner, fake_server: FakeServer, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("Summarise:\nline one\nline two\n")
    r = cli("chat", "smollm2:135m", "--input-file", str(doc), stdin="and then?\n")
    assert r.code == 0 and r.out == f"{ANSWER}\n{ANSWER}\n"
    first, second = fake_server.engine.requests
    assert [m.content for m in first.messages or ()] == ["Summarise:\nline one\nline two\n"]
    assert (second.messages or ())[-1].content == "and then?"


def test_chat_json_mode_sends_format(cli: CliRunner, fake_server: FakeServer) -> None:
    assert cli("chat", "smollm2:135m", "--json-mode", stdin="hi\n").code == 0
    assert fake_server.engine.requests[-1].format == "json"


def test_list_falls_back_to_tags(cli: CliRunner, fake_server: FakeServer) -> None:
    fake_server.catalog.aliases["mine:latest"] = Alias(name="mine:latest", model="smollm2:135m")
    r = cli("list")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "SIZE", "ESTIMATED", "MEMORY", "FITS"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["smollm2:135m", "mine:latest"]
    assert "98 MB" in lines[1]


def test_ps_shows_loaded_models(cli: CliRunner, fake_server: FakeServer) -> None:
    empty = cli("ps")
    assert empty.code == 0 and empty.out.split() == ["NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert cli("run", "smollm2:135m", "hi").code == 0
    r = cli("ps")
    row = r.out.splitlines()[1]
    assert row.startswith("smollm2:135m") and "100% CPU" in row and "4096" in row and "from now" in row


def test_show_create_cp_rm_through_the_server(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli(
        "create", "--alias", "brief", "--model", "smollm2:135m", "--system", "Be brief.",
        "--temperature", "0.3", "--max-new-tokens", "64", "--stop", "END", "--load-in-4bit", "--keep-alive", "10m",
    )  # fmt: skip
    assert r.code == 0, r.err
    alias = fake_server.catalog.get_alias("brief")
    assert alias is not None
    assert alias.system == "Be brief."
    assert alias.options == {"temperature": 0.3, "max_tokens": 64, "stop": ["END"]}
    assert alias.quantization == "4bit"
    assert alias.keep_alive == 600.0

    shown = cli("show", "brief")
    assert shown.code == 0 and "Be brief." in shown.out and "architecture" in shown.out
    assert cli("show", "brief", "--system").out == "Be brief.\n"
    assert cli("show", "brief", "--modelfile").out.startswith("FROM smollm2:135m")

    assert cli("cp", "brief", "brief2").code == 0
    assert fake_server.catalog.get_alias("brief2") is not None
    r = cli("rm", "brief", "brief2")
    assert r.code == 0 and r.out == "deleted 'brief'\ndeleted 'brief2'\n"
    assert fake_server.catalog.aliases == {}


def test_create_on_a_missing_model_fails(cli: CliRunner, fake_server: FakeServer) -> None:
    r = cli("create", "--alias", "x", "--model", "missing")
    assert r.code == 1 and r.err == "error: model 'missing' not found\n"


def test_server_address_flags_override_the_environment(cli: CliRunner, fake_server: FakeServer) -> None:
    port = fake_server.server.port
    assert cli("ps", "--host", "127.0.0.1", "--port", str(port)).out.startswith("NAME")
    assert cli("ps", "--host", f"http://127.0.0.1:{port}").out.startswith("NAME")
    assert cli("ps", "--port", "1").out.startswith("no server running at 127.0.0.1:1")

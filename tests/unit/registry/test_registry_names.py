from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.registry.names import parse_name, validate_alias_name


@pytest.mark.parametrize(
    ("text", "display", "is_hf"),
    [
        ("smollm2:135m", "smollm2:135m", False),
        ("smollm2", "smollm2:latest", False),
        ("SmolLM2:135M", "SmolLM2:135M", False),
        ("library/llama3", "llama3:latest", False),
        ("org/repo", "org/repo:latest", True),
        ("hf.co/org/repo:Q4_K_M", "org/repo:Q4_K_M", True),
        ("huggingface.co/org/repo", "org/repo:latest", True),
        ("org/repo@main", "org/repo:latest@main", True),
        ("org/repo@refs/pr/1", "org/repo:latest@refs/pr/1", True),
        ("org/repo@abc1234:q8_0", "org/repo:q8_0@abc1234", True),
        ("  user/m:tag  ", "user/m:tag", True),
    ],
)
def test_parse_display(text: str, display: str, is_hf: bool) -> None:
    n = parse_name(text)
    assert n.display == display
    assert n.is_hf is is_hf
    assert n.key == display.lower()


def test_parts() -> None:
    n = parse_name("hf.co/Org/Repo:q4@v1.0")
    assert (n.namespace, n.name, n.tag, n.revision, n.repo) == ("Org", "Repo", "q4", "v1.0", "Org/Repo")
    assert parse_name("SmolLM2:135M").key == parse_name("smollm2:135m").key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "a" * 201,
        "../etc/passwd",
        "/abs/path",
        "a\\b",
        "a//b",
        "a/b/c",
        "-dash",
        ".hidden",
        "name:",
        "name:-x",
        "org/repo@",
        "sp ace",
        "semi;colon",
        "org/repo@../x",
    ],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_name(bad)
    assert info.value.param == "model"
    assert "invalid model name" in info.value.message


def test_alias_name() -> None:
    assert validate_alias_name("My-Bot") == "My-Bot:latest"
    assert validate_alias_name("team/bot:v2") == "team/bot:v2"
    with pytest.raises(InvalidRequest):
        validate_alias_name("org/repo@main")
    with pytest.raises(InvalidRequest):
        validate_alias_name("hf.co/org/repo")

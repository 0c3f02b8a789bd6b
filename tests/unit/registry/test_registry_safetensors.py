"""The one safetensors header reader, and the registry facts that must survive files that are not safetensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from app.hardware import estimate
from app.registry.facts import hf_dir_facts
from app.registry.safetensors_info import read_safetensors_header


def _write(path: Path, header: object, *, length: int | None = None) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + b"\0" * 16)


def test_header_round_trip(tmp_path: Path) -> None:
    header = {"w": {"dtype": "BF16", "shape": [3, 5], "data_offsets": [0, 30]}, "__metadata__": {"format": "pt"}}
    _write(tmp_path / "model.safetensors", header)
    assert read_safetensors_header(tmp_path / "model.safetensors") == header


def test_hardware_estimate_uses_the_same_reader() -> None:
    assert estimate.read_safetensors_header is read_safetensors_header


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 200 * 1024 * 1024) + b"{}", "implausible"),
        (struct.pack("<Q", 2) + b"[]", "not an object"),
    ],
)
def test_bad_headers_raise_value_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_safetensors_header(path)


def test_facts_count_parameters_and_skip_a_corrupt_shard(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _write(tmp_path / "a.safetensors", {"w": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]}})
    (tmp_path / "b.safetensors").write_bytes(b"not safetensors at all")
    facts = hf_dir_facts(tmp_path)
    assert facts.parameter_count == 32
    assert facts.quantization_level == "BF16"

from __future__ import annotations

from pathlib import Path

import pytest

from app.registry.gguf_info import FILE_TYPE_NAMES, GGUFError, read_gguf_info
from tests.unit.registry.conftest import FIM, make_gguf


def test_file_type_names_match_gguf_package() -> None:
    import gguf

    for ft in gguf.LlamaFileType:
        if ft.value in FILE_TYPE_NAMES:
            assert FILE_TYPE_NAMES[ft.value] == ft.name.removeprefix("MOSTLY_").removeprefix("ALL_"), ft


def test_reads_header_like_gguf_reader(tmp_path: Path) -> None:
    import gguf

    path = make_gguf(tmp_path / "m.gguf", tokens=[f"tok{i}" for i in range(20)] + FIM, template="TPL")
    info = read_gguf_info(path)
    ref = gguf.GGUFReader(path)
    assert info.tensor_count == len(ref.tensors)
    assert info.parameter_count == sum(int(t.n_elements) for t in ref.tensors)
    assert info.architecture == "llama"
    assert info.context_length == 512
    assert info.file_type_name == "F32"
    assert info.chat_template == "TPL"
    assert info.metadata["tokenizer.ggml.tokens"] == []  # long arrays summarised
    assert info.array_lengths["tokenizer.ggml.tokens"] == 23
    assert info.has_fim
    for key in ("llama.embedding_length", "llama.block_count", "general.name"):
        assert info.metadata[key] == ref.fields[key].contents()


def test_no_fim_and_short_arrays_kept(tmp_path: Path) -> None:
    info = read_gguf_info(make_gguf(tmp_path / "m.gguf", tokens=["a", "b", "c"]))
    assert not info.has_fim
    assert info.metadata["tokenizer.ggml.tokens"] == ["a", "b", "c"]


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"nope" * 10)
    with pytest.raises(GGUFError):
        read_gguf_info(p)
    good = make_gguf(tmp_path / "t.gguf")
    p.write_bytes(good.read_bytes()[:40])
    with pytest.raises(GGUFError):
        read_gguf_info(p)

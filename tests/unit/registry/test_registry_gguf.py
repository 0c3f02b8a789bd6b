from __future__ import annotations

from pathlib import Path

import pytest

from app.registry.gguf_info import FILE_TYPE_NAMES, GGML_BLOCK_SIZES, GGUFError, read_gguf_info
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


def test_ggml_block_sizes_match_gguf_package() -> None:
    import gguf

    for t in gguf.GGMLQuantizationType:
        if t.value in GGML_BLOCK_SIZES:
            assert GGML_BLOCK_SIZES[t.value] == gguf.GGML_QUANT_SIZES[t], t


def test_tensor_infos_like_gguf_reader(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("f32", np.zeros((3, 8), dtype=np.float32))
    w.add_tensor("f16", np.zeros((2, 4, 8), dtype=np.float16))
    q8 = gguf.GGMLQuantizationType.Q8_0
    w.add_tensor("q8", np.zeros((4, 2 * 34), dtype=np.uint8), raw_dtype=q8)  # 4 rows of 64 weights
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_gguf_info(path)
    ref = gguf.GGUFReader(path)
    got = [(t.name, t.shape, t.ggml_type, t.n_elements, t.n_bytes) for t in info.tensors]
    want = [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.n_elements), int(t.n_bytes))
        for t in ref.tensors
    ]
    assert got == want
    assert got[2][1:] == ((64, 4), q8.value, 256, 4 * 2 * 34)  # shapes in GGUF order, innermost first


def test_mid_length_arrays_are_summarised_but_kept_for_value(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "a.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("llama.attention.head_count_kv", [1, 2, 1, 2, 1, 2, 1, 2])
    w.add_array("llama.short", [7, 8])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_gguf_info(path)
    assert info.metadata["llama.attention.head_count_kv"] == []  # as Ollama shows it
    assert info.value("llama.attention.head_count_kv") == [1, 2, 1, 2, 1, 2, 1, 2]
    assert info.metadata["llama.short"] == info.value("llama.short") == [7, 8]
    assert info.value("general.architecture") == "llama"
    assert info.value("missing") is None


def test_truncated_and_empty_files(tmp_path: Path) -> None:
    good = make_gguf(tmp_path / "t.gguf").read_bytes()
    p = tmp_path / "x.gguf"
    for data, message in [(b"", "is not a GGUF file"), (good[:6], "cannot read GGUF header"), (good[:8], "truncated")]:
        p.write_bytes(data)
        with pytest.raises(GGUFError, match=message):
            read_gguf_info(p)

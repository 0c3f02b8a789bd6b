"""Fixtures: tiny models on disk (HF folder, GGUF file, HF cache layout) built without torch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.fake_hub import git_blob_oid, tiny_model_files, write_files

FIM = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]


def make_gguf(path: Path, *, tokens: list[str] | None = None, template: str | None = "{{ messages }}") -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("mini")
    w.add_context_length(512)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_token_list(tokens or [f"t{i}" for i in range(10)])
    if template:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens or range(10)), 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_cached_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40, ref: str | None = "main"
) -> Path:
    """Lay files out the way huggingface_hub's cache does (blobs + snapshot symlinks + refs)."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snap = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if name.endswith((".safetensors", ".gguf")) else git_blob_oid(data)
        blob = storage / "blobs" / etag
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if ref:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    return cache


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_files(root / "Tiny-HF", tiny_model_files())
    make_gguf(root / "Mini.gguf", tokens=[f"t{i}" for i in range(7)] + FIM)
    return root


@pytest.fixture
def cached_repo() -> Callable[..., Path]:
    return make_cached_repo

"""Embedding models on a tiny random sentence-transformers BERT: what the checkpoint files say (pooling,
normalisation, max length, lower-casing) and vectors equal to sentence-transformers' own for every pooling mode,
with inputs cut where sentence-transformers cuts them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from app.engine import encoders
from app.errors import InvalidRequest, ModelLoadFailed
from app.registry.encoder_info import EncoderSpec, encoder_spec, pooling_modes
from app.registry.types import ModelSource
from tests.helpers.fake_hub import write_files
from tests.helpers.tiny_bert import tiny_bert_files

SENTENCES = [
    "the cat sat on the mat",
    "Paris is the capital of France",
    "i like to eat bananas for breakfast and the dog likes to run fast in the big green house by the river",
    "a",
]


def _folder(tmp_path: Path, **kwargs: Any) -> Path:
    return write_files(tmp_path / "st", tiny_bert_files(**kwargs))


def _serve(folder: Path, texts: list[str], *, truncate: bool = True) -> torch.Tensor:
    spec = encoder_spec(folder)
    assert spec is not None
    weights = encoders.load_encoder(
        ModelSource("hf_dir", folder), spec, device="cpu", dtype="float32", quantization=None, trust_remote_code=False
    )
    limit = encoders.max_length(spec, weights.model, weights.tokenizer)
    rows = encoders.tokenize(weights.tokenizer, spec, tuple(texts), limit, truncate)
    return encoders.encode(weights.model, rows, "cpu", encoders.pad_id(weights.tokenizer), spec, weights.head)


def _reference(folder: Path, texts: list[str]) -> torch.Tensor:
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is in the dev extra")
    model = st.SentenceTransformer(str(folder), device="cpu")
    return torch.tensor(model.encode(texts, convert_to_numpy=True))


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [
        ("mean", True),
        ("mean", False),
        ("cls", True),
        ("lasttoken", True),
        ("max", False),
        ("mean_sqrt_len_tokens", False),
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, True),
    ],
)
def test_vectors_equal_sentence_transformers(tmp_path: Path, pooling: Any, normalize: bool) -> None:
    folder = _folder(tmp_path, pooling=pooling, normalize=normalize, max_seq_length=12)
    ours = _serve(folder, SENTENCES)  # the third sentence is longer than 12 tokens: cut like the reference
    ref = _reference(folder, SENTENCES)
    assert ours.shape == ref.shape
    cosines = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert cosines.min().item() >= 0.9999, cosines
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)  # same scale too: normalised only when asked
    norms = ours.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5) == normalize


def test_lower_case_and_max_seq_length_follow_the_config(tmp_path: Path) -> None:
    folder = _folder(tmp_path, do_lower_case=True, max_seq_length=6)
    spec = encoder_spec(folder)
    assert spec is not None and spec.do_lower_case and spec.max_seq_length == 6
    texts = ["The CAT sat on the mat by the river", "the cat"]
    torch.testing.assert_close(_serve(folder, texts), _reference(folder, texts), rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        _serve(folder, texts, truncate=False)


def test_default_prompt_goes_before_each_input(tmp_path: Path) -> None:
    folder = _folder(tmp_path, default_prompt="query: ")
    spec = encoder_spec(folder)
    assert spec is not None and spec.prompt == "query: "
    ours, ref = _serve(folder, SENTENCES), _reference(folder, SENTENCES)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    (folder / "config_sentence_transformers.json").unlink()  # without the prompt the vectors differ
    assert not torch.allclose(_serve(folder, SENTENCES[:1]), ours[:1], atol=1e-3)


def test_spec_reads_modules_pooling_and_config(tmp_path: Path) -> None:
    folder = _folder(tmp_path, pooling={"pooling_mode_cls_token": True}, normalize=False, max_seq_length=None)
    assert encoder_spec(folder) == EncoderSpec(
        pooling=("cls",), normalize=False, max_seq_length=None, do_lower_case=False, dimension=32
    )
    assert pooling_modes({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}) == ("max", "mean")
    assert pooling_modes({"pooling_mode": "lasttoken"}) == ("lasttoken",)
    assert pooling_modes({}) == ("mean",)
    # Without modules.json (a plain causal LM folder, or a bare encoder) nothing says how to pool.
    (folder / "modules.json").unlink()
    assert encoder_spec(folder) is None


TANH = "torch.nn.modules.activation.Tanh"
IDENTITY = "torch.nn.modules.linear.Identity"


@pytest.mark.parametrize(
    "dense",
    [
        ((16, None, "safetensors"),),  # sentence-transformers' default activation (Tanh), LaBSE-style
        ((24, IDENTITY, "bin"),),  # no bias, weights in pytorch_model.bin
        ((48, TANH, "safetensors"), (8, IDENTITY, "bin")),
    ],
)
def test_dense_modules_match_sentence_transformers(tmp_path: Path, dense: tuple[Any, ...]) -> None:
    folder = _folder(tmp_path, dense=dense)
    spec = encoder_spec(folder)
    assert spec is not None and spec.unsupported is None and spec.dimension == dense[-1][0]
    ours, ref = _serve(folder, SENTENCES), _reference(folder, SENTENCES)
    assert ours.shape == (len(SENTENCES), dense[-1][0])
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_t5_encoder_matches_sentence_transformers(tmp_path: Path) -> None:
    # An encoder-decoder config (sentence-t5, gtr-t5): only the encoder runs, as in sentence-transformers.
    folder = _folder(tmp_path, t5=True, dense=((16, IDENTITY, "safetensors"),))
    torch.testing.assert_close(_serve(folder, SENTENCES), _reference(folder, SENTENCES), rtol=1e-4, atol=1e-5)


def test_a_checkpoint_saved_by_the_current_sentence_transformers(tmp_path: Path) -> None:
    # Newer releases save other module paths (sentence_transformers.base.modules...), the max length in the
    # tokenizer config and `embedding_dimension`; the vectors must not change.
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is in the dev extra")
    folder = _folder(tmp_path, pooling="cls", max_seq_length=12, dense=((16, None, "safetensors"),))
    saved = tmp_path / "resaved"
    st.SentenceTransformer(str(folder), device="cpu").save(str(saved))
    spec = encoder_spec(saved)
    assert spec is not None and spec.unsupported is None
    assert (spec.pooling, spec.normalize, len(spec.dense), spec.dimension) == (("cls",), True, 1, 16)
    torch.testing.assert_close(_serve(saved, SENTENCES), _reference(folder, SENTENCES), rtol=1e-4, atol=1e-5)


def test_rerankers_and_sparse_models_are_not_served_as_embeddings(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "CrossEncoder"}))
    spec = encoder_spec(folder)
    assert (
        spec is not None
        and spec.unsupported == "a sentence-transformers CrossEncoder is not an embedding model served here"
    )


def test_unknown_modules_activations_and_pooling_refuse_to_load(tmp_path: Path) -> None:
    norm = {"name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
    folder = _folder(tmp_path, extra_modules=(norm,))
    spec = encoder_spec(folder)
    assert spec is not None and spec.unsupported and "LayerNorm" in spec.unsupported
    with pytest.raises(ModelLoadFailed, match="LayerNorm"):
        encoders.load_encoder(
            ModelSource("hf_dir", folder),
            spec,
            device="cpu",
            dtype="float32",
            quantization=None,
            trust_remote_code=False,
        )
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    # Rewriting modules.json (a new mtime) makes the cached spec be read again: Transformer and Pooling only.
    (folder / "modules.json").write_text(json.dumps(json.loads((folder / "modules.json").read_text())[:2]))
    spec = encoder_spec(folder)
    assert spec is not None and spec.unsupported == "pooling mode 'weightedmean' is not supported"
    # A Dense activation outside torch's plain ones is refused (its class path is never imported).
    other = _folder(tmp_path / "other", dense=((8, "my_package.Swish", "bin"),))
    spec = encoder_spec(other)
    assert spec is not None and spec.unsupported == "the Dense activation my_package.Swish is not supported"


def test_pooling_ignores_padding() -> None:
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert encoders.pool(states, mask, ("mean",)).tolist() == [[2.0, 3.0], [7.0, 8.0]]
    assert encoders.pool(states, mask, ("cls",)).tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert encoders.pool(states, mask, ("lasttoken",)).tolist() == [[3.0, 4.0], [9.0, 10.0]]
    assert encoders.pool(states, mask, ("max",)).tolist() == [[3.0, 4.0], [9.0, 10.0]]
    sqrt = encoders.pool(states, mask, ("mean_sqrt_len",))
    assert sqrt[0].tolist() == pytest.approx([4.0 / math.sqrt(2), 6.0 / math.sqrt(2)])
    assert encoders.pool(states, mask, ("cls", "mean")).shape == (2, 4)

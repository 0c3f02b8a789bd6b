"""A randomly initialised two-layer BERT laid out as a sentence-transformers checkpoint (modules.json,
1_Pooling/config.json, sentence_bert_config.json, a WordPiece tokenizer): the real loading, tokenizing and
pooling paths of embedding models in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = (
    "the a is of and to in capital france paris city french i like eat bananas for breakfast cat dog sat on mat "
    "query passage sun hot cold water river mountain big small red blue green house car tree book read write run "
    "fast slow"
).split()


def tiny_bert_files(
    *,
    pooling: str | dict[str, bool] = "mean",
    normalize: bool = True,
    max_seq_length: int | None = 16,
    do_lower_case: bool = False,
    extra_modules: tuple[dict[str, object], ...] = (),
    default_prompt: str | None = None,
    dense: tuple[tuple[int, str | None, str], ...] = (),
    t5: bool = False,
    seed: int = 0,
) -> dict[str, bytes]:
    """Every file of the checkpoint, by relative path (for write_files or a FakeRepo).

    `dense` adds Dense modules after pooling: (out_features, activation class path or None for the default,
    "safetensors" or "bin" for how their weights are saved). `t5` makes the encoder a T5 encoder (sentence-t5
    style: an encoder-decoder config whose encoder alone is used).
    """
    import tempfile

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, T5Config, T5EncoderModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,?!"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
        torch.manual_seed(seed)
        model: Any
        if t5:
            t5_config = T5Config(
                vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
            )
            model = T5EncoderModel(t5_config).eval()
        else:
            bert_config = BertConfig(
                vocab_size=len(vocab),
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
            )
            model = BertModel(bert_config, add_pooling_layer=False).eval()
        out = folder / "out"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    modules: list[dict[str, object]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    width = 32
    for out_features, activation, fmt in dense:
        folder_name = f"{len(modules)}_Dense"
        modules.append(
            {
                "idx": len(modules),
                "name": str(len(modules)),
                "path": folder_name,
                "type": "sentence_transformers.models.Dense",
            }
        )
        linear = torch.nn.Linear(width, out_features, bias=fmt == "safetensors")
        state = {f"linear.{k}": v.detach().clone() for k, v in linear.state_dict().items()}
        dense_config: dict[str, object] = {
            "in_features": width,
            "out_features": out_features,
            "bias": "linear.bias" in state,
        }
        if activation is not None:
            dense_config["activation_function"] = activation
        files[f"{folder_name}/config.json"] = json.dumps(dense_config).encode()
        if fmt == "safetensors":
            from safetensors.torch import save

            files[f"{folder_name}/model.safetensors"] = save(state)
        else:
            import io

            buffer = io.BytesIO()
            torch.save(state, buffer)
            files[f"{folder_name}/pytorch_model.bin"] = buffer.getvalue()
        width = out_features
    if normalize:
        modules.append(
            {
                "idx": len(modules),
                "name": str(len(modules)),
                "path": f"{len(modules)}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    modules += [{"idx": len(modules) + i, **m} for i, m in enumerate(extra_modules)]
    pool_config: dict[str, object] = {"word_embedding_dimension": 32}
    if isinstance(pooling, str):
        pool_config["pooling_mode"] = pooling
    else:
        pool_config.update(pooling)
    st_config: dict[str, object] = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        st_config["max_seq_length"] = max_seq_length
    files["modules.json"] = json.dumps(modules).encode()
    files["1_Pooling/config.json"] = json.dumps(pool_config).encode()
    files["sentence_bert_config.json"] = json.dumps(st_config).encode()
    if default_prompt is not None:
        prompts = {"query": default_prompt, "document": ""}
        config = {"prompts": prompts, "default_prompt_name": "query"}
        files["config_sentence_transformers.json"] = json.dumps(config).encode()
    return files

"""The loader switches the embedded model to the CPU decode kernels: the fp32 ones keep its answers, and the lean
4-bit decode step (its default) still answers the capital question."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from app.engine import loader
from app.engine.cpu_linear import PackedLinear, SkinnyLinear, packed_sgemm_works
from app.engine.kv_cache import BatchKVCache
from app.registry.sources import embedded_source


def _load(snapshot: Path, skinny: bool, lean: bool = False) -> loader.LoadedWeights:
    source = embedded_source()
    assert source is not None
    return loader.load(
        source,
        snapshots=snapshot.parent,
        device="cpu",
        dtype="float32",
        quantization=None,
        trust_remote_code=False,
        kernels=loader.CpuKernels(skinny_matmul=skinny, lean_decode=lean),
    )


def _greedy(weights: loader.LoadedWeights, prompts: list[str], steps: int) -> tuple[list[list[int]], torch.Tensor]:
    tok = weights.tokenizer
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    rows = [tok(text, add_special_tokens=False).input_ids for text in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id or 0] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    cache = BatchKVCache()
    out_tokens: list[list[int]] = [[] for _ in rows]
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = weights.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)
        first_logits = out.logits[:, -1].clone()
        for _ in range(steps):
            nxt = out.logits[:, -1].argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                out_tokens[i].append(t)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            out = weights.model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1
            )
    return out_tokens, first_logits


def test_loader_switches_plain_linears_and_answers_stay_the_same(embedded_snapshot: Path) -> None:
    fast, plain = _load(embedded_snapshot, True), _load(embedded_snapshot, False)
    fast_linears = [m for m in fast.model.modules() if isinstance(m, nn.Linear)]
    kernel = PackedLinear if packed_sgemm_works() else SkinnyLinear  # fp32: MKL's packed sgemm where torch has it
    assert fast_linears and all(type(m) is kernel for m in fast_linears)  # the tied lm_head keeps its weight too
    assert not any(isinstance(m, PackedLinear | SkinnyLinear) for m in plain.model.modules())
    assert fast.model.get_output_embeddings().weight is fast.model.get_input_embeddings().weight

    prompts = ["What is the capital of France?", "Name three colours.", "Say hello in Spanish."]
    got, got_logits = _greedy(fast, prompts, 12)
    want, want_logits = _greedy(plain, prompts, 12)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-3)
    assert got == want
    answer = fast.tokenizer.decode(got[0])
    assert "Paris" in answer


def test_lean_decode_step_is_4bit_and_answers_paris(embedded_snapshot: Path) -> None:
    from app.engine.decode_step import DecodeStep
    from app.engine.prefill import prefill_pass

    weights = _load(embedded_snapshot, True, lean=True)
    step = weights.decode
    assert isinstance(step, DecodeStep)
    assert step.int4_layers == 4 * 30 and step.owns_head and not step.prefill_numerics
    assert type(weights.model.lm_head) is nn.Linear  # its int8 head serves the logits: no packed copy
    tok = weights.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    mask = torch.ones_like(ids)
    cache = BatchKVCache()
    with torch.inference_mode():
        logits = prefill_pass(weights.model, step, "cpu", ids, mask, torch.arange(ids.shape[1])[None], cache)
        tokens: list[int] = []
        for _ in range(16):
            token = int(logits[0].argmax())
            if token == tok.eos_token_id:
                break
            tokens.append(token)
            mask = torch.cat([mask, torch.ones((1, 1), dtype=torch.long)], dim=1)
            out = step(input_ids=torch.tensor([[token]]), attention_mask=mask,
                       position_ids=torch.tensor([[mask.shape[1] - 1]]), cache=cache)  # fmt: skip
            logits = out.logits[:, -1]
    assert tok.decode(tokens).strip() == "The capital of France is Paris."

"""A randomly initialised two-layer Llama with a character-level tokenizer and a ChatML chat template, saved as a
Hugging Face folder: the real catalog, loader, engine, scheduler and renderer paths in milliseconds, without the
embedded model."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

# JSON's punctuation too, so constrained output (formats, forced tool calls) can be written.
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!:'\n{}[]\"_-")
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_chat_files(seed: int = 0) -> dict[str, bytes]:
    """Every file of the folder, by relative path (for tests.helpers.fake_hub.write_files)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.helpers.tiny_llama import tiny_llama

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    tokenizer.chat_template = CHATML
    model = tiny_llama(
        seed,
        vocab_size=96,
        bos_token_id=None,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
        max_position_embeddings=512,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def engine_settled(engine: Any) -> bool:
    """Nothing is held: no queue place, no in-flight request, no active or pending scheduler row on any resident
    (for tests that close streams early and check everything was given back)."""
    return engine.admission.waiting == 0 and all(
        r.in_flight == 0 and not r.scheduler._active and not r.scheduler._pending
        for r in engine.manager.residents.values()
    )


async def until_settled(engine: Any, seconds: float = 5.0) -> None:
    """Wait (up to `seconds`) for `engine_settled`: cancellation reaches the inference thread asynchronously."""
    for _ in range(int(seconds / 0.02)):
        if engine_settled(engine):
            return
        await asyncio.sleep(0.02)

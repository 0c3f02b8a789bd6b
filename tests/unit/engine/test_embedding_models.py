"""Embedding models through the real engine, catalog and pull on a tiny sentence-transformers BERT: listed and
shown with the `embedding` capability only, chat and generate refused before anything loads, no KV cache in the
memory estimate, rows of concurrent requests gathered into shared passes within the per-request input limit, and
a repository pulled from the (fake) Hub served the same as the local folder."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.engine.embeddings import EmbedBatcher, take_pass
from app.engine.scheduler import BatchScheduler
from app.engine.transformers_engine import TransformersEngine
from app.engine.types import EmbeddingRequest, GenerationRequest, Message
from app.errors import GenerationFailed, InvalidRequest
from app.hardware import estimate as estimating
from app.metrics import Metrics
from app.registry.catalog import ModelCatalog
from app.registry.pull import pull, select_files
from app.settings import Settings
from tests.helpers.fake_hub import FakeRepo, serving, write_files
from tests.helpers.tiny_bert import tiny_bert_files

NAME = "tiny-st:latest"


@pytest.fixture(scope="module")
def st_files() -> dict[str, bytes]:
    # A Dense module (weights in its own folder, as pytorch_model.bin) so the pull fetches module weights too.
    return tiny_bert_files(pooling="mean", normalize=True, max_seq_length=16, dense=((32, None, "bin"),))


@pytest.fixture
def models_dir(tmp_path: Path, st_files: dict[str, bytes]) -> Path:
    write_files(tmp_path / "models" / "tiny-st", st_files)
    return tmp_path / "models"


def _catalog(settings: Settings, models_dir: Path, cache: Path) -> ModelCatalog:
    return ModelCatalog(settings.model_copy(update={"models_dir": models_dir}), cache_dir=cache)


def test_listed_and_shown_as_embedding_only(settings: Settings, models_dir: Path, cache: Path) -> None:
    catalog = _catalog(settings, models_dir, cache)
    entry = next(e for e in catalog.list_models() if e.name == NAME)
    assert entry.capabilities == ("embedding",)
    shown = catalog.show(NAME)
    assert shown["capabilities"] == ["embedding"]
    assert shown["model_info"]["bert.embedding_length"] == 32
    assert shown["model_info"]["bert.context_length"] == 16  # max_seq_length, not the 64 positions
    assert shown["model_info"]["bert.pooling_type"] == 1  # llama.cpp's MEAN, as Ollama reports it
    # No KV cache: the estimate is the weights plus the fixed overhead, whatever num_ctx and parallel are.
    source = catalog.resolve(NAME).source
    est = estimating.estimate(
        source, dtype="float32", quantization=None, num_ctx=4096, parallel=16, overhead_bytes=1000
    )
    assert est.kv_cache_bytes == 0 and est.total_bytes == est.weights_bytes + 1000


def test_tags_carry_capabilities(settings: Settings, models_dir: Path, cache: Path) -> None:
    from app.api.ollama.responses import to_list_response

    entries = [e for e in _catalog(settings, models_dir, cache).list_models() if e.name == NAME]
    body = json.loads(to_list_response(entries).model_dump_json(exclude_none=True))
    assert [m["capabilities"] for m in body["models"]] == [["embedding"]]
    plain = dataclasses.replace(entries[0], name="plain:latest", capabilities=())
    assert "capabilities" not in json.loads(to_list_response([plain]).model_dump_json(exclude_none=True))["models"][0]


def _engine(settings: Settings, models_dir: Path, cache: Path, **update: object) -> TransformersEngine:
    s = settings.model_copy(update={"models_dir": models_dir, "device": "cpu", "dtype": "float32", **update})
    return TransformersEngine.build(s, ModelCatalog(s, cache_dir=cache), Metrics())


def test_engine_embeds_refuses_generation_and_batches(settings: Settings, models_dir: Path, cache: Path) -> None:
    engine = _engine(settings, models_dir, cache)

    async def scenario() -> None:
        await engine.startup()
        try:
            for messages, kind in (((Message(role="user", content="hi"),), "chat"), (None, "generate")):
                req = GenerationRequest(model="tiny-st", messages=messages, prompt=None if messages else "hi")
                with pytest.raises(InvalidRequest, match=f'"tiny-st" does not support {kind}'):
                    await engine.start(req)
            assert engine.running() == []  # refused before loading anything
            texts = ("the cat sat on the mat", "paris is the capital of france", "a")
            alone = [(await engine.embed(EmbeddingRequest(model="tiny-st", inputs=(t,)))).vectors[0] for t in texts]
            res = next(iter(engine.manager.residents.values()))
            assert res.encoder is not None and res.context_length == 16
            passes = res.batcher.passes
            # Three clients at once (their rows wait behind a busy inference thread): one shared pass, and each
            # gets what it got alone.
            release = _block(res.scheduler)
            together = asyncio.gather(*(engine.embed(EmbeddingRequest(model="tiny-st", inputs=(t,))) for t in texts))
            while res.batcher.waiting_rows < 3:
                await asyncio.sleep(0.01)
            release.set()
            outs = await together
            assert res.batcher.passes == passes + 1
            for out, want in zip(outs, alone, strict=True):
                assert len(out.vectors[0]) == 32
                torch.testing.assert_close(torch.tensor(out.vectors[0]), torch.tensor(want), rtol=1e-4, atol=1e-5)
            legacy = await engine.embed(EmbeddingRequest(model="tiny-st", inputs=(texts[0],), normalize=False))
            # The checkpoint's Normalize module applies on the legacy endpoint too, as in sentence-transformers.
            assert abs(float(torch.tensor(legacy.vectors[0]).norm()) - 1) < 1e-5
            cut = await engine.embed(EmbeddingRequest(model="tiny-st", inputs=(texts[0],), dimensions=8))
            assert len(cut.vectors[0]) == 8
            with pytest.raises(InvalidRequest, match="at most 32"):
                await engine.embed(EmbeddingRequest(model="tiny-st", inputs=("x",), dimensions=33))
            assert engine.running()[0].context_length == 16
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def test_pulled_repository_is_served_like_the_folder(
    settings: Settings, st_files: dict[str, bytes], models_dir: Path, cache: Path
) -> None:
    with serving(FakeRepo("org/tiny-st", {**st_files, "README.md": b"# tiny\n"})) as hub:
        events = list(pull("org/tiny-st", settings=settings, endpoint=hub.url, cache_dir=cache))
    pulled = {e["status"].removeprefix("pulling ") for e in events if e["status"].startswith("pulling ")}
    assert {"1_Pooling/config.json", "2_Dense/pytorch_model.bin", "modules.json", "model.safetensors"} <= pulled
    engine = _engine(settings, models_dir, cache)
    assert engine.catalog.show("org/tiny-st")["capabilities"] == ["embedding"]

    async def both() -> tuple[tuple[float, ...], tuple[float, ...]]:
        try:
            a = await engine.embed(EmbeddingRequest(model="org/tiny-st", inputs=("the red car",)))
            b = await engine.embed(EmbeddingRequest(model="tiny-st", inputs=("the red car",)))
            return a.vectors[0], b.vectors[0]
        finally:
            await engine.aclose()

    a, b = asyncio.run(both())
    assert a == pytest.approx(b, abs=1e-6)


def test_pull_selects_module_folders_not_other_formats() -> None:
    names = [
        "config.json",
        "model.safetensors",
        "modules.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/pytorch_model.bin",
        "3_Dense/config.json",
        "3_Dense/model.safetensors",
        "3_Dense/pytorch_model.bin",
        "onnx/model.onnx",
        "openvino/openvino_model.xml",
        "README.md",
    ]
    assert select_files(names) == [
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/pytorch_model.bin",  # that folder has no safetensors
        "3_Dense/config.json",
        "3_Dense/model.safetensors",
        "model.safetensors",
        "modules.json",
        "tokenizer.json",
        "config.json",  # last: it marks a complete snapshot
    ]
    # Without modules.json numbered folders are nobody's modules.
    assert "1_Pooling/config.json" not in select_files([n for n in names if n != "modules.json"])


# --- the batcher --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lengths", "max_rows", "budget", "expected"),
    [
        ([], 8, 100, []),
        ([5, 5, 5], 8, 100, [0, 1, 2]),
        ([5, 5, 5], 2, 100, [0, 1]),  # the per-request input limit bounds a shared pass too
        ([50, 60, 10], 8, 100, [0, 2]),  # 60 would make 2 x 60 padded tokens; 10 fits (2 x 50)
        ([50, 60, 10], 8, 120, [0, 1]),
        ([200, 5], 8, 100, [0]),  # the oldest always goes, even alone over the budget
        ([40, 80, 10, 10], 8, 100, [0, 2]),  # 10 fits beside 40 (2 x 40 = 80), the next 10 would make 3 x 40
    ],
)
def test_take_pass(lengths: list[int], max_rows: int, budget: int, expected: list[int]) -> None:
    assert take_pass(lengths, max_rows=max_rows, budget=budget) == expected


class _Tok:
    pad_token_id = 0


@pytest.fixture
def scheduler() -> Iterator[BatchScheduler]:
    s = BatchScheduler(None, _Tok(), name="t", max_batch=1, eos_ids=set(), device="cpu")
    yield s
    s.stop()


def _block(s: BatchScheduler) -> threading.Event:
    """Hold the inference thread in a job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(10)

    s.call(blocker)
    assert started.wait(5)
    return release


def test_batcher_gathers_requests_within_the_input_limit(scheduler: BatchScheduler) -> None:
    seen: list[list[list[int]]] = []

    def run(rows: list[list[int]]) -> torch.Tensor:
        seen.append(rows)
        return torch.tensor([[float(sum(r))] for r in rows])

    batcher = EmbedBatcher(scheduler, run, max_rows=3)
    release = _block(scheduler)
    first = batcher.submit([[1, 2], [3]])
    second = batcher.submit([[4], [5, 6]])
    gone = batcher.submit([[7]])
    assert gone[0].cancel()  # its client went away before the pass: never computed
    release.set()
    assert [f.result(5).item() for f in first + second] == [3.0, 3.0, 4.0, 11.0]
    # Two requests in one pass, at most 3 rows a pass, each request's rows longest first.
    assert seen == [[[1, 2], [3], [5, 6]], [[4]]]
    assert batcher.passes == 2


def test_batcher_fails_waiting_rows_when_the_model_unloads(scheduler: BatchScheduler) -> None:
    batcher = EmbedBatcher(scheduler, lambda rows: torch.zeros(len(rows), 1), max_rows=8)
    release = _block(scheduler)
    waiting = batcher.submit([[1]])
    threading.Timer(0.2, release.set).start()
    scheduler.stop()
    with pytest.raises(GenerationFailed):
        waiting[0].result(5)


def test_a_failing_pass_fails_only_its_rows(scheduler: BatchScheduler) -> None:
    calls = 0

    def run(rows: list[list[int]]) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return torch.ones(len(rows), 1)

    batcher = EmbedBatcher(scheduler, run, max_rows=1)
    futures = batcher.submit([[1], [2]])
    with pytest.raises(RuntimeError, match="boom"):
        futures[0].result(5)
    assert futures[1].result(5).item() == 1.0


def test_readiness_probe_of_a_preloaded_embedding_model(settings: Settings, models_dir: Path, cache: Path) -> None:
    engine = _engine(settings, models_dir, cache, preload="tiny-st")

    async def probe() -> bool:
        try:
            return await engine.probe()  # HUGLLAMA_READINESS=generate: one vector, since it cannot generate
        finally:
            await engine.aclose()

    assert asyncio.run(probe()) is True


def test_a_cancelled_request_drops_its_waiting_inputs(settings: Settings, models_dir: Path, cache: Path) -> None:
    engine = _engine(settings, models_dir, cache)

    async def scenario() -> None:
        try:
            await engine.embed(EmbeddingRequest(model="tiny-st", inputs=("warm",)))
            res = next(iter(engine.manager.residents.values()))
            passes = res.batcher.passes
            release = _block(res.scheduler)
            task = asyncio.create_task(engine.embed(EmbeddingRequest(model="tiny-st", inputs=("a", "the cat"))))
            while res.batcher.waiting_rows < 2:
                await asyncio.sleep(0.01)
            task.cancel()  # what a client disconnect does to its request
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            await engine.embed(EmbeddingRequest(model="tiny-st", inputs=("after",)))
            assert res.batcher.passes == passes + 1  # only the later request's pass ran
            assert res.in_flight == 0
        finally:
            await engine.aclose()

    asyncio.run(scenario())

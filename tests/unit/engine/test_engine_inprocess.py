"""The engine in-process on a tiny chat model (real catalog, loader, manager, scheduler and renderer; no server, no
embedded model): concurrent requests share decode steps and answer as they do alone, a closed stream leaves the
batch, residency evicts and unloads, and bad input is refused before admission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.engine.transformers_engine import TransformersEngine
from app.engine.types import Chunk, FinishReason, GenerationRequest, Message, SamplingParams
from app.errors import InvalidRequest
from app.metrics import Metrics
from app.registry import hfcache
from app.registry.catalog import ModelCatalog
from app.settings import Settings
from tests.helpers.fake_hub import write_files
from tests.helpers.prompts import WEATHER
from tests.helpers.tiny_chat import engine_settled, tiny_chat_files, until_settled

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return tiny_chat_files(seed=0)


@pytest.fixture
def models_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    write_files(tmp_path / "models" / "tiny-chat", files)
    write_files(tmp_path / "models" / "tiny-chat-b", tiny_chat_files(seed=1))
    return tmp_path / "models"


def _engine(settings: Settings, models_dir: Path, tmp_path: Path, **update: Any) -> TransformersEngine:
    hfcache.invalidate()
    s = settings.model_copy(
        update={"models_dir": models_dir, "device": "cpu", "dtype": "float32", "torch_threads": 1, **update}
    )
    return TransformersEngine.build(s, ModelCatalog(s, cache_dir=tmp_path / "hub"), Metrics())


def _run(engine: TransformersEngine, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await engine.startup()
        try:
            await scenario()
        finally:
            await engine.aclose()

    asyncio.run(main())


async def _text(chunks: AsyncIterator[Chunk]) -> str:
    return "".join([c.text async for c in chunks])


def _chat(text: str, model: str = "tiny-chat", sampling: SamplingParams = GREEDY) -> GenerationRequest:
    return GenerationRequest(model=model, messages=(Message(role="user", content=text),), sampling=sampling)


PROMPTS = ("Hello there", "What is the capital of France?", "abc", "Tell me a story")


def test_concurrent_requests_share_decode_steps_and_answer_as_alone(
    settings: Settings, models_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(settings, models_dir, tmp_path)

    async def scenario() -> None:
        alone = [await _text(await engine.start(_chat(p))) for p in PROMPTS]
        res = next(iter(engine.manager.residents.values()))
        steps = res.scheduler.steps
        streams = [await engine.start(_chat(p)) for p in PROMPTS]  # all admitted before any is read
        together = await asyncio.gather(*(_text(s) for s in streams))
        assert list(together) == alone
        assert all(len(t) > 0 for t in alone)
        # 4 x 12 tokens one after another would take 44 decode steps; batched they take about 11.
        assert res.scheduler.steps - steps < 24

    _run(engine, scenario)


def test_a_closed_stream_leaves_the_batch_and_the_others_go_on(
    settings: Settings, models_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(settings, models_dir, tmp_path)
    long = SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True)

    async def scenario() -> None:
        want = await _text(await engine.start(_chat(PROMPTS[1])))
        leaver = await engine.start(_chat(PROMPTS[0], sampling=long))
        stayer = await engine.start(_chat(PROMPTS[1]))
        got = 0
        async for chunk in leaver:
            got += bool(chunk.text)
            if got == 3:
                break
        res = next(iter(engine.manager.residents.values()))
        (left,) = [s for s in res.scheduler._active if s.max_new_tokens == 400]
        await leaver.aclose()  # type: ignore[attr-defined]
        assert await _text(stayer) == want
        for _ in range(100):
            if not res.scheduler._active and res.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert not res.scheduler._active and res.in_flight == 0
        assert engine.metrics.requests_running._value.get() == 0  # type: ignore[attr-defined]
        # It stopped when it was closed, not at its 400-token budget (the tiny model gets there within the wait).
        assert left.finish == FinishReason.CANCELLED and len(left.generated) < 50

    _run(engine, scenario)


def test_a_request_closed_while_queued_is_never_run(settings: Settings, models_dir: Path, tmp_path: Path) -> None:
    engine = _engine(settings, models_dir, tmp_path, num_parallel=1)
    # Long enough that the one slot stays taken while the queued request is closed, however loaded the machine.
    long = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)

    async def scenario() -> None:
        want = await _text(await engine.start(_chat(PROMPTS[1], sampling=long)))
        res = next(iter(engine.manager.residents.values()))
        running = await engine.start(_chat(PROMPTS[1], sampling=long))
        queued = await engine.start(_chat(PROMPTS[0]))
        waiting = res.scheduler._pending[-1]  # one slot: it waits behind `running`
        reader = asyncio.create_task(_text(queued))  # waits for its first chunk, as a client does
        await asyncio.sleep(0.05)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert await _text(running) == want
        for _ in range(100):
            if not res.scheduler._pending and not res.scheduler._active and res.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert not res.scheduler._pending and not res.scheduler._active and res.in_flight == 0
        assert waiting.admitted_at == 0 and waiting.generated == []
        assert engine.admission.waiting == 0

    _run(engine, scenario)


def test_loading_a_second_model_evicts_the_idle_one_and_keep_alive_0_unloads(
    settings: Settings, models_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(settings, models_dir, tmp_path, max_loaded_models=1)

    async def scenario() -> None:
        await _text(await engine.start(_chat("hi")))
        assert [m.name for m in engine.running()] == ["tiny-chat:latest"]
        await _text(await engine.start(_chat("hi", model="tiny-chat-b")))
        assert [m.name for m in engine.running()] == ["tiny-chat-b:latest"]
        await engine.load("tiny-chat-b", keep_alive=0)
        assert engine.running() == []

    _run(engine, scenario)


def test_a_forced_tool_call_is_buffered_and_answered_as_one_call(
    settings: Settings, models_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(settings, models_dir, tmp_path)
    sampling = SamplingParams(temperature=0.0, max_tokens=80)
    req = GenerationRequest(
        model="tiny-chat",
        messages=(Message(role="user", content="Weather in Paris?"),),
        tools=(WEATHER,),
        tool_choice="required",
        sampling=sampling,
    )

    async def scenario() -> None:
        # A plain request decodes beside it: buffering is per row.
        plain = await engine.start(_chat(PROMPTS[1]))
        chunks = [c async for c in await engine.start(req)]
        assert await _text(plain)
        # Nothing streamed before the call: the row's text was held back and parsed into it.
        assert [c.text for c in chunks] == ["", ""]
        call, final = chunks
        assert [c.name for c in call.tool_calls] == ["get_weather"]
        assert isinstance(call.tool_calls[0].arguments["city"], str) and call.tool_calls[0].id
        assert final.finish_reason == FinishReason.TOOL_CALLS and not final.tool_calls

    _run(engine, scenario)


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (GenerationRequest(model="tiny-chat", prompt="hi", context=(10_000,)), "context"),
        (GenerationRequest(model="tiny-chat", prompt="", raw=True), "prompt"),
        (GenerationRequest(model="tiny-chat", prompt="hi", template="{{ '' }}"), "template"),
        (GenerationRequest(model="tiny-chat", prompt="hi", sampling=SamplingParams(seed=-3)), "seed"),
        (GenerationRequest(model="tiny-chat", prompt="hi", sampling=SamplingParams(stop=("x",) * 17)), "stop"),
        (GenerationRequest(model="tiny-chat", prompt="hi", sampling=SamplingParams(top_p=3.0)), "top_p"),
    ],
)
def test_bad_input_is_refused_before_admission(
    settings: Settings, models_dir: Path, tmp_path: Path, req: GenerationRequest, param: str
) -> None:
    engine = _engine(settings, models_dir, tmp_path)

    async def scenario() -> None:
        with pytest.raises(InvalidRequest) as err:
            await engine.start(req)
        assert err.value.param == param
        assert engine.admission.waiting == 0
        assert engine_settled(engine)
        # and the engine still serves
        assert await _text(await engine.start(_chat("hi")))

    _run(engine, scenario)


@pytest.mark.parametrize("read", [0, 1], ids=["never_read", "after_one_chunk"])
def test_a_stream_closed_unread_or_after_one_chunk_gives_everything_back(
    settings: Settings, models_dir: Path, tmp_path: Path, read: int
) -> None:
    # An async generator closed before its first __anext__ skips its `finally`: a stream closed unread (n>1 whose
    # later choice failed to start, a client gone before the body began) kept its queue place, its row and its
    # model for good. Closed unread or after one chunk, it gives all of them back, and its neighbour is unaffected.
    engine = _engine(settings, models_dir, tmp_path)
    long = SamplingParams(temperature=0.0, max_tokens=300, ignore_eos=True)

    async def scenario() -> None:
        want = await _text(await engine.start(_chat(PROMPTS[1])))
        res = next(iter(engine.manager.residents.values()))
        submitted: list[Any] = []
        submit = res.scheduler.submit
        res.scheduler.submit = lambda seq: (submitted.append(seq), submit(seq))[1]  # type: ignore[method-assign]
        victim = await engine.start(_chat(PROMPTS[1]))
        closed = await engine.start(_chat(PROMPTS[0], sampling=long))
        row = submitted[-1]
        for _ in range(read):
            await anext(closed)
        await closed.aclose()  # type: ignore[attr-defined]
        assert row.cancelled
        assert await _text(victim) == want
        await until_settled(engine)
        assert engine_settled(engine) and res.in_flight == 0 and engine.admission.waiting == 0
        assert engine.metrics.requests_running._value.get() == 0  # type: ignore[attr-defined]
        assert engine.metrics.requests_waiting._value.get() == 0  # type: ignore[attr-defined]
        assert len(row.generated) < 100  # it stopped when closed, not at its 300-token budget
        await closed.aclose()  # type: ignore[attr-defined]  # a second close gives nothing back twice
        assert res.in_flight == 0 and engine.admission.waiting == 0
        # and the model is free to go: nothing holds it
        assert await engine.unload("tiny-chat") and engine.running() == []

    _run(engine, scenario)

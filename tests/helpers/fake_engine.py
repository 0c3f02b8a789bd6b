"""FakeEngine: a scripted test double of the Engine interface (app/engine/base.py) for HTTP-layer and CLI tests
without a model. It lives here, not in app/: nothing the service ships builds it."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence

from app.engine import limits
from app.engine.types import (
    Chunk,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationRequest,
    RunningModel,
    Timings,
    ToolCall,
    Usage,
)
from app.errors import GenerationFailed, InvalidRequest, ModelNotFound
from app.registry.types import ResolvedModel
from app.settings import Settings

FAKE_DIMS = 8


class FakeEngine:
    """Yields `script` pieces (or echoes the last user message), honouring max_tokens and stop strings.

    Records every request in `requests` and whether the last stream was `cancelled`, so tests can assert that
    a disconnect reached the engine.
    """

    def __init__(
        self,
        script: Sequence[str] = ("Hel", "lo", "!"),
        *,
        models: Sequence[str] = ("smollm2:135m",),
        delay: float = 0.0,
        fail_after: int | None = None,
        tool_calls: Sequence[ToolCall] = (),
        settings: Settings | None = None,
    ) -> None:
        self.script = list(script)
        self.settings = settings or Settings()  # the request limits (HUGLLAMA_MAX_*) apply as in the real engine
        self.models = {m.lower() for m in models}
        self.delay = delay
        self.fail_after = fail_after
        self.tool_calls = tuple(tool_calls)
        self.requests: list[GenerationRequest] = []
        self.embed_requests: list[EmbeddingRequest] = []
        self.cancelled = False
        self.loaded: dict[str, float] = {}
        self.pinned: set[str] = set()  # names a keep_alive 0 request does not unload (preloaded, in the real engine)
        self.closed = False

    def _check(self, name: str) -> None:
        base = name.lower()
        if base not in self.models and f"{base}:latest" not in self.models:
            raise ModelNotFound(name)

    async def startup(self) -> None:
        pass

    async def probe(self) -> bool:
        return True

    async def start(self, req: GenerationRequest, resolved: ResolvedModel | None = None) -> AsyncIterator[Chunk]:
        self._check(req.model)
        limits.check_generation(req, self.settings)
        self.requests.append(req)
        self.cancelled = False
        self.loaded[req.model] = time.time()
        return self._run(req)

    async def _run(self, req: GenerationRequest) -> AsyncIterator[Chunk]:
        limit = req.sampling.max_tokens
        stops = req.sampling.stop or ()
        emitted = 0
        text_so_far = ""
        finish = FinishReason.STOP
        try:
            for i, piece in enumerate(self.script):
                if self.fail_after is not None and i >= self.fail_after:
                    raise GenerationFailed("scripted failure")
                if limit is not None and limit >= 0 and emitted >= limit:
                    finish = FinishReason.LENGTH
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                candidate = text_so_far + piece
                hit = next((s for s in stops if s in candidate), None)
                if hit is not None:
                    cut = candidate.index(hit)
                    if cut > len(text_so_far):
                        yield Chunk(text=candidate[len(text_so_far) : cut])
                    break
                text_so_far = candidate
                emitted += 1
                yield Chunk(text=piece)
            if self.tool_calls and req.tools and req.tool_choice != "none":
                yield Chunk(tool_calls=self.tool_calls)
                finish = FinishReason.TOOL_CALLS
            yield Chunk(
                finish_reason=finish,
                usage=Usage(prompt_tokens=7, completion_tokens=emitted),
                timings=Timings(total_ns=1_000_000, load_ns=1000, prompt_eval_ns=2000, eval_ns=3000),
                context=(1, 2, 3),
            )
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled = True
            raise

    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Embeddings:
        """FAKE_DIMS-long vectors derived from each input's hash (not unit length unless `normalize`)."""
        self._check(req.model)
        self.embed_requests.append(req)
        self.loaded[req.model] = time.time()
        if req.dimensions is not None and not 0 < req.dimensions <= FAKE_DIMS:
            raise InvalidRequest(f"dimensions must be between 1 and {FAKE_DIMS}", param="dimensions")
        vectors = []
        for text in req.inputs:
            digest = hashlib.sha256(text.encode()).digest()
            v = [3.0 * (b - 127.5) / 127.5 for b in digest[:FAKE_DIMS]][: req.dimensions or FAKE_DIMS]
            if req.normalize:
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                v = [x / norm for x in v]
            vectors.append(tuple(v))
        tokens = sum(len(t.split()) for t in req.inputs)
        return Embeddings(vectors=tuple(vectors), prompt_tokens=tokens, load_ns=1000, total_ns=1_000_000)

    async def load(
        self, model: str, *, keep_alive: float | None = None, resolved: ResolvedModel | None = None
    ) -> float:
        self._check(model)
        self.loaded[model] = time.time()
        return 0.0

    async def unload(self, model: str, *, force: bool = False, resolved: ResolvedModel | None = None) -> bool:
        if model in self.pinned and not force:
            return False
        return self.loaded.pop(model, None) is not None

    def running(self) -> list[RunningModel]:
        return [
            RunningModel(
                name=name,
                size_bytes=1000,
                vram_bytes=0,
                estimate_bytes=1000,
                expires_at=t + 300,
                context_length=4096,
                device="cpu",
                quantization="F32",
            )
            for name, t in self.loaded.items()
        ]

    def alive(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self.closed = True

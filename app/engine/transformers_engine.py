"""TransformersEngine: turns a GenerationRequest into a sequence in a resident model's batch, and its tokens
back into Chunks (with tool-call parsing, timings and metrics). Embeddings go to its `Embedder`; the model admin
(admin.py) is a separate object over the same parts (parts.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from app.engine import limits
from app.engine import tools as tooling
from app.engine.admission import Ticket
from app.engine.detok import IncrementalDetokenizer
from app.engine.embeddings import Embedder
from app.engine.formats import ConstraintSpec, spec_for_format, validate_format
from app.engine.manager import Resident
from app.engine.parts import EngineParts
from app.engine.sampling import RowSampler
from app.engine.sequence import Sequence
from app.engine.stopping import StopMatcher
from app.engine.template_sandbox import RenderGuard, TemplateSandbox
from app.engine.types import (
    Chunk,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationRequest,
    Message,
    RunningModel,
    SamplingParams,
    Timings,
)
from app.errors import GenerationFailed, InvalidRequest
from app.metrics import LOCAL_BACKEND, Metrics
from app.param_rules import check_params
from app.registry.catalog_base import Catalog
from app.registry.types import Alias, ResolvedModel
from app.settings import Settings

log = logging.getLogger(__name__)

# Tokens to leave for the answer when trimming a prompt that has no explicit max_tokens.
DEFAULT_RESERVE = 512


class TransformersEngine:
    """The Engine (base.py) over resident transformers models."""

    def __init__(self, parts: EngineParts, embedder: Embedder | None = None) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.catalog = parts.catalog
        self.metrics = parts.metrics
        self.manager = parts.manager
        self.admission = parts.admission
        self.embedder = embedder or Embedder(parts)
        self._preload: list[str] = parts.settings.preload_list
        self._preloaded: set[str] = set()
        self._preload_task: asyncio.Task[None] | None = None
        self.sandbox = TemplateSandbox.from_settings(parts.settings)

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics) -> TransformersEngine:
        """The engine over freshly built parts (the model admin, when wanted, is built from `engine.parts`)."""
        return cls(EngineParts.build(settings, catalog, metrics))

    # ---- lifecycle ----
    async def startup(self) -> None:
        self.manager.start_reaper()
        if self._preload:
            self._preload_task = asyncio.get_running_loop().create_task(self._do_preload())
        if self.settings.request_templates:
            # The first template request would otherwise wait for the worker's imports (a second or more).
            threading.Thread(target=self._prewarm_sandbox, name="template-prewarm", daemon=True).start()

    def _prewarm_sandbox(self) -> None:
        try:
            self.sandbox.prewarm()
        except Exception as exc:  # the first render starts a worker itself
            log.warning("could not start the template worker ahead of time: %s", exc)

    async def _do_preload(self) -> None:
        for name in self._preload:
            try:
                await self.manager.ensure(self.catalog.resolve(name), None, pinned=True)
                self._preloaded.add(name)
            except Exception:
                log.exception("preloading %s failed", name)

    def ready(self) -> bool:
        return all(name in self._preloaded for name in self._preload) and self.manager.pinned_resident()

    def alive(self) -> bool:
        return all(r.scheduler.alive() for r in self.manager.residents.values())

    async def probe(self) -> bool:
        if not self._preload:
            return True
        if await self.embedder.probe(self._preload[0]):
            return True
        chunks = await self.start(
            GenerationRequest(model=self._preload[0], prompt="Hi", raw=True, sampling=SamplingParams(max_tokens=1))
        )
        async for _ in chunks:
            pass
        return True

    async def aclose(self) -> None:
        if self._preload_task is not None:
            self._preload_task.cancel()
        await self.manager.aclose()
        # The template sandbox is the process's (shared with the alias check); its workers end with the process.

    # ---- residency ----
    async def load(
        self, model: str, *, keep_alive: float | None = None, resolved: ResolvedModel | None = None
    ) -> float:
        resolved = resolved or self.catalog.resolve(model)
        before = self.manager.find(resolved.load_key)
        if keep_alive == 0:
            await self.manager.unload(resolved)
            return 0.0
        started = time.perf_counter()
        await self.manager.ensure(resolved, resolved.keep_alive(keep_alive))
        return 0.0 if before is not None else time.perf_counter() - started

    async def unload(self, model: str, *, force: bool = False, resolved: ResolvedModel | None = None) -> bool:
        return await self.manager.unload(resolved or self.catalog.resolve(model), force=force)

    def running(self) -> list[RunningModel]:
        return self.manager.running()

    # ---- embeddings ----
    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Embeddings:
        return await self.embedder.embed(req, resolved)

    # ---- generation ----
    async def start(self, req: GenerationRequest, resolved: ResolvedModel | None = None) -> AsyncIterator[Chunk]:
        resolved = resolved or self.catalog.resolve(req.model)
        self.embedder.refuse_embedding_only(req, resolved)
        alias = resolved.alias
        limits.check_generation(req, self.settings)
        fmt = req.format if req.format not in (None, "") else _alias_format(alias)
        validate_format(fmt)
        tool_choice = tooling.validate_tools(req.tools, req.tool_choice)
        ticket = self.admission.enter()
        queued_at = time.perf_counter()
        try:
            load_started = time.perf_counter()
            res = await self.manager.acquire(resolved, resolved.keep_alive(req.keep_alive))
            load_ns = int((time.perf_counter() - load_started) * 1e9)
        except BaseException:
            ticket.close()
            raise
        try:
            alias_params = SamplingParams.from_dict(alias.options) if alias else SamplingParams()
            model_params = SamplingParams.from_dict(self.parts.model_configs.get(resolved.base_name, {}))
            params = req.sampling.merged(alias_params).merged(model_params).merged(res.defaults).resolved()
            check_params(params)
            num_ctx = min(params.num_ctx or self.settings.context_length, res.context_length)
            if req.context and max(req.context) >= res.vocab_size:
                raise InvalidRequest(
                    f"context holds token ids outside the model's vocabulary (0 to {res.vocab_size - 1})",
                    param="context",
                )
            guard = RenderGuard(self.sandbox)
            try:
                prompt_ids = await asyncio.to_thread(self._render, res, req, alias, num_ctx, params, tool_choice, guard)
            except asyncio.CancelledError:
                guard.cancel.set()  # the render thread stops the template worker at its next poll
                raise
            room = num_ctx - len(prompt_ids)
            wanted = params.max_tokens
            if wanted is None and self.settings.default_num_predict > 0:
                # Nothing set a limit: bound the answer, or a looping one holds its slot until the context is full.
                wanted = self.settings.default_num_predict
            max_new = room if wanted is None or wanted < 0 else min(wanted, room)
            spec: ConstraintSpec | None = None
            if tool_choice not in ("none", "auto"):
                schema = tooling.call_schema(req.tools, None if tool_choice == "required" else tool_choice)
                spec = ConstraintSpec(kind="tool_call", schema=schema)
            else:
                spec = spec_for_format(fmt)
            constraint = None
            if spec is not None:
                # Building the token tables (seconds, once per model) and compiling a schema stay off the loop.
                constraint = await asyncio.to_thread(
                    lambda: res.constraint_compiler().constraint(spec, max_tokens=max(max_new, 0))
                )
            queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
            loop = asyncio.get_running_loop()

            def emit(item: Chunk | BaseException | None) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            seq = Sequence(
                prompt_ids=prompt_ids,
                max_new_tokens=max(max_new, 0),
                sampler=RowSampler(params, prompt_ids, res.eos, res.vocab_size),
                stop=StopMatcher(params.stop or (), repeat_chars=self.settings.stop_repeats_chars),
                detok=IncrementalDetokenizer(res.weights.tokenizer),
                emit=emit,
                constraint=constraint,
                top_logprobs=(params.top_logprobs or 0) if params.logprobs else -1,
            )
        except BaseException:
            ticket.close()
            self._release(res)
            raise
        if seq.max_new_tokens == 0:
            seq.prefill_only = True
        res.scheduler.submit(seq)
        ctx = _StreamContext(res, seq, queue, req, tool_choice, queued_at, load_ns, ticket)
        return _LocalStream(self, ctx)

    def _render(
        self,
        res: Resident,
        req: GenerationRequest,
        alias: Alias | None,
        num_ctx: int,
        params: SamplingParams,
        tool_choice: str,
        guard: RenderGuard,
    ) -> list[int]:
        reserve = min(
            params.max_tokens if params.max_tokens and params.max_tokens > 0 else DEFAULT_RESERVE, num_ctx // 2
        )
        template = req.template or (alias.template if alias else None)
        if req.messages is not None:
            messages = list(_alias_messages(alias)) + list(req.messages)
            system = alias.system if alias else None
            if system and not any(m.role == "system" for m in messages):
                messages.insert(0, Message(role="system", content=system))
            tools = req.tools if tool_choice != "none" else ()
            if tools and tool_choice == "auto" and not res.renderer.supports_tools():
                # The template cannot show tools: HUGLLAMA_TOOLS_FALLBACK says teach them in a prompt (the default),
                # refuse them (Ollama's answer) or leave them out (clients such as Open WebUI send dozens).
                if self.settings.tools_fallback == "reject":
                    raise InvalidRequest(f"{req.model} does not support tools", param="tools")
                if self.settings.tools_fallback == "ignore":
                    log.info("%s cannot render tools: left out %d (HUGLLAMA_TOOLS_FALLBACK)", req.model, len(tools))
                    tools = ()
            tool_prompt = tooling.tool_prompt(tools) if tools and not res.renderer.supports_tools() else None
            ids, dropped = res.renderer.encode_chat(
                messages,
                tools=tools,
                template=template,
                tool_prompt=tool_prompt,
                num_ctx=num_ctx,
                reserve=reserve,
                truncate=req.truncate,
                guard=guard,
            )
            if dropped:
                log.debug("dropped %d old messages to fit num_ctx=%d", dropped, num_ctx)
            return ids
        return res.renderer.encode_prompt(
            req.prompt or "",
            system=req.system if req.system is not None else (alias.system if alias else None),
            template=template,
            raw=req.raw,
            suffix=req.suffix,
            context=req.context,
            num_ctx=num_ctx,
            reserve=reserve,
            truncate=req.truncate,
            num_keep=params.num_keep if params.num_keep is not None else 4,
            guard=guard,
        )

    def _release(self, res: Resident) -> None:
        if self.manager.release_and_maybe_unload(res):
            asyncio.get_running_loop().create_task(self.manager.unload(res.resolved))

    async def _stream(self, ctx: _StreamContext) -> AsyncGenerator[Chunk]:
        seq, queue, req = ctx.seq, ctx.queue, ctx.req
        label = self.metrics.model_label(req.model)
        waiting = True
        buffering = bool(req.tools) and ctx.tool_choice != "none"
        buffered: list[Chunk] = []
        first_at: float | None = None
        finished = False
        try:
            while True:
                item = await queue.get()
                if waiting:
                    waiting = False
                    ctx.ticket.run()
                    self.metrics.queue_time.labels(model=label, backend=LOCAL_BACKEND).observe(
                        max(0.0, seq.admitted_at - ctx.queued_at)
                    )
                if item is None:
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if item.finish_reason is None:
                    if first_at is None:
                        first_at = time.perf_counter()
                        self.metrics.ttft.labels(model=label, backend=LOCAL_BACKEND).observe(first_at - ctx.queued_at)
                    if not buffering:
                        yield item
                        continue
                    buffered.append(item)
                    if ctx.tool_choice == "auto":
                        # Stream what is surely prose; hold back whatever may be the start of a tool call.
                        text = "".join(c.text for c in buffered)
                        safe = tooling.content_holdback(text)
                        if safe > 0:
                            lps = tuple(lp for c in buffered for lp in c.logprobs)
                            buffered = [Chunk(text=text[safe:])] if safe < len(text) else []
                            yield Chunk(text=text[:safe], logprobs=lps)
                    continue
                finished = True
                final = self._finalize(ctx, item, buffered)
                for chunk in final:
                    yield chunk
                self._observe(ctx, label, item)
                if self.settings.log_content:
                    # Opt-in only (HUGLLAMA_LOG_CONTENT): prompts and answers may be sensitive.
                    log.info("content: prompt=%r completion=%r", req.messages or req.prompt, ctx.seq.detok.text())
                return
        finally:
            self._end(ctx, finished=finished)

    def _end(self, ctx: _StreamContext, *, finished: bool) -> None:
        """Give back what the request holds (queue place, batch row, model residency); once, however it ended."""
        if ctx.ended:
            return
        ctx.ended = True
        ctx.ticket.close()
        if not finished:
            ctx.res.scheduler.cancel(ctx.seq)
            # Count what a cancelled request did generate, so the token counters show generation stopping.
            label = self.metrics.model_label(ctx.req.model)
            self.metrics.generation_tokens.labels(model=label, backend=LOCAL_BACKEND).inc(len(ctx.seq.generated))
        self._release(ctx.res)

    def _finalize(self, ctx: _StreamContext, final: Chunk, buffered: list[Chunk]) -> list[Chunk]:
        timings = Timings(
            total_ns=int((time.perf_counter() - ctx.queued_at) * 1e9),
            load_ns=ctx.load_ns,
            prompt_eval_ns=final.timings.prompt_eval_ns if final.timings else 0,
            eval_ns=final.timings.eval_ns if final.timings else 0,
        )
        final = dataclasses.replace(final, timings=timings)
        if not buffered and ctx.tool_choice in ("none",):
            return [final]
        text = "".join(c.text for c in buffered)
        logprobs = tuple(lp for c in buffered for lp in c.logprobs)
        if ctx.tool_choice not in ("none", "auto"):
            if final.finish_reason == FinishReason.LENGTH:
                raise GenerationFailed("the tool call did not fit in max_tokens; raise max_tokens/num_predict")
            call = dataclasses.replace(tooling.parse_forced_call(text), id=tooling.new_call_id())
            return [
                Chunk(tool_calls=(call,), logprobs=logprobs),
                dataclasses.replace(final, finish_reason=FinishReason.TOOL_CALLS),
            ]
        if ctx.tool_choice == "auto":
            content, calls = tooling.parse_tool_calls(text, ctx.req.tools)
            if calls:
                calls = [c if c.id else dataclasses.replace(c, id=tooling.new_call_id()) for c in calls]
                out = [Chunk(text=content, logprobs=logprobs)] if content.strip() else []
                return [
                    *out,
                    Chunk(tool_calls=tuple(calls)),
                    dataclasses.replace(final, finish_reason=FinishReason.TOOL_CALLS),
                ]
        return [Chunk(text=text, logprobs=logprobs), final] if (text or logprobs) else [final]

    def _observe(self, ctx: _StreamContext, label: str, final: Chunk) -> None:
        usage = final.usage
        if usage is not None:
            self.metrics.prompt_tokens.labels(model=label, backend=LOCAL_BACKEND).inc(usage.prompt_tokens)
            self.metrics.generation_tokens.labels(model=label, backend=LOCAL_BACKEND).inc(usage.completion_tokens)
            if usage.cached_tokens:
                self.metrics.prefix_cache_hits.labels(model=label, backend=LOCAL_BACKEND).inc(usage.cached_tokens)
        seq = ctx.seq
        self.metrics.request_duration.labels(model=label, backend=LOCAL_BACKEND).observe(
            time.perf_counter() - ctx.queued_at
        )
        if len(seq.token_times) > 1:
            span = seq.token_times[-1] - seq.token_times[0]
            self.metrics.tpot.labels(model=label, backend=LOCAL_BACKEND).observe(span / (len(seq.token_times) - 1))


@dataclasses.dataclass
class _StreamContext:
    res: Resident
    seq: Sequence
    queue: asyncio.Queue[Chunk | BaseException | None]
    req: GenerationRequest
    tool_choice: str
    queued_at: float
    load_ns: int
    ticket: Ticket
    ended: bool = False


class _LocalStream:
    """The chunk iterator `start` returns. A class around the `_stream` generator, not the generator itself: an
    async generator closed before its first `__anext__` never runs its `finally`, so a stream closed unread (a
    later choice's start failed, the client left before the body began) would keep its queue place, its batch row
    (generating into a queue nobody reads) and its model's residency. `aclose()` gives them back in any state."""

    def __init__(self, engine: TransformersEngine, ctx: _StreamContext) -> None:
        self._engine = engine
        self._ctx = ctx
        self._gen = engine._stream(ctx)

    def __aiter__(self) -> _LocalStream:
        return self

    async def __anext__(self) -> Chunk:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()  # a started generator ends through its own `finally`
        finally:
            self._engine._end(self._ctx, finished=False)  # a no-op when it did


def _alias_format(alias: Alias | None) -> Any:
    if alias is None:
        return None
    return alias.options.get("format")


def _alias_messages(alias: Alias | None) -> list[Message]:
    if alias is None:
        return []
    return [Message(role=str(m.get("role", "user")), content=str(m.get("content", ""))) for m in alias.messages]

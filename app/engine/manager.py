"""Residency: which models are loaded, loading them once (single-flight, on a loader thread), keep_alive expiry,
and LRU eviction under HUGLLAMA_MAX_LOADED_MODELS and the memory budget."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from app.engine import cpu_linear, encoders, loader
from app.engine.prefix_cache import PrefixCache
from app.engine.scheduler import BatchScheduler
from app.engine.templates import PromptRenderer
from app.engine.types import RunningModel, SamplingParams
from app.errors import InsufficientMemory, ModelLoadFailed, Overloaded, ServiceError
from app.hardware import detect, planning
from app.hardware import estimate as estimating
from app.metrics import Metrics
from app.registry.encoder_info import EncoderSpec
from app.registry.types import ResolvedModel
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Resident:
    key: str
    name: str
    resolved: ResolvedModel
    weights: loader.LoadedWeights
    scheduler: BatchScheduler
    renderer: PromptRenderer
    eos: set[int]
    defaults: SamplingParams
    context_length: int
    vocab_size: int
    estimate_bytes: int
    keep_alive: float
    pinned: bool = False
    in_flight: int = 0
    last_used: float = field(default_factory=time.time)
    expires_at: float | None = None
    compiler: Any = None
    # Embedding models (sentence-transformers checkpoints): how to pool, the vector's length, and the
    # EmbedBatcher gathering concurrent requests (made on first use).
    encoder: EncoderSpec | None = None
    encoder_dim: int | None = None
    batcher: Any = None

    def constraint_compiler(self) -> Any:
        if self.compiler is None:
            from app.engine.constraints import ConstraintCompiler

            self.compiler = ConstraintCompiler(self.weights.tokenizer, self.vocab_size, stop_token_ids=sorted(self.eos))
        return self.compiler


@dataclass
class LoadStatus:
    """For the management API: loading, loaded or failed (with the error)."""

    name: str
    state: str
    error: str | None = None
    device: str | None = None
    quantization: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


class ModelManager:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.residents: dict[str, Resident] = {}
        self.status: dict[str, LoadStatus] = {}
        self._loading: dict[str, asyncio.Future[Resident]] = {}
        # Load keys of the preloaded (HUGLLAMA_PRELOAD) models: pinned whenever resident, and /readyz waits for them.
        self.pinned_keys: set[str] = set()
        self._load_lock = asyncio.Lock()  # one load at a time
        self._reaper: asyncio.Task[None] | None = None
        self.device = detect.choose_device(settings.device)
        self.dtype = detect.choose_dtype(settings.dtype, self.device)

    # ---- lifecycle ----
    def start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for res in list(self.residents.values()):
                if res.in_flight == 0 and not res.pinned and res.expires_at is not None and res.expires_at <= now:
                    log.info("keep_alive expired for %s", res.name)
                    await self._unload(res)

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for res in list(self.residents.values()):
            await self._unload(res)

    # ---- acquire / release ----
    def find(self, key: str) -> Resident | None:
        return self.residents.get(key)

    def is_loading(self, key: str) -> bool:
        """A load of `key` is under way (a second request for it would wait for that load)."""
        return key in self._loading

    async def acquire(self, resolved: ResolvedModel, keep_alive: float | None, *, pinned: bool = False) -> Resident:
        """The resident copy of `resolved`, loading it first if needed; counts one in-flight use."""
        res = await self.ensure(resolved, keep_alive, pinned=pinned)
        res.in_flight += 1
        res.last_used = time.time()
        res.expires_at = None
        return res

    def release(self, res: Resident) -> None:
        res.in_flight = max(0, res.in_flight - 1)
        res.last_used = time.time()
        if res.in_flight == 0:
            self._arm(res)

    def _arm(self, res: Resident) -> None:
        if res.pinned or res.keep_alive < 0:
            res.expires_at = None
        else:
            res.expires_at = time.time() + res.keep_alive

    async def ensure(self, resolved: ResolvedModel, keep_alive: float | None, *, pinned: bool = False) -> Resident:
        key = resolved.load_key
        res = self.residents.get(key)
        if res is None:
            pending = self._loading.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[key] = pending
                try:
                    res = await self._load(resolved, keep_alive, pinned)
                except BaseException as e:
                    pending.set_exception(e)
                    pending.exception()  # mark retrieved: waiters re-raise it themselves
                    raise
                else:
                    pending.set_result(res)
                finally:
                    self._loading.pop(key, None)
            else:
                res = await asyncio.shield(pending)
        if keep_alive is not None:
            res.keep_alive = keep_alive
        if pinned:
            self.pinned_keys.add(key)
        if key in self.pinned_keys:
            res.pinned = True
        if res.in_flight == 0:
            self._arm(res)
        return res

    # ---- loading ----

    def estimate(self, resolved: ResolvedModel, quantization: str | None = None) -> int:
        try:
            est = estimating.estimate(
                resolved.source,
                dtype=self.dtype,
                quantization=quantization if quantization is not None else resolved.quantization,
                num_ctx=self.settings.context_length,
                parallel=self.settings.num_parallel or 1,  # unset: slots are sized by what is free after loading
                overhead_bytes=self.settings.memory_overhead_bytes,
            )
        except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
            # Corrupt files (bad config.json, truncated headers): one model's error, not a 500 for every listing.
            raise ModelLoadFailed(f"cannot read the files of model '{resolved.requested}': {e}") from e
        return int(est.total_bytes) + self._packed_copy_bytes(resolved, quantization)

    def _packed_copy_bytes(self, resolved: ResolvedModel, quantization: str | None) -> int:
        """What CPU kernels add to fp32 weights: a Q4 GGUF's 4-bit copies and int8 head (decode_step.py), else
        the packed copy of a tied output projection (cpu_linear.py)."""
        quant = quantization if quantization is not None else resolved.quantization
        if not (self.device == "cpu" and self.dtype == "float32" and quant is None):
            return 0
        try:
            if encoders.spec_of(resolved.source) is not None:
                return 0  # embedding models keep their own kernels
            if self.settings.cpu_lean_decode and (lean := estimating.four_bit_decode_bytes(resolved.source)):
                return lean
            packs = self.settings.cpu_skinny_matmul and cpu_linear.packed_sgemm_works()
            return estimating.tied_output_bytes(resolved.source, dtype=self.dtype) if packs else 0
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return 0  # the estimate above already reported unreadable files

    def free_bytes(self) -> int:
        if self.settings.memory_budget_bytes:
            used = sum(r.weights.footprint_bytes for r in self.residents.values())
            return max(0, self.settings.memory_budget_bytes - used)
        return int(detect.memory_for(self.device).free_bytes)

    async def _make_room(self, resolved: ResolvedModel, need: int) -> None:
        idle = [
            (r.key, r.weights.footprint_bytes, r.last_used)
            for r in self.residents.values()
            if r.in_flight == 0 and not r.pinned
        ]
        while len(self.residents) >= self.settings.max_loaded_models:
            if not idle:
                raise Overloaded(
                    f"{len(self.residents)} models are resident and busy (HUGLLAMA_MAX_LOADED_MODELS="
                    f"{self.settings.max_loaded_models}); try again later"
                )
            idle.sort(key=lambda t: t[2])
            victim = idle.pop(0)
            await self._evict(victim[0])
        free = self.free_bytes()
        evict, fits = planning.plan_load(need, free, idle)
        if not fits:
            suggestion = planning.suggest_quantization(
                {q: self.estimate(resolved, q) for q in (None, "8bit", "4bit")}, free + sum(b for _, b, _ in idle)
            )
            raise InsufficientMemory(planning.insufficient_memory_message(resolved.requested, need, free, suggestion))
        for key in evict:
            await self._evict(key)

    async def _evict(self, key: str) -> None:
        res = self.residents.get(key)
        if res is not None:
            log.info("evicting %s to make room", res.name)
            self.metrics.evictions.inc()
            await self._unload(res)

    async def _load(self, resolved: ResolvedModel, keep_alive: float | None, pinned: bool) -> Resident:
        name = resolved.base_name + (f" ({resolved.quantization})" if resolved.quantization else "")
        status = LoadStatus(
            name=resolved.requested, state="loading", device=self.device, quantization=resolved.quantization
        )
        self.status[resolved.load_key] = status
        try:
            need = self.estimate(resolved)
            await self._make_room(resolved, need)
            started = time.perf_counter()
            async with self._load_lock:  # in a thread that ends with the load (cpu_linear.in_passing_thread)
                load = functools.partial(self._load_sync, resolved, need, keep_alive, pinned)
                res = await asyncio.to_thread(cpu_linear.in_passing_thread, load)
            self.metrics.model_load.labels(model=self.metrics.model_label(resolved.base_name)).observe(
                time.perf_counter() - started
            )
        except ServiceError as e:
            status.state, status.error, status.finished_at = "failed", e.message, time.time()
            raise
        except Exception as e:
            log.exception("loading %s failed", name)
            status.state, status.error, status.finished_at = "failed", str(e), time.time()
            raise ModelLoadFailed(f"could not load model '{resolved.requested}': {e}") from e
        status.state, status.finished_at = "loaded", time.time()
        self.residents[resolved.load_key] = res
        self._update_gauges()
        mb = res.weights.footprint_bytes >> 20
        log.info("loaded %s in %.1fs (%d MB, estimate %d MB)", name, res.weights.load_seconds, mb, need >> 20)
        return res

    def _load_sync(self, resolved: ResolvedModel, need: int, keep_alive: float | None, pinned: bool) -> Resident:
        import torch

        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        spec = encoders.spec_of(resolved.source)
        if spec is not None:
            return self._load_encoder(resolved, spec, need, keep_alive, pinned)
        weights = loader.load(
            resolved.source,
            snapshots=self.settings.snapshots_dir,
            device=self.device,
            dtype=self.dtype,
            quantization=resolved.quantization,
            trust_remote_code=self.settings.trust_remote_code,
            device_map=detect.device_map_for(self.device),
            kernels=loader.CpuKernels.of(self.settings),
        )
        config = weights.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        context_length = int(getattr(text_config, "max_position_embeddings", 0) or self.settings.context_length)
        vocab = int(getattr(text_config, "vocab_size", 0) or len(weights.tokenizer))
        eos = loader.eos_ids(weights.model, weights.tokenizer)
        layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
        heads = int(getattr(text_config, "num_attention_heads", 1) or 1)
        kv_heads = int(getattr(text_config, "num_key_value_heads", heads) or heads)
        head_dim = int(getattr(text_config, "head_dim", 0) or (getattr(text_config, "hidden_size", 0) // heads))
        per_token = 2 * layers * kv_heads * head_dim * (4 if self.dtype == "float32" else 2)
        budget_tokens = self.settings.kv_cache_bytes // per_token if (per_token and self.settings.kv_cache_bytes) else 0
        prefix = PrefixCache(self.settings.prefix_cache_bytes) if self.settings.prefix_cache_bytes else None
        label = self.metrics.model_label(resolved.base_name)
        scheduler = BatchScheduler(
            weights.model,
            weights.tokenizer,
            name=resolved.base_name,
            max_batch=planning.batch_slots(
                self.settings.num_parallel,
                self.free_bytes(),
                per_token,
                min(self.settings.context_length, context_length),
            ),
            eos_ids=eos,
            device=self.device if weights.quantization is None else str(weights.model.device),
            prefix_cache=prefix,
            kv_budget_tokens=budget_tokens,
            on_forward=lambda kind: self.metrics.forward_passes.labels(model=label, kind=kind).inc(),
            decode=weights.decode,
        )
        self._record_memory(label, weights, need)
        return Resident(
            key=resolved.load_key,
            name=resolved.base_name,
            resolved=resolved,
            weights=weights,
            scheduler=scheduler,
            renderer=PromptRenderer(weights.tokenizer),
            eos=eos,
            defaults=SamplingParams.from_dict(loader.generation_defaults(weights.model)),
            context_length=context_length,
            vocab_size=vocab,
            estimate_bytes=need,
            keep_alive=keep_alive if keep_alive is not None else self.settings.keep_alive,
            pinned=pinned,
        )

    def _record_memory(self, label: str, weights: loader.LoadedWeights, need: int) -> None:
        self.metrics.model_memory.labels(model=label, device=self.device).set(weights.footprint_bytes)
        self.metrics.model_memory_estimate.labels(model=label).set(need)

    def _load_encoder(
        self, resolved: ResolvedModel, spec: EncoderSpec, need: int, keep_alive: float | None, pinned: bool
    ) -> Resident:
        """An embedding model: its scheduler's thread only runs embedding passes (generation is refused before
        a request gets here), so it has no KV cache, prefix cache or sampling defaults."""
        weights = encoders.load_encoder(
            resolved.source,
            spec,
            device=self.device,
            dtype=self.dtype,
            quantization=resolved.quantization,
            trust_remote_code=self.settings.trust_remote_code,
        )
        model, tokenizer = weights.model, weights.tokenizer
        scheduler = BatchScheduler(
            model, tokenizer, name=resolved.base_name, max_batch=1, eos_ids=set(), device=str(model.device)
        )
        label = self.metrics.model_label(resolved.base_name)
        self._record_memory(label, weights, need)
        return Resident(
            key=resolved.load_key,
            name=resolved.base_name,
            resolved=resolved,
            weights=weights,
            scheduler=scheduler,
            renderer=PromptRenderer(tokenizer),
            eos=set(),
            defaults=SamplingParams(),
            context_length=encoders.max_length(spec, model, tokenizer),
            vocab_size=len(tokenizer),
            estimate_bytes=need,
            keep_alive=keep_alive if keep_alive is not None else self.settings.keep_alive,
            pinned=pinned,
            encoder=spec,
            encoder_dim=spec.dimension or int(model.config.hidden_size) * len(spec.pooling),
        )

    # ---- unloading ----
    def pinned_resident(self) -> bool:
        return all(key in self.residents for key in self.pinned_keys)

    async def unload(self, resolved: ResolvedModel, *, force: bool = False) -> bool:
        """Unload now or when in-flight requests end. A pinned (preloaded) model stays unless `force` (the admin
        unload); forced, it is pinned again when it is next loaded."""
        res = self.residents.get(resolved.load_key)
        if res is None:
            return False
        if res.pinned and not force:
            log.info("%s is pinned (HUGLLAMA_PRELOAD): not unloading it", res.name)
            return False
        res.pinned = False
        if res.in_flight:
            res.keep_alive = 0  # unload as soon as in-flight requests end
            return True
        await self._unload(res)
        return True

    async def _unload(self, res: Resident) -> None:
        if self.residents.pop(res.key, None) is None:
            return
        await asyncio.to_thread(res.scheduler.stop)
        label = self.metrics.model_label(res.name)
        with contextlib.suppress(KeyError):
            self.metrics.model_memory.remove(label, self.device)
        with contextlib.suppress(KeyError):
            self.metrics.model_memory_estimate.remove(label)
        del res.weights.model
        res.weights.decode = None
        # The Resident may outlive its unload (a reaper loop variable, a finished request's frame): cut every
        # path from it to the weights and caches so gc can free them (the weights are mmapped: RSS drops).
        res.scheduler.model = res.scheduler.decode = None
        res.scheduler.prefix_cache = None
        res.compiler = None
        res.batcher = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        self.status.pop(res.key, None)
        self._update_gauges()
        log.info("unloaded %s", res.name)

    def release_and_maybe_unload(self, res: Resident) -> bool:
        """After a request: True when keep_alive 0 asks for an unload now."""
        self.release(res)
        return res.in_flight == 0 and res.keep_alive == 0 and not res.pinned

    def _update_gauges(self) -> None:
        self.metrics.models_loaded.set(len(self.residents))

    def running(self) -> list[RunningModel]:
        out = []
        for r in self.residents.values():
            vram = r.weights.footprint_bytes if self.device in ("cuda", "mps") else 0
            out.append(
                RunningModel(
                    name=r.resolved.requested if r.resolved.alias else r.name,
                    size_bytes=r.weights.footprint_bytes,
                    vram_bytes=vram,
                    estimate_bytes=r.estimate_bytes,
                    expires_at=None if (r.pinned or r.keep_alive < 0 or r.in_flight) else r.expires_at,
                    context_length=min(self.settings.context_length, r.context_length),
                    device=self.device,
                    quantization=r.weights.quantization or r.weights.dtype,
                )
            )
        return out

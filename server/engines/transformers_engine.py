"""The embedded engine: one transformers model, many LoRA adapters, continuous batching on CPU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoTokenizer, GenerationConfig

from hybrid_assistant.adapters.peft_format import AdapterSpec, BaseModelSpec, load_lora_weights
from hybrid_assistant.server.cpu import cpu_info, dtype_warning
from hybrid_assistant.server.engines.errors import EngineStoppedError
from hybrid_assistant.server.engines.loaded import LoadedModel
from hybrid_assistant.server.engines.model_runner import ModelRunner
from hybrid_assistant.server.engines.scheduler import Scheduler
from hybrid_assistant.server.engines.types import (
    ContinuationScore,
    GenerationChunk,
    GenerationRequest,
    ModelInfo,
    PrefixCacheInfo,
    SamplingParams,
)
from hybrid_assistant.server.errors import Unavailable
from hybrid_assistant.server.model_store import model_fingerprint, resolve_model
from hybrid_assistant.server.prompt import render_chat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hybrid_assistant.server.adapter_registry import AdapterBackend
    from hybrid_assistant.server.config import Settings

log = logging.getLogger(__name__)


class TransformersEngine(LoadedModel):
    name = "transformers"

    def __init__(self, settings: Settings, on_death: Callable[[BaseException], None] | None = None) -> None:
        self._settings = settings
        self._on_death = on_death
        self._runner: ModelRunner | None = None
        self._scheduler: Scheduler | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._info: ModelInfo | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        await self._warm_up()

    def _load(self) -> None:
        settings = self._settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        resolved = resolve_model(settings.model_path, settings.model_name, settings.models_dir)
        started = time.perf_counter()
        cpu = cpu_info()
        log.info("CPU: %s", cpu.summary())
        warning = dtype_warning(settings.dtype, cpu)
        if warning:
            log.warning("%s", warning)
        dtype = getattr(torch, settings.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self._runner = ModelRunner(
            resolved.path,
            dtype=dtype,
            max_rows=settings.max_batch_size,
            max_tokens=settings.max_total_tokens,
            model_name=resolved.name,
            aliases=set(resolved.aliases),
            prefix_cache_bytes=int(settings.prefix_cache_mb * 2**20),
            prefix_block_tokens=settings.prefix_cache_block_tokens,
            lean=settings.forward_path == "auto",
            prepack=settings.prepack_weights,
            gemv_max_rows=settings.gemv_max_rows,
        )
        max_context = min(settings.max_total_tokens, self._runner.context_limit)
        self._info = ModelInfo(
            name=resolved.name,
            fingerprint=model_fingerprint(resolved.path),
            max_context_tokens=max_context,
            dtype=settings.dtype,
            context_set_by_model=self._runner.context_limit < settings.max_total_tokens,
            path=resolved.path,
        )
        self._scheduler = Scheduler(
            self._runner,
            self._tokenizer,
            eos_ids=_eos_ids(resolved.path, self._tokenizer),
            max_batch=settings.max_batch_size,
            max_queue=settings.max_queue,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            max_total_tokens=max_context,
            on_death=self._on_death,
        )
        self._scheduler.start()
        log.info(
            "loaded %s (%s, %d threads) in %.1f s",
            resolved.name,
            settings.dtype,
            torch.get_num_threads(),
            time.perf_counter() - started,
        )

    async def _warm_up(self) -> None:
        # One short generation, so the first client does not pay for lazy initialisation.
        ids = render_chat(self.tokenizer, [{"role": "user", "content": "Hello"}])
        request = GenerationRequest("warm-up", ids, SamplingParams(max_tokens=4, temperature=0.0))
        async for _ in self.generate(request):
            pass

    async def close(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)

    def healthy(self) -> bool:
        return self._scheduler is not None and self._scheduler.running and self._scheduler.error is None

    # ------------------------------------------------------------------ properties

    @property
    def base_model_spec(self) -> BaseModelSpec:
        return self._require_runner().base_spec

    @property
    def adapter_backend(self) -> AdapterBackend:
        return self

    def scheduler_stats(self) -> dict[str, int]:
        return self._scheduler.stats() if self._scheduler else {}

    def active_requests(self) -> int:
        return sum(self.scheduler_stats().values())

    def resident_adapter_uids(self) -> set[int]:
        return set(self._runner.bank.uids) if self._runner else set()

    def prefix_cache_info(self) -> PrefixCacheInfo:
        if self._runner is None:
            return PrefixCacheInfo(enabled=False)
        cache = self._runner.prefix
        stats = cache.stats
        return PrefixCacheInfo(
            enabled=cache.enabled,
            hit_tokens=stats.hit_tokens,
            miss_tokens=stats.miss_tokens,
            blocks=stats.blocks,
            bytes=stats.bytes,
            budget_bytes=cache.budget_bytes,
            block_tokens=cache.block_tokens,
            evicted_blocks=stats.evicted_blocks,
        )

    def _require_runner(self) -> ModelRunner:
        if self._runner is None:
            raise Unavailable("the model is still loading")
        return self._runner

    def _require_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise Unavailable("the model is still loading")
        return self._scheduler

    # ------------------------------------------------------------------ adapters (AdapterBackend)

    async def install(self, uid: int, name: str, spec: AdapterSpec) -> None:
        runner = self._require_runner()
        # Reading and converting weights happens off both the event loop and the model thread;
        # the scheduler only inserts the ready tensors between two steps.
        weights = await asyncio.to_thread(load_lora_weights, spec, runner.dtype)
        await asyncio.wrap_future(self._require_scheduler().call(lambda: runner.bank.add(uid, weights)))

    async def uninstall(self, uid: int) -> None:
        runner = self._require_runner()
        with contextlib.suppress(EngineStoppedError):  # shutting down: weights go with the process
            await asyncio.wrap_future(self._require_scheduler().call(lambda: runner.remove_adapter(uid)))

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        scheduler = self._require_scheduler()
        # QueueFullError and EngineStoppedError reach the client through server.errors' table.
        seq = scheduler.submit(request, asyncio.get_running_loop())
        finished = False
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    finished = True
                yield item
                if finished:
                    return
        finally:
            if not finished:
                scheduler.cancel(seq)  # client went away or failed: free the row within a step

    async def score(
        self, prompt_ids: list[int], continuations: Sequence[list[int]], adapter_uid: int
    ) -> list[ContinuationScore]:
        runner = self._require_runner()
        scheduler = self._require_scheduler()
        # One scheduler operation per forward pass: a Score of many long options lets the
        # scheduler run decode steps between its passes instead of stalling every stream.
        passes = runner.score_passes(prompt_ids, continuations, adapter_uid)
        while True:
            result = await asyncio.wrap_future(scheduler.call(lambda: next(passes)))
            if result is not None:
                return result


def _eos_ids(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
    except OSError:
        pass  # no generation_config.json: the tokenizer's EOS is enough
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids

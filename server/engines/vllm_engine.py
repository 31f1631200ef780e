"""The vLLM engine: AsyncLLM with per-request LoRA adapters, behind the same Engine protocol.

Only this module imports vLLM (``server.engines.factory`` imports it when ``engine = "vllm"``).
Adapter semantics stay in the server's AdapterRegistry; vLLM only holds weights:

* each loaded adapter version gets the registry's unique uid, which is also vLLM's
  ``lora_int_id``; its ``lora_name`` is ``name@uid`` (vLLM compares LoRARequests by name);
* install = ``add_lora`` before any request may name the uid. A request naming an adapter
  vLLM cannot load kills vLLM's engine, while ``add_lora`` only raises, so a version is
  usable only once ``add_lora`` has succeeded;
* uninstall = ``remove_lora``, which frees the weights (vLLM's HTTP unload only forgets the
  name, vllm#54839). vLLM's own cache holds at least ``max_resident_adapters`` adapters, so
  it never evicts behind the registry's back. ``pin_lora`` is not used: pinning is the
  registry's job, and with few LoRA slots it crashed vLLM 0.32's CPU worker.

A request whose client goes away (cancel, deadline) closes the stream, which aborts it in
vLLM. If vLLM's engine process dies, ``healthy()`` turns False and ``on_death`` is called once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoTokenizer
from vllm import SamplingParams as VllmSamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMValidationError
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from hybrid_assistant.adapters.peft_format import AdapterSpec, BaseModelSpec, check_lora_weights
from hybrid_assistant.server.engines.loaded import LoadedModel
from hybrid_assistant.server.engines.types import (
    ContinuationScore,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationTimings,
    ModelInfo,
    PrefixCacheInfo,
    SamplingParams,
)
from hybrid_assistant.server.engines.vllm_settings import engine_kwargs
from hybrid_assistant.server.engines.vllm_stats import PrefixCacheCounts, prefix_cache_logger
from hybrid_assistant.server.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from hybrid_assistant.server.model_store import model_fingerprint, resolve_model
from hybrid_assistant.server.prompt import render_chat

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedTokenizerBase

    from hybrid_assistant.server.adapter_registry import AdapterBackend
    from hybrid_assistant.server.config import Settings

log = logging.getLogger(__name__)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}
_WATCH_INTERVAL_S = 0.5


class VllmEngine(LoadedModel):
    name = "vllm"

    def __init__(self, settings: Settings, on_death: Callable[[BaseException], None] | None = None) -> None:
        self._settings = settings
        self._on_death = on_death
        self._llm: Any = None  # AsyncLLM once started
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._info: ModelInfo | None = None
        self._spec: BaseModelSpec | None = None
        self._loras: dict[int, Any] = {}  # uid -> LoRARequest that add_lora accepted
        self._ids = itertools.count()
        self._active = 0
        self._dead: BaseException | None = None
        self._closing = False
        self._watchdog: asyncio.Task[None] | None = None
        self._prefix_counts = PrefixCacheCounts()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        settings = self._settings
        resolved = await asyncio.to_thread(
            resolve_model, settings.model_path, settings.model_name, settings.models_dir
        )
        started = time.perf_counter()
        self._tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, resolved.path)
        self._spec = await asyncio.to_thread(
            BaseModelSpec.from_config_dir, resolved.path, resolved.name, set(resolved.aliases)
        )
        model_context = _context_limit(resolved.path, settings.max_total_tokens)
        max_context = min(settings.max_total_tokens, model_context)
        kwargs = engine_kwargs(
            settings, resolved.path, resolved.name, max_context, on_cpu=current_platform.is_cpu()
        )
        log.info("starting vLLM with %s", kwargs)
        # Blocking (tens of seconds: it spawns the engine processes); off the event loop so
        # health checks answer meanwhile. The output handler starts on this loop at the first request.
        await asyncio.to_thread(self._create, AsyncEngineArgs(**kwargs))
        self._info = ModelInfo(
            name=resolved.name,
            fingerprint=await asyncio.to_thread(model_fingerprint, resolved.path),
            max_context_tokens=max_context,
            dtype=settings.dtype,
            context_set_by_model=model_context < settings.max_total_tokens,
            path=resolved.path,
        )
        self._watchdog = asyncio.create_task(self._watch(), name="vllm-watchdog")
        log.info("vLLM engine up for %s in %.1f s", resolved.name, time.perf_counter() - started)
        await self._warm_up()

    def _create(self, args: Any) -> None:
        llm = AsyncLLM.from_engine_args(args, stat_loggers=[prefix_cache_logger(self._prefix_counts)])
        if self._closing:  # the server stopped while vLLM was starting: do not leave it running
            llm.shutdown()
            raise Unavailable("the engine was closed while it was starting")
        self._llm = llm

    async def _warm_up(self) -> None:
        ids = render_chat(self.tokenizer, [{"role": "user", "content": "Hello"}])
        request = GenerationRequest("warm-up", ids, SamplingParams(max_tokens=4, temperature=0.0))
        async for _ in self.generate(request):
            pass

    async def close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)
            del llm  # AsyncLLM.__del__ at interpreter exit is noisy

    def prefix_cache_info(self) -> PrefixCacheInfo:
        """vLLM's own automatic prefix caching (its KV blocks live in its cache; sizes not reported)."""
        enabled = bool(self._llm is not None and self._llm.vllm_config.cache_config.enable_prefix_caching)
        hits, misses = self._prefix_counts.snapshot()
        return PrefixCacheInfo(enabled=enabled, hit_tokens=hits, miss_tokens=misses)

    def healthy(self) -> bool:
        return self._llm is not None and self._dead is None and not self._llm.errored

    async def _watch(self) -> None:
        """vLLM notices its engine process died (a monitor thread) even with no request in flight."""
        while self._llm is not None and not self._closing:
            if self._llm.errored:
                self._died(EngineDeadError())
                return
            await asyncio.sleep(_WATCH_INTERVAL_S)

    def _died(self, exc: BaseException) -> None:
        if self._dead is not None or self._closing:
            return
        self._dead = exc
        log.critical("vLLM engine died: %s", exc)
        if self._on_death is not None:
            self._on_death(exc)

    # ------------------------------------------------------------------ properties

    @property
    def base_model_spec(self) -> BaseModelSpec:
        if self._spec is None:
            raise Unavailable("the model is still loading")
        return self._spec

    @property
    def adapter_backend(self) -> AdapterBackend:
        return self

    def active_requests(self) -> int:
        # vLLM's own count: an aborted request leaves it at once.
        return int(self._llm.get_num_unfinished_requests()) if self._llm is not None else 0

    def resident_adapter_uids(self) -> set[int]:
        return set(self._loras)

    async def engine_adapter_uids(self) -> set[int]:
        """What vLLM itself holds (its ``list_loras``), to check that the two agree."""
        with self._errors():
            return {int(uid) for uid in await self._require_llm().list_loras()}

    def _require_llm(self) -> Any:
        if self._dead is not None:
            raise Unavailable(f"the vLLM engine died: {self._dead}")
        if self._llm is None:
            raise Unavailable("the model is not loaded" if self._closing else "the model is still loading")
        return self._llm

    # ------------------------------------------------------------------ adapters (AdapterBackend)

    async def install(self, uid: int, name: str, spec: AdapterSpec) -> None:
        llm = self._require_llm()
        # vLLM reads the files itself: refuse NaN/inf weights first, as the embedded engine does.
        await asyncio.to_thread(check_lora_weights, spec, getattr(torch, self._settings.dtype))
        lora = LoRARequest(lora_name=f"{name}@{uid}", lora_int_id=uid, lora_path=str(spec.path))
        try:
            await llm.add_lora(lora)
        except EngineDeadError as exc:
            self._died(exc)
            raise Unavailable("the vLLM engine died") from exc
        except Exception as exc:  # vLLM reports a refused adapter as a plain Exception
            raise InvalidArgument(
                f"vLLM cannot load adapter {name!r} from {str(spec.path)!r}: {exc}"
            ) from exc
        self._loras[uid] = lora

    async def uninstall(self, uid: int) -> None:
        lora = self._loras.pop(uid, None)
        if lora is None or self._llm is None or self._dead is not None:
            return  # never installed, or the engine (and its memory) is gone
        with self._errors():
            removed = await self._llm.remove_lora(uid)
        log.info("adapter %s removed from vLLM: %s", lora.lora_name, removed)

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        llm = self._require_llm()
        lora = self._lora(request.adapter_uid, request.adapter_name)
        self._admit()
        params = _sampling(request.sampling)
        request_id = f"{request.request_id}-{next(self._ids)}"  # vLLM aborts by id: keep ids unique
        queue_ms = ttft_ms = 0.0
        completion = 0
        ids: list[int] = []
        text = ""
        self._active += 1
        try:
            with self._errors():
                stream = llm.generate(
                    TokensPrompt(prompt_token_ids=request.prompt_ids), params, request_id, lora_request=lora
                )
                # aclosing: a consumer that stops early (client cancel, deadline) closes this
                # generator, which closes vLLM's, which aborts the request in the engine.
                async with contextlib.aclosing(stream):
                    async for out in stream:
                        now = time.perf_counter()
                        piece = out.outputs[0]
                        if not completion and (piece.token_ids or out.finished):
                            ttft_ms = (now - request.accepted_at) * 1000
                            queue_ms = _queue_ms(out, ttft_ms)
                        completion += len(piece.token_ids)
                        ids += piece.token_ids
                        text += piece.text
                        if not out.finished:
                            if piece.text:
                                yield GenerationChunk(piece.text, completion)
                            continue
                        reason = _FINISH.get(str(piece.finish_reason))
                        if reason is None:  # "abort": vLLM dropped it (shutdown), not the client
                            raise Unavailable(f"the request was aborted by vLLM ({piece.finish_reason})")
                        tail = "" if isinstance(piece.stop_reason, str) else self._undecoded_tail(ids, text)
                        total_ms = (now - request.accepted_at) * 1000
                        timings = GenerationTimings(queue_ms, min(ttft_ms, total_ms), total_ms)
                        yield GenerationChunk(piece.text + tail, completion, reason, timings)
                        return
        finally:
            self._active -= 1

    async def score(
        self, prompt_ids: list[int], continuations: Sequence[list[int]], adapter_uid: int
    ) -> list[ContinuationScore]:
        """One 1-token request per continuation token, all at once (vLLM batches them).

        Not ``prompt_logprobs``: with LoRA enabled, vLLM computes prompt logits with the
        per-sequence LoRA mapping, which crashes the engine as soon as the batch holds two
        sequences (vllm#16668, still open in 0.32; the CPU path fails in ``bgmv_shrink``).
        The sampler path is correct with mixed adapters, and prefix caching makes the
        repeated prefixes cheap.
        """
        lora = self._lora(adapter_uid, "")
        self._admit()
        self._active += 1
        try:
            steps = [
                self._next_token(prompt_ids + c[:i], c[i], lora) for c in continuations for i in range(len(c))
            ]
            results = iter(await asyncio.gather(*steps))
        finally:
            self._active -= 1
        scores = []
        for continuation in continuations:
            picked = [next(results) for _ in continuation]
            scores.append(
                ContinuationScore(
                    logprob=sum(lp for lp, _ in picked),
                    tokens=len(continuation),
                    greedy=all(top for _, top in picked),
                )
            )
        return scores

    async def _next_token(self, ids: list[int], target: int, lora: Any) -> tuple[float, bool]:
        """log p(target | ids), and whether target is the greedy choice."""
        params = VllmSamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=[target],
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        with self._errors():
            stream = self._require_llm().generate(
                TokensPrompt(prompt_token_ids=ids), params, f"score-{next(self._ids)}", lora_request=lora
            )
            async with contextlib.aclosing(stream):
                async for out in stream:
                    final = out
        piece = final.outputs[0] if final is not None else None
        if piece is None or not piece.logprobs or target not in piece.logprobs[0]:
            raise Unavailable("vLLM returned no log-probability for the scored token")
        return float(piece.logprobs[0][target].logprob), piece.token_ids[0] == target

    # ------------------------------------------------------------------ helpers

    def _lora(self, uid: int, name: str) -> Any:
        if uid == 0:
            return None
        lora = self._loras.get(uid)
        if lora is None:  # the registry leases only installed versions; never send an unknown path
            raise NotFound(f"adapter {name or uid!r} is not loaded in the vLLM engine")
        return lora

    def _undecoded_tail(self, ids: list[int], text: str) -> str:
        """What vLLM's incremental detokenizer still holds at the end (an incomplete character).

        The embedded engine hands that out at the end, as ``decode`` does; so does this one,
        so that both engines give the same text.
        """
        full = str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        return full[len(text) :] if full.startswith(text) else ""

    def _admit(self) -> None:
        limit = self._settings.max_batch_size + self._settings.max_queue
        if self._active >= limit:
            raise ResourceExhausted(
                f"the engine has {self._active} requests in flight (max_batch_size + max_queue = {limit})"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """vLLM errors as the server's: engine dead -> UNAVAILABLE (and exit), bad input -> INVALID."""
        try:
            yield
        except EngineDeadError as exc:
            self._died(exc)
            raise Unavailable("the vLLM engine died") from exc
        except VLLMValidationError as exc:
            raise InvalidArgument(str(exc)) from exc


def _sampling(sampling: SamplingParams) -> Any:
    return VllmSamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=sampling.seed,
        stop=list(sampling.stop) or None,
        min_tokens=sampling.min_tokens,
        ignore_eos=sampling.ignore_eos,
        output_kind=RequestOutputKind.DELTA,
    )


def _queue_ms(out: Any, ttft_ms: float) -> float:
    """Scheduler wait from vLLM's own stats (vllm.log_stats on); else 0: vLLM does not report it."""
    stats = getattr(out, "metrics", None)
    scheduled, queued = getattr(stats, "scheduled_ts", 0.0), getattr(stats, "queued_ts", 0.0)
    if scheduled and queued:
        return min(max(0.0, (scheduled - queued) * 1000), ttft_ms)
    return 0.0


def _context_limit(model_dir: Path, default: int) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("max_position_embeddings") or default)

"""The transport-free core of answering: validate, pick the arm, retrieve, build the prompt, generate.

Servicers convert protobuf to the inputs (:mod:`hybrid_assistant.server.core_types`) and the
outcomes back; nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from hybrid_assistant.server import metrics
from hybrid_assistant.server.core_types import (
    ArmPlan,
    GenerateInput,
    GenerateOutcome,
    RetrievalInput,
    SamplingInput,
    ScoreInput,
    ScoreOutcome,
    arm_name,
)
from hybrid_assistant.server.engines.types import GenerationRequest, SamplingParams
from hybrid_assistant.server.errors import FailedPrecondition, InvalidArgument, Unavailable
from hybrid_assistant.server.prompt import BuiltPrompt, ContextPassage, build_prompt, encode_batch
from hybrid_assistant.server.sampling_defaults import (
    SamplingDefaults,
    read_model_sampling,
    resolve_sampling_defaults,
)
from hybrid_assistant.server.validation import (
    Problems,
    check_continuations,
    check_messages,
    check_metadata_filter,
    check_min_score,
    check_passages,
    check_request_id,
    check_sampling,
    check_top_k,
    effective_temperature,
)

if TYPE_CHECKING:
    from hybrid_assistant.server.adapter_registry import AdapterRegistry
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.engines.types import Engine


class ContextSource(Protocol):
    """Where retrieval-augmented requests get passages (the knowledge index)."""

    async def passages(self, query: str, retrieval: RetrievalInput) -> list[ContextPassage]: ...


log = logging.getLogger(__name__)

ArmResolver = Callable[[GenerateInput], ArmPlan]
OutcomeSink = Callable[[GenerateInput, ArmPlan, GenerateOutcome | None, str], Awaitable[None] | None]


class AssistantCore:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        registry: AdapterRegistry,
        contexts: ContextSource | None = None,
        resolve_arm: ArmResolver | None = None,
        on_outcome: OutcomeSink | None = None,
        claim_request_id: Callable[[str], Awaitable[None]] | None = None,
        release_request_id: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.contexts = contexts
        self._resolve_arm = resolve_arm
        self._on_outcome = on_outcome
        # Caller-supplied request ids are unique (ALREADY_EXISTS when reused): see ExperimentManager.
        self._claim_request_id = claim_request_id
        self._release_request_id = release_request_id
        self.ready = False
        self._sampling_defaults: SamplingDefaults | None = None

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """temperature and top_p for requests that leave them unset, the same for every engine
        (:mod:`hybrid_assistant.server.sampling_defaults`); resolved once the model is known."""
        if self._sampling_defaults is None:
            model = self.engine.model_info  # Unavailable while the model loads
            defaults = resolve_sampling_defaults(self.settings, read_model_sampling(model.path))
            log.info(
                "sampling defaults: temperature %g, top_p %g (%s)",
                defaults.temperature,
                defaults.top_p,
                defaults.source,
            )
            self._sampling_defaults = defaults
        return self._sampling_defaults

    def require_ready(self) -> None:
        """UNAVAILABLE while warming up, draining or after the engine died (both transports ask)."""
        if not self.ready or not self.engine.healthy():
            raise Unavailable("the server is warming up or shutting down; retry shortly")

    # ------------------------------------------------------------------ generate

    async def generate(self, inp: GenerateInput) -> AsyncIterator[str | GenerateOutcome]:
        """Yield text deltas, then the :class:`GenerateOutcome`."""
        accepted = time.perf_counter()
        self.require_ready()
        problems = Problems()
        check_request_id(inp.request_id, problems)
        check_messages(inp.messages, problems)
        check_sampling(inp.sampling, self.settings.max_total_tokens, problems)
        self._check_retrieval(inp.retrieval, problems)
        problems.raise_if_any()
        request_id = inp.request_id or uuid.uuid4().hex
        plan = self._resolve_arm(inp) if self._resolve_arm else ArmPlan(inp.adapter or "", inp.retrieval)
        plan = replace(plan, arm=plan.arm or arm_name(plan.adapter, plan.retrieval))
        claimed = bool(inp.request_id) and self._claim_request_id is not None
        if claimed and self._claim_request_id is not None:
            await self._claim_request_id(inp.request_id)  # ALREADY_EXISTS if the id was used
        outcome: GenerateOutcome | None = None
        status = "ok"
        try:
            prompt, retrieval_ms = await self._prompt(inp.messages, plan.retrieval)
            sampling = self._sampling(inp.sampling, len(prompt.ids))
            text: list[str] = []
            final = None
            async with self.registry.use(plan.adapter) as lease:
                request = GenerationRequest(request_id, prompt.ids, sampling, lease.uid, lease.name, accepted)
                async for chunk in self.engine.generate(request):
                    if chunk.text:
                        text.append(chunk.text)
                        yield chunk.text
                    if chunk.finish_reason is not None:
                        final = chunk
            if final is None or final.finish_reason is None or final.timings is None:
                raise RuntimeError(f"engine ended request {request_id} without a final chunk")
            outcome = GenerateOutcome(
                request_id=request_id,
                text="".join(text),
                finish_reason=final.finish_reason,
                prompt_tokens=len(prompt.ids),
                completion_tokens=final.completion_tokens,
                context_tokens=prompt.context_tokens,
                adapter=plan.adapter,
                queue_ms=final.timings.queue_ms,
                ttft_ms=final.timings.ttft_ms,
                total_ms=final.timings.total_ms,
                retrieval_ms=retrieval_ms,
                contexts=prompt.passages,
                model=self.engine.model_info.name,
                experiment=plan.experiment,
                arm=plan.arm,
            )
            metrics.observe_generation(outcome)
            yield outcome
        except BaseException as exc:
            # A unary caller closes this generator once it has the outcome: that request was served.
            if not (isinstance(exc, GeneratorExit) and outcome is not None):
                status = type(exc).__name__
            raise
        finally:
            metrics.REQUESTS.labels(method="generate", adapter=plan.adapter, status=status).inc()
            if self._on_outcome is not None:
                result = self._on_outcome(inp, plan, outcome, status)
                if result is not None:
                    await result
            if claimed and self._release_request_id is not None:
                self._release_request_id(inp.request_id)  # after the row is queued: the id stays taken

    async def _prompt(
        self, messages: Sequence[tuple[str, str]], retrieval: RetrievalInput
    ) -> tuple[BuiltPrompt, float]:
        started = time.perf_counter()
        passages: list[ContextPassage] = list(retrieval.passages)
        if retrieval.enabled and not passages:
            if self.contexts is None:
                raise FailedPrecondition("retrieval is disabled on this server (knowledge = false)")
            query = next(content for role, content in reversed(messages) if role == "user")
            passages = await self.contexts.passages(query, retrieval)
        retrieval_ms = (time.perf_counter() - started) * 1000
        chat = [{"role": role, "content": content} for role, content in messages]
        # Tokenising is CPU work on untrusted input: never on the event loop (health checks wait).
        built = await asyncio.to_thread(
            build_prompt, self.engine.tokenizer, chat, passages, self.settings.max_prompt_tokens
        )
        return built, retrieval_ms

    def _sampling(self, sampling: SamplingInput, prompt_tokens: int) -> SamplingParams:
        room = self.engine.model_info.max_context_tokens - prompt_tokens
        if room < 1:
            raise InvalidArgument(
                f"prompt is {prompt_tokens} tokens, leaving no room to answer within "
                f"{self.engine.model_info.context_limit}"
            )
        if sampling.max_tokens is not None and sampling.max_tokens > room:
            raise InvalidArgument(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({sampling.max_tokens}) exceeds "
                f"{self.engine.model_info.context_limit}"
            )
        # The request's own values win; the server's defaults fill what it leaves unset.
        defaults = self.sampling_defaults
        temperature = defaults.temperature if sampling.temperature is None else sampling.temperature
        max_tokens = sampling.max_tokens or min(self.settings.default_max_tokens, room)
        min_tokens = sampling.min_tokens or 0
        if min_tokens > max_tokens:  # max_tokens unset (set: validation said so already)
            raise InvalidArgument(
                f"sampling.min_tokens ({min_tokens}) exceeds max_tokens ({max_tokens}, the server's "
                f"default for this prompt); set sampling.max_tokens too"
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=effective_temperature(temperature),
            top_p=defaults.top_p if sampling.top_p is None else sampling.top_p,
            seed=sampling.seed,
            stop=sampling.stop,
            min_tokens=min_tokens,
            ignore_eos=sampling.ignore_eos,
        )

    def _check_retrieval(self, retrieval: RetrievalInput, problems: Problems) -> None:
        check_passages([p.text for p in retrieval.passages], problems)
        check_top_k(retrieval.top_k, self.settings.retrieval.max_top_k, problems)
        check_min_score(retrieval.min_score, problems)
        check_metadata_filter(retrieval.metadata_filter, problems)

    # ------------------------------------------------------------------ score

    async def score(self, inp: ScoreInput) -> ScoreOutcome:
        self.require_ready()
        problems = Problems()
        check_request_id(inp.request_id, problems)
        check_messages(inp.messages, problems)
        self._check_retrieval(inp.retrieval, problems)
        check_continuations(inp.continuations, problems)
        problems.raise_if_any()
        prompt, _ = await self._prompt(inp.messages, inp.retrieval)
        tokenizer = self.engine.tokenizer
        continuation_ids = await asyncio.to_thread(
            encode_batch, tokenizer, list(inp.continuations), content=True
        )
        longest = len(prompt.ids) + max(len(c) for c in continuation_ids)
        if longest > self.engine.model_info.max_context_tokens:
            raise InvalidArgument(
                f"prompt + longest continuation is {longest} tokens, more than "
                f"{self.engine.model_info.context_limit}"
            )
        adapter = inp.adapter or ""
        async with self.registry.use(adapter) as lease:
            scores = await self.engine.score(prompt.ids, continuation_ids, lease.uid)
        metrics.REQUESTS.labels(method="score", adapter=adapter, status="ok").inc()
        return ScoreOutcome(inp.request_id or uuid.uuid4().hex, scores, prompt.passages, adapter)

"""What an engine takes and gives: transport-free dataclasses shared by both engines."""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hybrid_assistant.server.validation import GREEDY_BELOW_TEMPERATURE

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedTokenizerBase

    from hybrid_assistant.adapters.peft_format import BaseModelSpec
    from hybrid_assistant.server.adapter_registry import AdapterBackend


class FinishReason(enum.Enum):
    STOP = "stop"  # end-of-sequence token or a stop string
    LENGTH = "length"  # max_tokens or the context limit


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0  # neither EOS nor a stop string ends the answer before this many tokens
    ignore_eos: bool = False  # EOS does not end the answer (max_tokens or a stop string does)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE


@dataclass
class GenerationRequest:
    """One generation, already tokenised. ``adapter_uid`` 0 means the base model."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    adapter_uid: int = 0
    adapter_name: str = ""
    accepted_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class GenerationTimings:
    queue_ms: float
    ttft_ms: float
    total_ms: float


@dataclass(frozen=True)
class GenerationChunk:
    """A streamed piece of output. The last chunk has ``finish_reason`` and ``timings`` set."""

    text: str
    completion_tokens: int
    finish_reason: FinishReason | None = None
    timings: GenerationTimings | None = None


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float
    tokens: int
    greedy: bool


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str
    max_context_tokens: int
    """Prompt + answer, in tokens: the lower of ``max_total_tokens`` and the model's own context."""
    dtype: str
    context_set_by_model: bool = False
    """The model's context length (``max_position_embeddings``), not ``max_total_tokens``, is the limit."""
    path: Path | None = None
    """The model directory; the core reads its generation_config.json for the sampling defaults."""

    @property
    def context_limit(self) -> str:
        """The limit on prompt + answer as error messages name it: the setting, or the model."""
        if self.context_set_by_model:
            return (
                f"the model's context length of {self.max_context_tokens} tokens "
                "(max_total_tokens is set higher)"
            )
        return f"max_total_tokens={self.max_context_tokens}"


@dataclass(frozen=True)
class PrefixCacheInfo:
    """What the engine's prefix cache has done so far (GetServerInfo, the eval's run.json)."""

    enabled: bool
    hit_tokens: int = 0
    miss_tokens: int = 0
    blocks: int = 0
    bytes: int = 0
    budget_bytes: int = 0
    block_tokens: int = 0
    evicted_blocks: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / total if total else 0.0


class Engine(Protocol):
    """What turns a prompt into tokens. Implementations: TransformersEngine, VllmEngine."""

    name: str

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def base_model_spec(self) -> BaseModelSpec: ...

    @property
    def adapter_backend(self) -> AdapterBackend: ...

    async def start(self) -> None:
        """Load the model and warm up; raises if the engine cannot serve."""

    async def close(self) -> None: ...

    def healthy(self) -> bool:
        """False once the engine has died; the server then stops serving and exits."""

    def active_requests(self) -> int:
        """Requests waiting or running in the engine (cancelled ones leave within a step)."""

    def resident_adapter_uids(self) -> set[int]:
        """Adapter versions whose weights the engine holds now."""

    def prefix_cache_info(self) -> PrefixCacheInfo:
        """Hits and misses of the automatic prefix cache so far."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the answer. Closing the iterator early cancels the request within a step."""

    async def score(
        self, prompt_ids: list[int], continuations: Sequence[list[int]], adapter_uid: int
    ) -> list[ContinuationScore]:
        """Log-likelihood of each continuation after the prompt."""

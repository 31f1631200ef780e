"""Continuous batching: one thread runs the model; requests join and leave between steps.

Each iteration: run queued control operations (adapter installs, scoring), drop cancelled
requests, admit waiting ones into free cache rows, run one prefill chunk for rows still
reading their prompt (bounded by ``prefill_chunk_tokens`` so a long prompt never stalls
decoding for long), then one decode step for every row that is generating. A row that
finishes frees its cache row at once; nobody waits for the slowest request.

Cache rows stay compact: rows ``[0, D)`` decode, rows ``[D, D+P)`` prefill.

Fault isolation: a failure caused by one request fails that request and nothing else. A row
whose adapter is gone, or whose scores come out non-finite (an adapter that overflows), is
failed alone before or after the step; an exception raised by a step itself fails the rows of
that step (their cache positions past ``cached`` are simply rewritten by whoever takes the row
next) and the scheduler goes on. Only an error in the scheduler's own bookkeeping (row moves)
or a ``BaseException`` is treated as engine death: then every request fails and the server exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from hybrid_assistant.server import metrics
from hybrid_assistant.server.engines.errors import EngineStoppedError, QueueFullError, StepFailedError
from hybrid_assistant.server.engines.sampling import make_generator, sample
from hybrid_assistant.server.engines.text import IncrementalDetokenizer
from hybrid_assistant.server.engines.types import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationTimings,
)
from hybrid_assistant.server.errors import FailedPrecondition, NotFound

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hybrid_assistant.server.engines.model_runner import ModelRunner

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class SequenceState:
    """One request's life in the scheduler: waiting, then prefilling, then decoding in a cache row."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[GenerationChunk | BaseException]
    detok: IncrementalDetokenizer
    generator: torch.Generator
    row: int = -1
    cached: int = 0  # tokens whose keys/values are in the cache
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    scheduled_at: float = 0.0
    first_token_at: float = 0.0

    @property
    def prompt_left(self) -> int:
        return max(0, len(self.request.prompt_ids) - self.cached)


# What the scheduler thread hands a request's event loop: a chunk of output, or the error that ended it.
_Delivery = tuple[SequenceState, GenerationChunk | BaseException]


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: PreTrainedTokenizerBase,
        *,
        eos_ids: set[int],
        max_batch: int,
        max_queue: int,
        prefill_chunk_tokens: int,
        max_total_tokens: int,
        on_death: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.max_total_tokens = max_total_tokens
        self.on_death = on_death
        self._waiting: deque[SequenceState] = deque()
        self._decoding: list[SequenceState] = []
        self._prefilling: list[SequenceState] = []
        self._ops: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._outbox: list[_Delivery] = []
        self.steps = 0
        self.failed_rows = 0  # requests failed alone (bad adapter, non-finite scores, step errors)

    # ------------------------------------------------------------------ public, any thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def stats(self) -> dict[str, int]:
        return {
            "waiting": len(self._waiting),
            "prefilling": len(self._prefilling),
            "decoding": len(self._decoding),
        }

    def _publish_stats(self) -> None:
        """Set the ``SCHEDULER`` gauge: requests per state (after every change of state)."""
        for state, count in self.stats().items():
            metrics.SCHEDULER.labels(state=state).set(count)

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> SequenceState:
        seq = SequenceState(
            request=request,
            loop=loop,
            queue=asyncio.Queue(),
            detok=IncrementalDetokenizer(self.tokenizer, request.sampling.stop),
            generator=make_generator(request.sampling.seed),
        )
        with self._wake:
            if not self.running:
                raise EngineStoppedError("the engine is not running")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(
                    f"{len(self._waiting)} requests are already queued (max_queue={self.max_queue})"
                )
            self._waiting.append(seq)
            self._publish_stats()
            self._wake.notify()
        return seq

    def cancel(self, seq: SequenceState) -> None:
        with self._wake:
            seq.cancelled = True
            self._wake.notify()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the scheduler thread between two steps (the model is never mid-forward)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._wake:
            if not self.running:
                future.set_exception(EngineStoppedError("the engine is not running"))
                return future
            self._ops.append((fn, future))
            self._wake.notify()
        return future

    # ------------------------------------------------------------------ scheduler thread

    def _run(self) -> None:
        # Everything the model thread touches (cache growth, row moves, adapter weights) stays in
        # inference mode: tensors created inside it cannot be edited in place outside it.
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._has_work():
                        self._wake.wait()
                    if self._stopping:
                        break
                self._iteration()
        except BaseException as exc:  # the engine is dead: fail everything, tell the server
            log.exception("engine scheduler died")
            self.error = exc
            self._fail_all(exc)
            if self.on_death is not None:
                self.on_death(exc)
            return
        self._fail_all(EngineStoppedError("the engine is shutting down"))

    def _has_work(self) -> bool:
        return bool(self._ops or self._waiting or self._decoding or self._prefilling)

    def _iteration(self) -> None:
        self._run_ops()
        self._drop_cancelled()
        self._admit()
        self._fail_missing_adapters()
        if self._prefilling:
            self._prefill_step()
        if self._decoding:
            self._decode_step()
        self._publish_stats()  # before delivery: a client that sees its token sees the gauge too
        self._flush_outbox()
        self.steps += 1

    def _run_ops(self) -> None:
        while True:
            with self._wake:
                if not self._ops:
                    return
                fn, future = self._ops.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as exc:  # reported to the caller, not fatal to the engine
                    future.set_exception(exc)

    def _drop_cancelled(self) -> None:
        with self._wake:
            if any(s.cancelled for s in self._waiting):
                self._waiting = deque(s for s in self._waiting if not s.cancelled)
        for seq in [s for s in self._decoding + self._prefilling if s.cancelled]:
            self._release_row(seq)

    def _fail_missing_adapters(self) -> None:
        # The registry never hands out a uid it is removing; this keeps a bug there from
        # becoming a KeyError inside the forward pass that takes every row down.
        present = set(self.runner.bank.uids)
        for seq in [s for s in self._decoding + self._prefilling if s.request.adapter_uid]:
            if seq.request.adapter_uid not in present:
                name = seq.request.adapter_name or f"uid {seq.request.adapter_uid}"
                self._fail_row(seq, NotFound(f"adapter {name!r} was unloaded before the request ran"))

    def _fail_row(self, seq: SequenceState, exc: BaseException) -> None:
        """End one request with ``exc`` and free its row; everyone else carries on."""
        self.failed_rows += 1
        self._outbox.append((seq, exc))
        self._release_row(seq)

    def _step_failed(self, seqs: list[SequenceState], exc: Exception) -> None:
        log.error(
            "engine step failed for %d request(s) %s; failing them, serving goes on",
            len(seqs),
            [s.request.request_id for s in seqs][:8],
            exc_info=exc,
        )
        for seq in seqs:
            self._fail_row(seq, StepFailedError(f"the engine step failed: {type(exc).__name__}"))

    def _admit(self) -> None:
        with self._wake:
            while self._waiting and len(self._decoding) + len(self._prefilling) < self.max_batch:
                seq = self._waiting.popleft()
                seq.row = len(self._decoding) + len(self._prefilling)
                seq.scheduled_at = time.perf_counter()
                self._prefilling.append(seq)
                self._reuse_prefix(seq)

    def _reuse_prefix(self, seq: SequenceState) -> None:
        """Start a new row from the longest cached prefix of its prompt (the prefix cache)."""
        try:
            seq.cached = self.runner.restore_prefix(seq.row, seq.request.adapter_uid, seq.request.prompt_ids)
        except Exception:  # a cache problem costs speed, never the answer: compute the prompt
            log.exception("request %s: prefix cache restore failed", seq.request.request_id)
            seq.cached = 0

    def _keep_prefix(self, seq: SequenceState) -> None:
        try:
            self.runner.save_prefix(seq.row, seq.request.adapter_uid, seq.request.prompt_ids)
        except Exception:
            log.exception("request %s: prefix cache save failed", seq.request.request_id)

    # ------------------------------------------------------------------ steps

    def _prefill_step(self) -> None:
        budget = self.prefill_chunk_tokens
        chunks: list[tuple[SequenceState, int]] = []
        for seq in sorted(self._prefilling, key=lambda s: s.row):
            if budget <= 0:
                break
            take = min(seq.prompt_left, budget)
            chunks.append((seq, take))
            budget -= take
        done = [i for i, (seq, take) in enumerate(chunks) if take == seq.prompt_left]
        finished = [chunks[i][0] for i in done]
        try:
            logits = self.runner.prefill(
                rows=[seq.row for seq, _ in chunks],
                starts=[seq.cached for seq, _ in chunks],
                chunks=[seq.request.prompt_ids[seq.cached : seq.cached + take] for seq, take in chunks],
                row_uids=[seq.request.adapter_uid for seq, _ in chunks],
                logits_for=done,
            )
            next_tokens = self._sample(finished, logits) if finished else []
        except Exception as exc:
            self._step_failed([seq for seq, _ in chunks], exc)
            return
        for seq, take in chunks:
            seq.cached += take
        for seq, token in zip(finished, next_tokens, strict=True):
            if token is None:
                self._fail_row(seq, _non_finite(seq))
                continue
            self._keep_prefix(seq)
            self._to_decoding(seq)
            self._accept(seq, token)

    def _decode_step(self) -> None:
        seqs = list(self._decoding)
        tokens = torch.tensor([[seq.generated[-1]] for seq in seqs], dtype=torch.int64)
        starts = torch.tensor([seq.cached for seq in seqs])
        try:
            logits = self.runner.forward(
                row_start=0,
                tokens=tokens,
                starts=starts,
                lengths=torch.ones(len(seqs), dtype=torch.int64),
                row_uids=[seq.request.adapter_uid for seq in seqs],
                logits_rows=range(len(seqs)),
            )
            next_tokens = self._sample(seqs, logits)
        except Exception as exc:
            self._step_failed(seqs, exc)
            return
        for seq in seqs:
            seq.cached += 1
        for seq, token in zip(seqs, next_tokens, strict=True):
            if token is None:
                self._fail_row(seq, _non_finite(seq))
            else:
                self._accept(seq, token)

    def _sample(self, seqs: list[SequenceState], logits: torch.Tensor) -> list[int | None]:
        """One token per row; None for a row whose scores are not all finite (it fails alone)."""
        finite = torch.isfinite(logits).all(dim=-1).tolist()
        good = [i for i, ok in enumerate(finite) if ok]
        tokens: list[int | None] = [None] * len(seqs)
        if good:
            rows = logits[good] if len(good) < len(seqs) else logits
            picked = sample(
                self._mask_eos([seqs[i] for i in good], rows),
                [seqs[i].request.sampling for i in good],
                [seqs[i].generator for i in good],
            )
            for i, token in zip(good, picked, strict=True):
                tokens[i] = token
        return tokens

    def _mask_eos(self, seqs: list[SequenceState], logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with EOS made impossible for rows that have fewer than min_tokens tokens (as vLLM
        does); the same tensor, untouched, when no row asks for it."""
        early = [i for i, seq in enumerate(seqs) if len(seq.generated) < seq.request.sampling.min_tokens]
        eos_ids = sorted(i for i in self.eos_ids if 0 <= i < logits.shape[-1])
        if not early or not eos_ids:
            return logits
        masked = logits.clone()
        rows = torch.tensor(early, dtype=torch.int64).unsqueeze(1)
        masked[rows, torch.tensor(eos_ids, dtype=torch.int64).unsqueeze(0)] = float("-inf")
        return masked

    def _accept(self, seq: SequenceState, token: int) -> None:
        # Detokenising (stop strings included) is per request: an error there ends that request only.
        try:
            self._accept_token(seq, token)
        except Exception as exc:
            log.exception("request %s: cannot turn token %d into text", seq.request.request_id, token)
            if seq.row >= 0:
                self._fail_row(seq, StepFailedError(f"detokenising failed: {type(exc).__name__}"))

    def _accept_token(self, seq: SequenceState, token: int) -> None:
        now = time.perf_counter()
        if not seq.generated:
            seq.first_token_at = now
        seq.generated.append(token)
        finish: FinishReason | None = None
        sampling = seq.request.sampling
        if token in self.eos_ids and not sampling.ignore_eos:
            finish = FinishReason.STOP
        else:
            # Stop strings count only past min_tokens (vLLM's rule); EOS was masked until then.
            seq.detok.push(token, check_stop=len(seq.generated) > sampling.min_tokens)
            if seq.detok.stopped:
                finish = FinishReason.STOP
            elif (
                len(seq.generated) >= sampling.max_tokens
                or len(seq.request.prompt_ids) + len(seq.generated) >= self.max_total_tokens
            ):
                finish = FinishReason.LENGTH
        if finish is None:
            delta = seq.detok.take(final=False)
            if delta:
                self._outbox.append((seq, GenerationChunk(text=delta, completion_tokens=len(seq.generated))))
            return
        seq.detok.flush()
        accepted = seq.request.accepted_at
        timings = GenerationTimings(
            queue_ms=(seq.scheduled_at - accepted) * 1000,
            ttft_ms=(seq.first_token_at - accepted) * 1000,
            total_ms=(now - accepted) * 1000,
        )
        chunk = GenerationChunk(
            text=seq.detok.take(final=True),
            completion_tokens=len(seq.generated),
            finish_reason=finish,
            timings=timings,
        )
        self._outbox.append((seq, chunk))
        self._release_row(seq)

    # ------------------------------------------------------------------ rows

    def _to_decoding(self, seq: SequenceState) -> None:
        """Move a row that finished its prompt to the end of the decoding region."""
        first_prefill_row = len(self._decoding)
        if seq.row != first_prefill_row:
            other = next(s for s in self._prefilling if s.row == first_prefill_row)
            self.runner.cache.swap_rows(seq.row, other.row, max(seq.cached, other.cached))
            other.row, seq.row = seq.row, first_prefill_row
        self._prefilling.remove(seq)
        self._decoding.append(seq)

    def _release_row(self, seq: SequenceState) -> None:
        """Free ``seq``'s row, moving the last row of its region (and of the next) down to stay compact."""
        cache = self.runner.cache
        if seq in self._decoding:
            # The decode step feeds rows in list order, so the list must mirror row order.
            last = self._decoding.pop()
            if last is not seq:
                cache.move_row(last.row, seq.row, last.cached)
                last.row = seq.row
                self._decoding[seq.row] = last
            hole = len(self._decoding)
        else:
            hole = seq.row
            self._prefilling.remove(seq)
        # Fill the hole in the prefill region with its last row.
        end = len(self._decoding) + len(self._prefilling)
        if hole < end:
            mover = next(s for s in self._prefilling if s.row == end)
            cache.move_row(mover.row, hole, mover.cached)
            mover.row = hole
        seq.row = -1

    # ------------------------------------------------------------------ delivery

    def _flush_outbox(self) -> None:
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}
        for seq, item in self._outbox:
            by_loop.setdefault(seq.loop, []).append((seq, item))
        self._outbox = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the client's loop closed: nobody listens
                loop.call_soon_threadsafe(_deliver, items)

    def _fail_all(self, exc: BaseException) -> None:
        with self._wake:
            seqs = list(self._waiting) + self._decoding + self._prefilling
            self._waiting.clear()
            ops = list(self._ops)
            self._ops.clear()
        self._decoding, self._prefilling = [], []
        self._publish_stats()
        self._outbox.extend((seq, exc) for seq in seqs)
        self._flush_outbox()
        for _, future in ops:
            if not future.done():
                future.set_exception(EngineStoppedError(str(exc)))


def _non_finite(seq: SequenceState) -> FailedPrecondition:
    adapter = f"adapter {seq.request.adapter_name!r}" if seq.request.adapter_uid else "the base model"
    return FailedPrecondition(
        f"{adapter} produced non-finite scores (NaN or infinity) for this request; it was stopped. "
        "An adapter whose weights overflow cannot serve; reload a fixed version."
    )


def _deliver(items: list[_Delivery]) -> None:
    for seq, item in items:
        seq.queue.put_nowait(item)

"""Ask a running server every (item, arm) over gRPC — what clients get, measured as clients see it.

Requests run concurrently (so the server batches them), with a progress bar; UNAVAILABLE and
RESOURCE_EXHAUSTED are retried with backoff; answers are cached (eval/cache.py). Every arm
uses the same decoding settings and the server's one prompt builder: only the style lever
(adapter, instruction, exemplars) and the context change. A request that still fails becomes a
record with ``error`` set, scored as wrong by the analysis, never dropped.

Prompting arms change only the messages sent (:mod:`hybrid_assistant.eval.prompting`); the
answer cache keys on the messages actually sent.

TLS: ``tls`` trusts the system roots; ``tls_ca`` (implies TLS) a private CA or self-signed server
certificate; ``tls_client_cert``/``tls_client_key`` present a client certificate (mutual TLS). The
files are read once, when the :class:`Runner` is made (``TlsOptionError`` if one cannot be).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from hybrid_assistant.client import AsyncAssistantClient, tls_options
from hybrid_assistant.eval.arms import Arm
from hybrid_assistant.eval.cache import AnswerCache, cache_key
from hybrid_assistant.eval.dataset import EvalItem, Exemplar, StyleSpec
from hybrid_assistant.eval.prompting import arm_messages, prompting_problems
from hybrid_assistant.eval.records import AnswerRecord
from hybrid_assistant.v1 import assistant_pb2 as pb

RUNNER_VERSION = 1  # bump when the way answers are produced changes
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}
# Every request names its whole decoding (temperature, top_p, seed, max_tokens): the server's
# defaults for requests that leave them unset (GetServerInfo.default_temperature, ...) follow
# the model and its operator, and must never leak into a measurement. top_p 1.0 is the model's
# own distribution (it changes nothing at the default temperature 0, which is greedy).
_TOP_P = 1.0


@dataclass(frozen=True)
class RunConfig:
    target: str = "localhost:50051"
    token: str | None = None
    max_tokens: int = 64
    temperature: float = 0.0  # greedy; sent explicitly, never left to the server's default
    seed: int = 0
    concurrency: int = 32
    score_options: bool = True
    retries: int = 6
    cache_path: Path | None = None
    progress: bool = True
    timeout_s: float = 600.0
    ready_timeout_s: float = 120.0  # how long to wait for the server to be SERVING
    tls: bool = False
    tls_ca: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    tls_server_name: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`AsyncAssistantClient` (token and TLS, PEM files read)."""
        return {
            "token": self.token,
            **tls_options(
                tls=self.tls,
                ca=self.tls_ca,
                client_cert=self.tls_client_cert,
                client_key=self.tls_client_key,
                server_name=self.tls_server_name,
            ),
        }


@dataclass
class RunStats:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    wall_s: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)
    # The server's prefix cache over this run (hit/miss prompt tokens): how much prompt work the
    # arms' shared prefixes and Score-after-Generate saved. Empty when the server does not report it.
    prefix_cache: dict[str, Any] = field(default_factory=dict)

    def prefix_cache_note(self) -> str | None:
        """One line for the report, or None when nothing was looked up."""
        cache = self.prefix_cache
        if not cache.get("hit_tokens", 0) + cache.get("miss_tokens", 0):
            return None
        return (
            f"Server prefix cache while answering: {cache['hit_rate']:.0%} of prompt tokens reused "
            f"({cache['hit_tokens']} of {cache['hit_tokens'] + cache['miss_tokens']}, Score included)."
        )


class EvalRunError(RuntimeError):
    """The evaluation cannot start (server unreachable, an arm's adapter missing...)."""


async def _with_retries(call: Any, retries: int) -> Any:
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _RETRYABLE or attempt == retries:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


class Runner:
    def __init__(
        self,
        config: RunConfig,
        passages: Mapping[str, str] | None = None,
        *,
        style: StyleSpec | None = None,
        exemplars: Sequence[Exemplar] = (),
    ) -> None:
        self._client_kwargs = config.client_kwargs()  # first: a bad TLS file opens nothing
        self.config = config
        self.passages = dict(passages or {})
        self.style = style
        self.exemplars = tuple(exemplars)
        self.cache = AnswerCache(config.cache_path)
        self.stats = RunStats()
        self._fingerprints: dict[str, str] = {}
        self._prefix_before: pb.PrefixCacheInfo | None = None

    def _oracle(self, item: EvalItem) -> list[pb.Passage]:
        missing = [d for d in item.gold_doc_ids if d not in self.passages]
        if missing:
            raise EvalRunError(f"item {item.id!r}: no text for gold documents {missing} (pass --documents)")
        return [
            pb.Passage(document_id=d, chunk_id=f"{d}#gold", text=self.passages[d], score=1.0)
            for d in item.gold_doc_ids
        ]

    def _request_options(self, item: EvalItem, arm: Arm) -> dict[str, Any]:
        options: dict[str, Any] = {"adapter": arm.adapter or ""}
        if arm.retrieval:
            options.update(retrieval=True, top_k=arm.top_k or 0)
        elif arm.oracle and item.gold_doc_ids:
            options["passages"] = self._oracle(item)
        return options

    def messages(self, item: EvalItem, arm: Arm) -> list[dict[str, str]]:
        """The messages this runner sends for ``item`` under ``arm``."""
        return arm_messages(item, arm, self.style, self.exemplars)

    def _key(self, item: EvalItem, arm: Arm, messages: list[dict[str, str]], options: dict[str, Any]) -> str:
        return cache_key(
            {
                "v": RUNNER_VERSION,
                "arm": arm.name,
                "messages": messages,
                "options": list(item.options or ()),
                "oracle": [p.text for p in options.get("passages", [])],
                "model": self._fingerprints["model"],
                "adapter": self._fingerprints.get(f"adapter:{arm.adapter}", ""),
                "index": self._fingerprints["index"] if arm.retrieval else "",
                "top_k": arm.top_k,
                "decoding": [self.config.max_tokens, self.config.temperature, self.config.seed],
                "score": self.config.score_options,
            }
        )

    async def _prepare(self, client: AsyncAssistantClient, arms: Sequence[Arm]) -> None:
        try:
            await client.wait_ready(timeout=self.config.ready_timeout_s)
            info = await client.server_info()
            adapters = {a.name: a for a in await client.list_adapters()}
        except (grpc.RpcError, TimeoutError) as exc:
            why = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else exc
            raise EvalRunError(
                f"cannot reach a ready server at {self.config.target}: {why} "
                "(check the address, and that TLS and its CA/client certificate match the server's)"
            ) from exc
        missing = sorted({a.adapter for a in arms if a.adapter and a.adapter not in adapters})
        if missing:
            raise EvalRunError(f"adapters {missing} are not loaded on the server; loaded: {sorted(adapters)}")
        self._prefix_before = info.prefix_cache
        self._fingerprints = {"model": info.model_fingerprint, "index": info.index_fingerprint}
        self._fingerprints.update({f"adapter:{n}": a.fingerprint for n, a in adapters.items()})
        self.stats.server = {
            "model": info.model,
            "model_fingerprint": info.model_fingerprint,
            "engine": info.engine,
            "dtype": info.dtype,
            "index_fingerprint": info.index_fingerprint,
            "embedder": info.embedder,
            # Timings in run.json are only comparable on the same CPU: record what answered.
            "cpu": info.cpu,
            "cpu_features": list(info.cpu_features),
            "adapters": {n: {"fingerprint": a.fingerprint, **dict(a.metadata)} for n, a in adapters.items()},
        }

    def client(self) -> AsyncAssistantClient:
        """A client for the configured server, with its token and TLS settings."""
        return AsyncAssistantClient(self.config.target, **self._client_kwargs)

    async def _ask(self, client: AsyncAssistantClient, item: EvalItem, arm: Arm) -> AnswerRecord:
        options = self._request_options(item, arm)
        messages = self.messages(item, arm)
        key = self._key(item, arm, messages, options)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cached += 1
            return cached
        cfg = self.config
        try:
            started = time.perf_counter()
            reply = await _with_retries(
                lambda: client.generate(
                    messages,
                    max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature,
                    top_p=_TOP_P,
                    seed=cfg.seed,
                    timeout=cfg.timeout_s,
                    **options,
                ),
                cfg.retries,
            )
            latency = (time.perf_counter() - started) * 1000
            logprobs: tuple[float, ...] | None = None
            counts: tuple[int, ...] | None = None
            if cfg.score_options and item.options:
                scored = await _with_retries(
                    lambda: client.score(
                        messages, list(item.options or ()), timeout=cfg.timeout_s, **options
                    ),
                    cfg.retries,
                )
                logprobs = tuple(s.logprob for s in scored.scores)
                counts = tuple(s.tokens for s in scored.scores)
            record = AnswerRecord(
                item_id=item.id,
                arm=arm.name,
                text=reply.text,
                contexts=tuple(c.document_id for c in reply.contexts),
                latency_ms=latency,
                ttft_ms=reply.timings.ttft_ms,
                prompt_tokens=reply.usage.prompt_tokens,
                completion_tokens=reply.usage.completion_tokens,
                option_logprobs=logprobs,
                option_token_counts=counts,
                finish_reason=_FINISH.get(reply.finish_reason),
            )
        except grpc.aio.AioRpcError as exc:
            self.stats.failed += 1
            return AnswerRecord(item_id=item.id, arm=arm.name, error=f"{exc.code().name}: {exc.details()}")
        self.cache.put(key, record)
        return record

    async def _measure_prefix_cache(self, client: AsyncAssistantClient) -> None:
        before = self._prefix_before
        try:
            after = (await client.server_info()).prefix_cache
        except grpc.aio.AioRpcError:
            return  # the answers are in; a lost statistic is not worth failing the run for
        if before is None or not after.enabled:
            return
        # Other clients' traffic counts too: the figure is the server's, over this run's window.
        hits, misses = after.hit_tokens - before.hit_tokens, after.miss_tokens - before.miss_tokens
        self.stats.prefix_cache = {
            "hit_tokens": hits,
            "miss_tokens": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            "block_tokens": after.block_tokens,
        }

    async def run(self, items: Sequence[EvalItem], arms: Sequence[Arm]) -> list[AnswerRecord]:
        """One record per (item, arm), in item-major order."""
        problems = prompting_problems(items, arms, self.style, self.exemplars)
        if problems:
            raise EvalRunError("; ".join(problems))
        jobs = [(item, arm) for item in items for arm in arms]
        limit = asyncio.Semaphore(self.config.concurrency)
        bar = tqdm(total=len(jobs), desc="answers", unit="ans", disable=not self.config.progress)
        async with self.client() as client:
            await self._prepare(client, arms)

            async def one(item: EvalItem, arm: Arm) -> AnswerRecord:
                async with limit:
                    record = await self._ask(client, item, arm)
                bar.update(1)
                return record

            started = time.perf_counter()
            try:
                records = await asyncio.gather(*(one(item, arm) for item, arm in jobs))
            finally:
                bar.close()
            self.stats.wall_s = time.perf_counter() - started
            await self._measure_prefix_cache(client)
        self.stats.requests = len(jobs)
        return list(records)


async def sequential_probe(
    config: RunConfig,
    items: Sequence[EvalItem],
    arms: Sequence[Arm],
    sample: int,
    passages: Mapping[str, str] | None = None,
    *,
    style: StyleSpec | None = None,
    exemplars: Sequence[Exemplar] = (),
) -> float:
    """Mean seconds per answer when asking one at a time (uncached), to report the batching speed-up.

    ``passages``, ``style`` and ``exemplars`` are the main run's, so the probe sends the same messages.
    """
    settings = {**config.__dict__, "concurrency": 1, "cache_path": None, "progress": False}
    probe = Runner(RunConfig(**settings), passages, style=style, exemplars=exemplars)
    # Every arm in turn (their prompts differ in length), on items spread over the dataset.
    count = min(sample, len(items) * len(arms))
    jobs = [(items[i * len(items) // count], arms[i % len(arms)]) for i in range(count)]
    started = time.perf_counter()
    async with probe.client() as client:
        await probe._prepare(client, arms)
        for item, arm in jobs:
            await probe._ask(client, item, arm)
    return (time.perf_counter() - started) / max(1, len(jobs))

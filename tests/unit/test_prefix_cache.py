"""The embedded engine's prefix cache: the block store alone, then the engine with it on and off.

Correctness first: with the cache on, greedy answers are token-for-token those of the same engine
with it off (and of Hugging Face), for shared prefixes, mixed adapters, a replaced and an unloaded
adapter, and under a budget so small that blocks are evicted all the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from hybrid_assistant.server.adapter_registry import AdapterRegistry
from hybrid_assistant.server.engines.prefix_cache import PrefixCache
from hybrid_assistant.server.engines.transformers_engine import TransformersEngine
from hybrid_assistant.testing.models import build_adapter
from tests.engine_contract import EngineEnv, prompt, reference_greedy, run

# A long shared instruction, as the eval's arms and a RAG system message have.
SHARED = "You answer briefly. " * 6
QUESTIONS = [SHARED + q for q in ("q1 hello 10", "q2 what is 7", "q3 tell me more", "q4 again")]


def _block(value: float, tokens: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (2, 1, tokens, 8)
    return torch.full(shape, value), torch.full(shape, -value)


def _fill(cache: PrefixCache, uid: int, ids: list[int]) -> None:
    missing = cache.missing_blocks(uid, ids)
    for index, key in missing:
        cache.insert(key, uid, ids[index * 4 : (index + 1) * 4], *_block(float(index)))
    cache.touch_chain([key for _, key in missing])  # as the engine does after saving a prompt


class TestBlockStore:
    def test_longest_prefix_in_whole_blocks_leaving_the_last_token(self) -> None:
        cache = PrefixCache(block_tokens=4, budget_bytes=1 << 20)
        ids = list(range(12))
        _fill(cache, 0, ids)
        assert cache.stats.blocks == 3
        # 12 tokens: 2 blocks reusable (8 tokens), the third would leave nothing to compute.
        assert [b.tokens for b in cache.lookup(0, ids)] == [(0, 1, 2, 3), (4, 5, 6, 7)]
        assert len(cache.lookup(0, [*ids, 99])) == 3
        assert len(cache.lookup(0, [0, 1, 2, 3, 4, 5, 99, 7, 8])) == 1  # differs inside block 2
        assert cache.lookup(0, [9, *ids]) == []  # same tokens, shifted: different positions

    def test_blocks_are_per_adapter_and_dropped_with_it(self) -> None:
        cache = PrefixCache(block_tokens=4, budget_bytes=1 << 20)
        ids = list(range(9))
        _fill(cache, 1, ids)
        assert cache.lookup(2, ids) == [] and cache.lookup(0, ids) == []
        assert len(cache.lookup(1, ids)) == 2
        cache.drop_adapter(1)
        assert cache.lookup(1, ids) == [] and cache.stats.blocks == 0 and cache.stats.bytes == 0

    def test_hit_and_miss_tokens_are_counted(self) -> None:
        cache = PrefixCache(block_tokens=4, budget_bytes=1 << 20)
        ids = list(range(10))
        cache.lookup(0, ids)
        _fill(cache, 0, ids)
        cache.lookup(0, ids)
        stats = cache.stats
        assert (stats.lookups, stats.hits, stats.hit_tokens, stats.miss_tokens) == (2, 1, 8, 12)
        assert stats.hit_rate == pytest.approx(8 / 20)

    def test_budget_evicts_least_recently_used_chain_tail_first(self) -> None:
        one_block = 2 * _block(0.0)[0].numel() * 4
        cache = PrefixCache(block_tokens=4, budget_bytes=3 * one_block)
        first, second = list(range(9)), list(range(100, 109))
        _fill(cache, 0, first)
        _fill(cache, 0, second)  # 4 blocks > budget of 3: the oldest (first's tail) goes
        assert cache.stats.blocks == 3 and cache.stats.bytes == 3 * one_block
        assert cache.stats.evicted_blocks == 1
        assert len(cache.lookup(0, first)) == 1  # its head survived, its tail was evicted
        assert len(cache.lookup(0, second)) == 2

    def test_off_keeps_nothing(self) -> None:
        cache = PrefixCache(block_tokens=4, budget_bytes=0)
        assert not cache.enabled and cache.missing_blocks(0, list(range(9))) == []
        assert cache.lookup(0, list(range(9))) == [] and cache.stats.lookups == 0

    def test_a_colliding_key_with_other_tokens_is_not_a_hit(self) -> None:
        cache = PrefixCache(block_tokens=4, budget_bytes=1 << 20)
        ids = list(range(9))
        (_, key), _ = cache.missing_blocks(0, ids)
        cache.insert(key, 0, [7, 7, 7, 7], *_block(1.0))  # a key whose stored tokens disagree
        assert cache.lookup(0, ids) == []


async def _engine(make_settings: Callable[..., Any], adapter_root: Path, **overrides: Any) -> EngineEnv:
    engine = TransformersEngine(make_settings(prefix_cache_block_tokens=4, **overrides))
    await engine.start()
    registry = AdapterRegistry(
        engine, lambda: engine.base_model_spec, [adapter_root], max_resident=8, max_rank=64
    )
    return EngineEnv(engine, registry, {})


async def _answers(env: EngineEnv, plan: list[tuple[str, str]], concurrent: bool) -> list[str]:
    if concurrent:
        results = await asyncio.gather(*(run(env, q, a, max_tokens=10) for q, a in plan))
    else:
        results = [await run(env, q, a, max_tokens=10) for q, a in plan]
    return [text for text, _ in results]


def _stats(env: EngineEnv) -> Any:
    return env.engine._require_runner().prefix.stats  # type: ignore[attr-defined]


@pytest.mark.parametrize("budget_mb", [512.0, 0.06], ids=["roomy", "evicting"])
async def test_cache_on_answers_exactly_as_cache_off(
    make_settings: Callable[..., Any],
    adapter_root: Path,
    tiny_adapters: dict[str, Path],
    tiny_model_dir: Path,
    budget_mb: float,
) -> None:
    on = await _engine(make_settings, adapter_root, prefix_cache_mb=budget_mb)
    off = await _engine(make_settings, adapter_root, prefix_cache_mb=0)
    try:
        for env in (on, off):
            for name in ("alpha", "beta"):
                await env.registry.load(name, str(tiny_adapters[name]))
        plan = [(q, a) for a in ("", "alpha", "beta") for q in QUESTIONS]
        for concurrent in (False, True, True):
            assert await _answers(on, plan, concurrent) == await _answers(off, plan, concurrent)
        stats = _stats(on)
        assert stats.hit_tokens > 0
        if budget_mb < 1:  # room for about 15 blocks of 4 tokens: evicting all along
            assert stats.evicted_blocks > 0 and stats.bytes <= 0.06 * 2**20

        # Replacing an adapter: the new version's answers, never blocks computed under the old one.
        replacement = build_adapter(
            tiny_model_dir, adapter_root / "alpha-v2", seed=7, targets=("k_proj", "v_proj")
        )
        for env in (on, off):
            await env.registry.load("alpha", str(replacement), replace=True)
        plan = [(q, "alpha") for q in QUESTIONS]
        assert await _answers(on, plan, False) == await _answers(off, plan, False)

        # Unloading gives the blocks' memory back.
        async with on.registry.use("beta") as lease:
            beta_uid = lease.uid
        blocks = on.engine._require_runner().prefix._blocks  # type: ignore[attr-defined]
        before = stats.blocks
        for env in (on, off):
            await env.registry.unload("beta")
        assert all(block.adapter_uid != beta_uid for block in blocks.values())
        if budget_mb > 1:
            assert stats.blocks < before
    finally:
        await on.engine.close()
        await off.engine.close()


async def test_hit_answers_equal_hugging_face(
    make_settings: Callable[..., Any], adapter_root: Path, tiny_model_dir: Path
) -> None:
    env = await _engine(make_settings, adapter_root)
    try:
        await run(env, QUESTIONS[0], max_tokens=4)
        hits = _stats(env).hit_tokens
        text, _ = await run(env, QUESTIONS[1], max_tokens=10, ignore_eos=True)
        assert _stats(env).hit_tokens > hits  # the shared instruction came from the cache
    finally:
        await env.engine.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    expected = reference_greedy(model, prompt(env, QUESTIONS[1]), 10)
    assert text == env.engine.tokenizer.decode(expected, skip_special_tokens=True)


async def test_score_after_generate_prefills_only_the_last_partial_block(
    make_settings: Callable[..., Any], adapter_root: Path
) -> None:
    on = await _engine(make_settings, adapter_root)
    off = await _engine(make_settings, adapter_root, prefix_cache_mb=0)
    try:
        ids = prompt(on, QUESTIONS[2])
        continuations = [[5, 6, 7], [9]]
        await run(on, QUESTIONS[2], max_tokens=3)
        before = _stats(on).miss_tokens
        scored = await on.engine.score(ids, continuations, 0)
        computed = _stats(on).miss_tokens - before
        assert 1 <= computed <= 4  # whole blocks reused; at most one block's worth recomputed
        expected = await off.engine.score(ids, continuations, 0)
        for got, want in zip(scored, expected, strict=True):
            assert got.logprob == pytest.approx(want.logprob, abs=1e-4) and got.greedy == want.greedy
    finally:
        await on.engine.close()
        await off.engine.close()

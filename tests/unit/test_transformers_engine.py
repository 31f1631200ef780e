"""The engine contract on the embedded transformers engine (tiny model), plus its own checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import REGISTRY
from transformers import AutoModelForCausalLM

from hybrid_assistant.server.adapter_registry import AdapterRegistry
from hybrid_assistant.server.engines.transformers_engine import TransformersEngine
from hybrid_assistant.server.engines.types import GenerationRequest, SamplingParams
from tests.engine_contract import QUESTIONS, EngineContract, EngineEnv, prompt, run, started_env


@pytest.fixture(scope="module")
async def engine_env(
    tiny_model_dir: Path, adapter_root: Path, tiny_adapters: dict[str, Path], tmp_path_factory: Any
) -> AsyncIterator[EngineEnv]:
    from hybrid_assistant.server.config import load_settings

    settings = load_settings(
        None,
        model_path=tiny_model_dir,
        data_dir=tmp_path_factory.mktemp("engine-data"),
        adapter_roots=[adapter_root],
        max_total_tokens=512,
        max_prompt_tokens=384,
        threads=1,
    )
    env = await started_env(TransformersEngine(settings), adapter_root, tiny_adapters)
    yield env
    await env.engine.close()


class TestTransformersEngineContract(EngineContract):
    pass


async def test_score_matches_a_plain_forward_pass(engine_env: EngineEnv, tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = engine_env.engine.tokenizer
    ids = prompt(engine_env, QUESTIONS[0])
    texts = [" Paris", "x", " The capital of France is Paris, of course."]
    continuations = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert len(continuations[1]) == 1 and len(continuations[2]) > len(continuations[0]) > 1
    scores = await engine_env.engine.score(ids, continuations, 0)
    for continuation, score in zip(continuations, scores, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([ids + continuation])).logits[0].log_softmax(-1)
        expected = sum(float(logits[len(ids) - 1 + i, t]) for i, t in enumerate(continuation))
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.tokens == len(continuation)


async def test_long_prompt_is_prefilled_in_chunks(
    tiny_model_dir: Path, make_settings: Callable[..., Any]
) -> None:
    engine = TransformersEngine(make_settings(prefill_chunk_tokens=16))
    await engine.start()
    try:
        registry = AdapterRegistry(engine, lambda: engine.base_model_spec, [], max_resident=1, max_rank=8)
        env = EngineEnv(engine, registry, {})
        question = " ".join(QUESTIONS * 3)
        chunked, _ = await run(env, question, max_tokens=8)
    finally:
        await engine.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = prompt(env, question)
    expected = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids) :]
    assert chunked == engine.tokenizer.decode(expected, skip_special_tokens=True)


def _scheduler_gauge() -> dict[str, float | None]:
    name = "hybrid_assistant_scheduler_sequences"
    return {s: REGISTRY.get_sample_value(name, {"state": s}) for s in ("waiting", "prefilling", "decoding")}


async def _until(expected: dict[str, float | None], timeout: float = 30) -> None:
    """Wait for the gauge to read ``expected`` (it is set by the scheduler thread)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                if _scheduler_gauge() == expected:
                    return
                await asyncio.sleep(0.005)
    assert _scheduler_gauge() == expected


async def test_scheduler_gauge_counts_requests_in_each_state(make_settings: Callable[..., Any]) -> None:
    engine = TransformersEngine(make_settings(max_batch_size=1))
    await engine.start()
    try:
        registry = AdapterRegistry(engine, lambda: engine.base_model_spec, [], max_resident=1, max_rank=8)
        ids = prompt(EngineEnv(engine, registry, {}), QUESTIONS[0])
        params = SamplingParams(max_tokens=400, temperature=0.0)
        first = engine.generate(GenerationRequest("a", ids, params))
        second = engine.generate(GenerationRequest("b", ids, params))
        await anext(first)  # "a" has its first token: it is decoding in the only row
        await _until({"waiting": 0.0, "prefilling": 0.0, "decoding": 1.0})
        pending = asyncio.ensure_future(anext(second))  # submitted, no free row: waiting
        await _until({"waiting": 1.0, "prefilling": 0.0, "decoding": 1.0})
        await first.aclose()  # frees the row for "b"
        await pending
        await _until({"waiting": 0.0, "prefilling": 0.0, "decoding": 1.0})
        await second.aclose()
        await _until({"waiting": 0.0, "prefilling": 0.0, "decoding": 0.0})
    finally:
        await engine.close()

"""The engine contract on the embedded transformers engine (tiny model), plus its own checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from hybrid_assistant.server.adapter_registry import AdapterRegistry
from hybrid_assistant.server.engines.transformers_engine import TransformersEngine
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

"""The engine contract on the embedded transformers engine (tiny model), plus its own checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from server.adapter_registry import AdapterRegistry
from server.engines.transformers_engine import TransformersEngine
from tests.engine_contract import QUESTIONS, EngineContract, EngineEnv, prompt, run


@pytest.fixture(scope="module")
async def engine_env(
    tiny_model_dir: Path, adapter_root: Path, tiny_adapters: dict[str, Path], tmp_path_factory: Any
) -> AsyncIterator[EngineEnv]:
    from server.config import load_settings

    settings = load_settings(
        None,
        model_path=tiny_model_dir,
        data_dir=tmp_path_factory.mktemp("engine-data"),
        adapter_roots=[adapter_root],
        max_total_tokens=512,
        max_prompt_tokens=384,
        threads=1,
    )
    engine = TransformersEngine(settings)
    await engine.start()
    registry = AdapterRegistry(
        engine, lambda: engine.base_model_spec, [adapter_root], max_resident=8, max_rank=64
    )
    yield EngineEnv(engine, registry, dict(tiny_adapters))
    await engine.close()


class TestTransformersEngineContract(EngineContract):
    pass


async def test_greedy_matches_hugging_face_generate(engine_env: EngineEnv, tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for question in QUESTIONS:
        ids = prompt(engine_env, question)
        expected = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :]
        eos = model.generation_config.eos_token_id
        expected_ids = [t for t in expected.tolist() if t != eos]
        text, _ = await run(engine_env, question, max_tokens=12)
        reference = engine_env.engine.tokenizer.decode(expected_ids, skip_special_tokens=True)
        assert text == reference


async def test_adapter_matches_peft(engine_env: EngineEnv, tiny_model_dir: Path) -> None:
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, str(engine_env.adapters["beta"]))
    if "beta" not in engine_env.registry.names():
        await engine_env.registry.load("beta", str(engine_env.adapters["beta"]))
    ids = prompt(engine_env, QUESTIONS[1])
    expected = peft_model.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False)
    reference = engine_env.engine.tokenizer.decode(expected[0, len(ids) :], skip_special_tokens=True)
    text, _ = await run(engine_env, QUESTIONS[1], "beta", max_tokens=10)
    assert text == reference


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

"""The engine contract on VllmEngine (vLLM's AsyncLLM, tiny model, CPU), plus vLLM-only checks.

One engine for the module: starting vLLM spawns two processes and takes ~20-30 s on CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from hybrid_assistant.server.engines.vllm_engine import VllmEngine
from tests.engine_contract import (
    QUESTIONS,
    EngineContract,
    EngineEnv,
    ensure_loaded,
    prompt,
    run,
    started_env,
)

pytestmark = pytest.mark.vllm

KV_CACHE_BYTES = 64 << 20  # plenty for the tiny model; vLLM's CPU default would claim most of the RAM


@pytest.fixture(scope="module")
async def engine_env(
    tiny_model_dir: Path, adapter_root: Path, tiny_adapters: dict[str, Path], tmp_path_factory: Any
) -> AsyncIterator[EngineEnv]:
    from hybrid_assistant.server.config import load_settings

    settings = load_settings(
        None,
        engine="vllm",
        model_path=tiny_model_dir,
        data_dir=tmp_path_factory.mktemp("vllm-engine-data"),
        adapter_roots=[adapter_root],
        max_total_tokens=512,
        max_prompt_tokens=384,
        max_batch_size=16,
        max_resident_adapters=8,
        vllm={"kv_cache_memory_bytes": KV_CACHE_BYTES, "max_loras": 4},
    )
    env = await started_env(VllmEngine(settings), adapter_root, tiny_adapters)
    yield env
    await env.engine.close()


class TestVllmEngineContract(EngineContract):
    pass


async def test_vllm_holds_exactly_the_registry_adapters(engine_env: EngineEnv) -> None:
    engine = engine_env.engine
    assert isinstance(engine, VllmEngine)
    await ensure_loaded(engine_env, "alpha")
    await engine_env.registry.load("delta", str(engine_env.adapters["beta"]))
    assert await engine.engine_adapter_uids() == engine.resident_adapter_uids()
    before = engine.resident_adapter_uids()
    await engine_env.registry.unload("delta")
    after = await engine.engine_adapter_uids()  # remove_lora: vLLM itself no longer holds it
    assert after == engine.resident_adapter_uids()
    assert len(after) == len(before) - 1


async def test_score_with_an_adapter_amid_other_requests_matches_peft(
    engine_env: EngineEnv, tiny_model_dir: Path
) -> None:
    # Regression guard: vLLM's prompt_logprobs path crashes a LoRA engine once a batch holds
    # two sequences (vllm#16668), so scoring must not use it.
    from peft import PeftModel

    await ensure_loaded(engine_env, "alpha", "beta")
    tokenizer = engine_env.engine.tokenizer
    ids = prompt(engine_env, QUESTIONS[0])
    continuations = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (" Paris", " a cat")]
    async with engine_env.registry.use("beta") as lease:
        scores, *_ = await asyncio.gather(
            engine_env.engine.score(ids, continuations, lease.uid),
            run(engine_env, QUESTIONS[1], max_tokens=8),
            run(engine_env, QUESTIONS[2], "alpha", max_tokens=8),
        )
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(engine_env.adapters["beta"])
    )
    for continuation, score in zip(continuations, scores, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + continuation])).logits[0].log_softmax(-1)
        rows = logits[len(ids) - 1 : len(ids) - 1 + len(continuation)]
        expected = sum(float(rows[i, t]) for i, t in enumerate(continuation))
        assert score.tokens == len(continuation)
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.greedy == bool((rows.argmax(-1) == torch.tensor(continuation)).all())

"""End to end on the real base model: conversion, answers, adapters, batching, scoring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hybrid_assistant.client import AssistantClient, AsyncAssistantClient
from hybrid_assistant.server.model_store import model_fingerprint, resolve_model
from hybrid_assistant.server.sampling_defaults import ModelSampling, read_model_sampling
from hybrid_assistant.testing.models import build_adapter
from tests.helpers import ServerThread

pytestmark = pytest.mark.slow


def test_conversion_is_cached_and_complete(smol_data_dir: Path, smol_model_dir: Path) -> None:
    before = (smol_model_dir / "model.safetensors").stat().st_mtime_ns
    resolved = resolve_model(None, None, smol_data_dir / "models")
    assert resolved.path == smol_model_dir
    assert (smol_model_dir / "model.safetensors").stat().st_mtime_ns == before  # not converted again
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in smol_model_dir.iterdir()
    }
    assert "quantization_config" not in (smol_model_dir / "config.json").read_text()
    assert model_fingerprint(smol_model_dir) == model_fingerprint(smol_model_dir)
    # The model card's sampling, written at conversion (GGUF carries none).
    assert read_model_sampling(smol_model_dir) == ModelSampling(temperature=0.2, top_p=0.9)


def test_answers_a_known_fact(smol_server: ServerThread) -> None:
    with AssistantClient(smol_server.target) as client:
        reply = client.generate("What is the capital of France?", temperature=0, max_tokens=24)
        info = client.server_info()
    assert "Paris" in reply.text
    assert info.model == "SmolLM2-135M-Instruct"
    assert (info.default_temperature, info.default_top_p) == (pytest.approx(0.2), pytest.approx(0.9))
    assert info.sampling_defaults_source == "generation_config"


def test_scoring_prefers_the_right_answer(smol_server: ServerThread) -> None:
    with AssistantClient(smol_server.target) as client:
        reply = client.score("What is the capital of France?", ["Paris", "Madrid", "Berlin"])
    assert reply.scores[0].logprob > max(s.logprob for s in reply.scores[1:])


def test_adapter_and_mixed_batch_on_smollm2(smol_server: ServerThread, smol_model_dir: Path) -> None:
    root: Path = smol_server.adapter_root  # type: ignore[attr-defined]
    build_adapter(
        smol_model_dir, root / "noise", seed=5, rank=8, targets=("q_proj", "v_proj", "down_proj"), scale=40
    )
    questions = ["Name three colours.", "What is 2 + 2?", "Write one sentence about the sea."]

    async def scenario() -> tuple[list[str], list[str], str]:
        async with AsyncAssistantClient(smol_server.target) as client:
            await client.load_adapter("noise", "noise")
            jobs = [(q, a) for q in questions for a in ("", "noise")]
            alone = [
                (await client.generate(q, adapter=a, temperature=0, max_tokens=16)).text for q, a in jobs
            ]
            together = await asyncio.gather(
                *(client.generate(q, adapter=a, temperature=0, max_tokens=16) for q, a in jobs)
            )
            listed = (await client.list_adapters())[0].name
            await client.unload_adapter("noise")
            return alone, [r.text for r in together], listed

    alone, together, listed = asyncio.run(scenario())
    assert listed == "noise"
    assert together == alone
    assert alone[0] != alone[1]  # the adapter changes SmolLM2's answer

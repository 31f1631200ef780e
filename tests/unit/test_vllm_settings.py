"""The vLLM engine's settings and how the server's limits map onto vLLM's (no vLLM needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hybrid_assistant.server.config import load_settings
from hybrid_assistant.server.engines.vllm_settings import CPU_KV_CACHE_BYTES, engine_kwargs, vllm_lora_rank


def kwargs(on_cpu: bool = True, **overrides: Any) -> dict[str, Any]:
    settings = load_settings(None, engine="vllm", **overrides)
    return engine_kwargs(settings, Path("/models/m"), "m", 1024, on_cpu=on_cpu)


def test_server_limits_map_onto_vllm_arguments() -> None:
    args = kwargs(max_batch_size=12, max_lora_rank=12, max_resident_adapters=6, dtype="bfloat16")
    assert args["max_num_seqs"] == 12
    assert args["max_model_len"] == 1024
    assert args["max_lora_rank"] == 16  # rounded up to a rank vLLM's kernels support
    assert args["max_cpu_loras"] == 6  # vLLM never evicts what the registry keeps resident
    assert args["dtype"] == "bfloat16"
    assert args["enable_lora"] is True


def test_cpu_defaults_and_gpu_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu, gpu = kwargs(on_cpu=True), kwargs(on_cpu=False)
    assert cpu["kv_cache_memory_bytes"] == CPU_KV_CACHE_BYTES and cpu["enforce_eager"] is True
    assert "kv_cache_memory_bytes" not in gpu and gpu["enforce_eager"] is False
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in kwargs(on_cpu=True)  # vLLM reads its own variable


def test_nested_settings_from_the_environment_and_extra_engine_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HA_VLLM__KV_CACHE_MEMORY_BYTES", str(64 << 20))
    monkeypatch.setenv("HA_VLLM__ENGINE_ARGS", '{"max_num_batched_tokens": 4096, "max_loras": 3}')
    args = kwargs()
    assert args["kv_cache_memory_bytes"] == 64 << 20
    assert args["max_num_batched_tokens"] == 4096
    assert args["max_loras"] == 3  # engine_args win


def test_lora_rank_rounding() -> None:
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 9, 64, 512)] == [1, 8, 8, 16, 64, 512]
    with pytest.raises(ValueError, match="above vLLM's largest"):
        vllm_lora_rank(1024)

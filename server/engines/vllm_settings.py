"""Settings of the vLLM engine (``engine = "vllm"``); plain pydantic, importable without vLLM.

The server-level limits map onto vLLM's own arguments, so both engines read the same config:
``max_batch_size`` -> ``max_num_seqs``, ``max_total_tokens`` -> ``max_model_len``,
``max_lora_rank`` -> ``max_lora_rank`` (rounded up to a size vLLM supports),
``max_queue`` -> ``max_num_queued_reqs`` (on top of the running batch), ``dtype`` -> ``dtype``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings

# Ranks vLLM's LoRA kernels are built for (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
CPU_KV_CACHE_BYTES = 1 << 30


class VllmSettings(BaseModel):
    """Knobs of vLLM's AsyncLLM that the server does not already own. Environment: HA_VLLM__<FIELD>."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    max_loras: int = Field(default=4, ge=1)
    """Adapters usable in one batch (vLLM's LoRA slots). Requests for more adapters wait for a slot."""
    max_cpu_loras: int | None = Field(default=None, ge=1)
    """Size of vLLM's own adapter cache. Default: max_resident_adapters, so that the server's
    registry (pinning, LRU, deferred unload), not vLLM, decides which adapters stay in memory."""
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    """KV-cache size in bytes. Default: 1 GiB on CPU (vLLM would otherwise claim
    gpu_memory_utilization of all RAM); on GPU, what gpu_memory_utilization leaves."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory vLLM may use (weights + activations + KV cache)."""
    enforce_eager: bool | None = None
    """Skip CUDA graphs / torch.compile. Default: eager on CPU (compiling there costs ~70 s per
    start and gains nothing measurable), graphs on GPU."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs one model is split across (tensor parallel)."""
    pipeline_parallel_size: int = Field(default=1, ge=1)
    """Pipeline stages (GPUs or nodes) the layers are split across."""
    enable_prefix_caching: bool | None = None
    """Reuse the KV cache of shared prompt prefixes. Default: vLLM's (on)."""
    seed: int = 0
    """vLLM's global seed (per-request seeds still make sampled answers reproducible)."""
    log_stats: bool = False
    """vLLM's own statistics: periodic throughput logs, vllm:* Prometheus metrics (served on
    metrics_port) and the per-request scheduler queue time in queue_ms (0 when off)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Any other AsyncEngineArgs field, passed as is; wins over everything above,
    e.g. {"max_num_batched_tokens": 8192, "quantization": "fp8"}."""


def vllm_lora_rank(max_rank: int) -> int:
    """The smallest rank vLLM supports that holds adapters of ``max_rank``."""
    for rank in VLLM_LORA_RANKS:
        if rank >= max_rank:
            return rank
    raise ValueError(f"max_lora_rank {max_rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")


def engine_kwargs(
    settings: Settings, model_dir: Path, model_name: str, max_context: int, *, on_cpu: bool
) -> dict[str, Any]:
    """AsyncEngineArgs for ``settings``: the server's limits mapped onto vLLM's, then ``engine_args``."""
    v = settings.vllm
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "tokenizer": str(model_dir),
        "served_model_name": model_name,
        "dtype": settings.dtype,
        "max_model_len": max_context,
        "max_num_seqs": settings.max_batch_size,
        "enable_lora": True,
        "max_loras": v.max_loras,
        "max_lora_rank": vllm_lora_rank(settings.max_lora_rank),
        "max_cpu_loras": max(v.max_cpu_loras or settings.max_resident_adapters, v.max_loras),
        "seed": v.seed,
        "disable_log_stats": not v.log_stats,
        "tensor_parallel_size": v.tensor_parallel_size,
        "pipeline_parallel_size": v.pipeline_parallel_size,
        "gpu_memory_utilization": v.gpu_memory_utilization,
        "enforce_eager": on_cpu if v.enforce_eager is None else v.enforce_eager,
    }
    kv_bytes = v.kv_cache_memory_bytes
    if kv_bytes is None and on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kv_bytes = CPU_KV_CACHE_BYTES
    if kv_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = kv_bytes
    if v.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = v.enable_prefix_caching
    kwargs.update(v.engine_args)
    return kwargs

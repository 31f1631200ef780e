"""What the CPU can do, read once at start: the kernels and dtype paths that are fast differ a lot
between machines (an AMX Xeon runs bfloat16 GEMMs several times faster than float32; an
AVX2-only EPYC has no bfloat16 instructions at all, and bfloat16 there is slower than float32).

Reported in GetServerInfo, logged at start, written into every benchmark's JSON, and used to
warn when a setting asks for a path this CPU runs slowly.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

# The vector ISA flags that decide which kernels oneDNN/MKL pick (in /proc/cpuinfo's spelling).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class CpuInfo:
    model: str
    isa: tuple[str, ...]
    cores: int
    torch_capability: str  # the kernel level torch dispatches to ("AVX2", "AVX512", "AMX"...)

    @property
    def native_bf16(self) -> bool:
        """bfloat16 math in hardware (AVX512-BF16 or AMX); without it bfloat16 is emulated, slowly."""
        return bool(BF16_FLAGS & set(self.isa))

    def summary(self) -> str:
        flags = ", ".join(self.isa) or "no AVX2"
        return f"{self.model} ({self.cores} cores; {flags}; torch {self.torch_capability})"


def _read_cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:
        pass  # not Linux: the model name from platform, no flags
    return model, flags


@functools.cache
def cpu_info() -> CpuInfo:
    model, flags = _read_cpuinfo()
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = "unknown"
    return CpuInfo(
        model=model,
        isa=tuple(f for f in ISA_FLAGS if f in flags),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        torch_capability=capability,
    )


def dtype_warning(dtype: str, cpu: CpuInfo) -> str | None:
    """Why ``dtype`` will be slow on this CPU, or None."""
    if dtype == "bfloat16" and not cpu.native_bf16:
        return (
            f"dtype=bfloat16 on a CPU without bfloat16 instructions ({cpu.model}: no avx512_bf16/amx_bf16): "
            "torch emulates it, usually slower than float32. Use --dtype float32 here."
        )
    return None

"""CPU feature detection: what the server reports and when it warns about a slow dtype."""

from __future__ import annotations

from hybrid_assistant.server.cpu import ISA_FLAGS, CpuInfo, cpu_info, dtype_warning

AVX2_EPYC = CpuInfo("AMD EPYC 7B13", ("avx2", "fma"), 2, "AVX2")
AMX_XEON = CpuInfo("Intel Xeon 8481C", ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"), 2, "AMX")


def test_this_machine_is_read() -> None:
    cpu = cpu_info()
    assert cpu.model and cpu.cores >= 1 and cpu.torch_capability
    assert set(cpu.isa) <= set(ISA_FLAGS)
    assert cpu.model in cpu.summary()


def test_bfloat16_warns_only_without_bf16_instructions() -> None:
    warning = dtype_warning("bfloat16", AVX2_EPYC)
    assert warning is not None and "AMD EPYC 7B13" in warning and "float32" in warning
    assert not AVX2_EPYC.native_bf16 and AMX_XEON.native_bf16
    assert dtype_warning("bfloat16", AMX_XEON) is None
    assert dtype_warning("float32", AVX2_EPYC) is None

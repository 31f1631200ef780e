"""Where the row GEMV kernel cannot run, the engine says why and keeps its other products."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybrid_assistant.server.cpu import CpuInfo
from hybrid_assistant.server.engines import row_gemv
from hybrid_assistant.server.engines.model_runner import ModelRunner


def _forward_works(runner: ModelRunner) -> None:
    out = runner.forward(
        0, torch.tensor([[5, 6, 7]]), torch.zeros(1, dtype=torch.int64), torch.tensor([3]), [0], [0]
    )
    assert out.shape == (1, runner.vocab_size) and torch.isfinite(out).all()


def test_turned_off_or_another_dtype(tiny_model_dir: Path) -> None:
    assert "float32 only" in (row_gemv.unavailable(torch.bfloat16) or "")
    for dtype, gemv_max_rows in ((torch.float32, 0), (torch.bfloat16, 2)):
        runner = ModelRunner(
            tiny_model_dir, dtype=dtype, max_rows=4, max_tokens=64, model_name="tiny",
            aliases={str(tiny_model_dir)}, gemv_max_rows=gemv_max_rows,
        )  # fmt: skip
        assert runner.gemv_rows == 0
        _forward_works(runner)


def test_a_cpu_without_avx2_is_not_offered_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    old = CpuInfo(model="old", isa=("fma",), cores=2, torch_capability="DEFAULT")
    monkeypatch.setattr(row_gemv, "cpu_info", lambda: old)
    row_gemv._build.cache_clear()
    try:
        assert row_gemv.unavailable(torch.float32) == "the CPU lacks avx2"
    finally:
        row_gemv._build.cache_clear()


def test_a_failed_build_falls_back_with_its_reason(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "row_gemv.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(row_gemv, "SOURCE", broken)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))  # not the real build
    row_gemv._build.cache_clear()
    try:
        reason = row_gemv.unavailable(torch.float32)
        assert reason is not None and reason.startswith("building row_gemv.cpp failed"), reason
        runner = ModelRunner(
            tiny_model_dir, dtype=torch.float32, max_rows=4, max_tokens=64, model_name="tiny",
            aliases={str(tiny_model_dir)},
        )  # fmt: skip
        assert runner.gemv_rows == 0 and runner.prepacked
        _forward_works(runner)
    finally:
        row_gemv._build.cache_clear()


def test_a_kernel_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class OffByOne:
        @staticmethod
        def row_gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return x @ weight.T + 1.0

    monkeypatch.setattr(row_gemv, "_build", lambda: (OffByOne, None))
    assert row_gemv.unavailable(torch.float32) == "the row GEMV kernel disagrees with F.linear"

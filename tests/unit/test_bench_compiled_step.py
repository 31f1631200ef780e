"""bench/compiled_step.py on the tiny model: the compiled step must answer as the eager one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch._dynamo

from bench.compiled_step import measure
from hybrid_assistant.server.engines.model_runner import ModelRunner


@pytest.mark.skipif(shutil.which("c++") is None, reason="inductor compiles C++ on CPU: no compiler here")
def test_measure_times_three_ways_and_checks_greedy_agreement(tiny_model_dir: Path) -> None:
    def runner(prepack: bool) -> ModelRunner:
        return ModelRunner(
            tiny_model_dir,
            dtype=torch.float32,
            max_rows=2,
            max_tokens=32,
            model_name="tiny-llama",
            aliases=set(),
            prepack=prepack,
        )

    packed, plain = runner(True), runner(False)
    assert plain.lean is not None
    torch._dynamo.reset()
    with torch._dynamo.config.patch(cache_size_limit=64):
        row = measure(packed, plain, torch.compile(plain.lean._layer, dynamic=False), 2, 16, 4)
    assert row["greedy equal"] is True
    assert row["max logit diff"] < 1e-3
    assert all(row[f"{name} ms"] > 0 for name in ("lean, prepacked", "lean, plain", "compiled, plain"))
    assert row["compile s"] > 0
    assert "_layer" not in vars(plain.lean), "the runner is left on its eager layer"

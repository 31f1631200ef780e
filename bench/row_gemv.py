"""The row GEMV kernel (server/engines/row_gemv.cpp) against torch's products, and the decode step.

Three parts, all in one process:

1. **Limits**: the machine's read rate (a ``sum`` over 256 MiB on torch's threads: a matrix-
   vector product only reads its weights) and copy rate (as ``bench/roofline.py`` measures it).
2. **Products**: every product of one SmolLM2 decode step (each layer's fused q/k/v, o, fused
   gate/up and down, then the LM head; 543 MB of float32 weights, read from memory, not cache)
   at 1–4 rows, three ways interleaved: the kernel, oneDNN on prepacked weights (the engine's
   product without the kernel) and ``F.linear``. Each as ms, GB/s of weights and the share of the
   read rate reached.
3. **Steps**: whole decode steps of the model runner (no scheduler, no gRPC) with the kernel on
   (``gemv_max_rows``' default, 3) and off, interleaved step by step, at 1–4 rows; and a
   greedy check: 24 tokens decoded one row at a time on both runners must be the same.

    python bench/row_gemv.py            # writes bench/results/row-gemv.json
    python bench/row_gemv.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from bench.harness import table, write_results
from bench.roofline import stream_copy_gbps
from hybrid_assistant.server.engines.model_runner import ModelRunner
from hybrid_assistant.server.engines.packed_linear import packed

ROWS = (1, 2, 3, 4)
CONTEXT = 128


def read_gbps(mib: int = 256, seconds: float = 1.5) -> float:
    """Sustained read bandwidth: ``sum`` over a tensor much larger than the caches, torch's threads."""
    src = torch.rand(mib * 2**20 // 4)
    for _ in range(2):
        src.sum()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        src.sum()
        count += 1
    return src.numel() * 4 * count / (time.perf_counter() - started) / 1e9


def step_weights(runner: ModelRunner) -> list[torch.Tensor]:
    """The plain weights of one decode step's products, in the order a step reads them."""
    assert runner.lean is not None
    weights: list[torch.Tensor] = []
    for layer in runner.lean.layers:
        attention: Any = layer.attention
        mlp: Any = runner.model.model.layers[layer.index].mlp
        weights += [layer.qkv, attention.o_proj.base.weight, layer.gate_up, mlp.down_proj.base.weight]
    return [*weights, runner.lm_head.weight]


def product_rows(runner: ModelRunner, read_rate: float, repeats: int) -> list[dict[str, Any]]:
    assert runner.gemv_rows, "the kernel must be available to compare it"
    from hybrid_assistant.server.engines import row_gemv

    module, _ = row_gemv._build()
    weights = step_weights(runner)
    mb = sum(w.numel() * 4 for w in weights) / 1e6
    reordered = [packed(w, rows_hint=32) for w in weights]
    out = []
    for rows in ROWS:
        inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
        ways: dict[str, Callable[[int, torch.Tensor], Any]] = {
            "kernel": lambda i, x: module.row_gemv(x, weights[i]),
            "oneDNN prepacked": lambda i, x: reordered[i](x),
            "F.linear": lambda i, x: F.linear(x, weights[i]),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        with torch.inference_mode():
            for w in weights:  # every way gives the same product
                x = inputs[w.shape[1]]
                torch.testing.assert_close(module.row_gemv(x, w), F.linear(x, w), atol=1e-3, rtol=1e-4)
            for _ in range(repeats + 1):
                for name, call in ways.items():
                    started = time.perf_counter()
                    for i, w in enumerate(weights):
                        call(i, inputs[w.shape[1]])
                    times[name].append(time.perf_counter() - started)
        ms = {name: statistics.median(values[1:]) * 1000 for name, values in times.items()}
        row: dict[str, Any] = {"rows": rows}
        for name, value in ms.items():
            row[f"{name} ms"] = value
            row[f"{name} GB/s"] = mb / value
        row["kernel ÷ prepacked"] = ms["oneDNN prepacked"] / ms["kernel"]
        row["kernel share of read rate"] = mb / ms["kernel"] / read_rate
        row["read-bound ms"] = mb / read_rate
        out.append(row)
    return out


def step_rows(on: ModelRunner, off: ModelRunner, steps: int) -> list[dict[str, Any]]:
    out = []
    for rows in ROWS:
        generator = torch.Generator().manual_seed(rows)
        prompt = torch.randint(5000, 20000, (rows, CONTEXT), generator=generator)
        token = torch.randint(5000, 20000, (rows, 1), generator=generator)
        uids, where = [0] * rows, list(range(rows))
        times: dict[str, list[float]] = {"kernel on": [], "kernel off": []}
        with torch.inference_mode():
            for each in (on, off):
                zeros = torch.zeros(rows, dtype=torch.int64)
                each.forward(0, prompt, zeros, torch.full((rows,), CONTEXT), uids, where)
            starts = torch.full((rows,), CONTEXT, dtype=torch.int64)  # rewritten each step
            ones = torch.ones(rows, dtype=torch.int64)
            for _ in range(steps + 2):
                for name, each in (("kernel on", on), ("kernel off", off)):
                    started = time.perf_counter()
                    each.forward(0, token, starts, ones, uids, where)
                    times[name].append(time.perf_counter() - started)
        ms = {name: statistics.median(values[2:]) * 1000 for name, values in times.items()}
        out.append(
            {
                "rows": rows,
                "kernel on ms": ms["kernel on"],
                "kernel off ms": ms["kernel off"],
                "speed-up": ms["kernel off"] / ms["kernel on"],
                "tok/s on": rows * 1000 / ms["kernel on"],
                "tok/s off": rows * 1000 / ms["kernel off"],
                "kernel used": rows <= on.gemv_rows,
            }
        )
    return out


def greedy_tokens(runner: ModelRunner, prompt: list[int], count: int) -> list[int]:
    """Greedy decoding of one row, straight on the runner."""
    with torch.inference_mode():
        one = torch.ones(1, dtype=torch.int64)
        logits = runner.forward(0, torch.tensor([prompt]), 0 * one, one * len(prompt), [0], [0])
        tokens: list[int] = []
        for i in range(count):
            tokens.append(int(logits.argmax(-1)))
            logits = runner.forward(0, torch.tensor([[tokens[-1]]]), one * (len(prompt) + i), one, [0], [0])
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 repeats and steps instead of 15")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    model_dir = resolve_model(None, None, load_settings(None).models_dir).path

    def runner(gemv_max_rows: int) -> ModelRunner:
        return ModelRunner(
            model_dir,
            dtype=torch.float32,
            max_rows=32,
            max_tokens=CONTEXT + 64,
            model_name="SmolLM2-135M-Instruct",
            aliases=set(),
            gemv_max_rows=gemv_max_rows,
        )

    on, off = runner(load_settings(None).gemv_max_rows), runner(0)
    assert on.gemv_rows == 3, "the kernel is unavailable on this machine"
    assert off.gemv_rows == 0
    read_rate, copy_rate = read_gbps(), stream_copy_gbps()
    print(f"read {read_rate:.1f} GB/s, copy {copy_rate:.1f} GB/s (torch threads: {torch.get_num_threads()})")
    products = product_rows(on, read_rate, repeats)
    print(
        table(
            products,
            ["rows", "kernel ms", "oneDNN prepacked ms", "F.linear ms", "kernel ÷ prepacked", "kernel GB/s",
             "oneDNN prepacked GB/s", "F.linear GB/s", "kernel share of read rate", "read-bound ms"],
            "all products of one decode step (SmolLM2, float32)",
        )
    )  # fmt: skip
    steps = step_rows(on, off, repeats)
    print(
        table(
            steps,
            ["rows", "kernel on ms", "kernel off ms", "speed-up", "tok/s on", "tok/s off", "kernel used"],
            "decode steps (model runner, 128 cached tokens), interleaved",
        )
    )
    prompt = list(range(1000, 1040))
    greedy_equal = greedy_tokens(on, prompt, 24) == greedy_tokens(off, prompt, 24)
    print(f"greedy tokens equal with the kernel on and off: {greedy_equal}")
    path = write_results(
        "row-gemv",
        {
            "read_gbps": read_rate,
            "copy_gbps": copy_rate,
            "products": products,
            "steps": steps,
            "greedy_equal": greedy_equal,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

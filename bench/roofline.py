"""The embedded engine's decode step against this machine's limits, all measured in one run.

Measures the CPU's memory bandwidth (a stream copy of a 256 MiB tensor: bytes read + written)
and its large-GEMM rate (2048 x 2048 x 2048 float32), then times decode steps of the model
runner (no scheduler, no gRPC) at several batch sizes, with and without mixed adapters. For each
step it prints:
- memory-bound time: the bytes a step must read (every weight once, LM head included, the
  adapters' A/B matrices, each row's cached keys/values) divided by the measured bandwidth;
- compute-bound time: the step's FLOPs (2 x matmul parameters per row, attention over the
  context) divided by the large-GEMM rate;
- roofline time: the larger of the two, and the measured step time over it (1.0 = at the limit);
- the same step with plain weights (``prepack_weights=false``, ``gemv_max_rows=0``: ``F.linear``,
  no oneDNN reorder, no row GEMV kernel),
  and on Hugging Face's modules with plain weights (``forward_path=transformers``): the two
  alternatives to what the engine runs by default;
- each product kind alone (q/k/v, o, gate/up, down over every layer, and the LM head) at decode
  and prefill row counts, prepacked
  against plain weights, and the resident memory of a runner with each.

    python bench/roofline.py                 # SmolLM2, rows 1/16/32, 0 and 4 adapters
    python bench/roofline.py --quick         # fewer steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.harness import matmul_gflops, table, write_results

ROWS = (1, 16, 32)
PREFILL_ROWS = (128, 512)
CONTEXT = 128
RANK = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def stream_copy_gbps(mib: int = 256, seconds: float = 1.5) -> float:
    """Sustained copy bandwidth (read + write bytes per second), all torch threads."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dst.copy_(src)
        count += 1
    return 2 * src.numel() * 4 * count / (time.perf_counter() - started) / 1e9


def model_shape(model_dir: Path) -> dict[str, int]:
    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    return {
        "hidden": config["hidden_size"],
        "inter": config["intermediate_size"],
        "layers": config["num_hidden_layers"],
        "heads": heads,
        "kv": config["num_key_value_heads"],
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "vocab": config["vocab_size"],
    }


def step_costs(shape: dict[str, int], rows: int, context: int, adapters: int) -> tuple[float, float]:
    """(bytes read, FLOPs) of one decode step of ``rows`` rows at ``context`` cached tokens, fp32."""
    h, i, layers, heads, kv, hd = (shape[k] for k in ("hidden", "inter", "layers", "heads", "kv", "head_dim"))
    per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * i
    matmul_params = layers * per_layer + h * shape["vocab"]  # the LM head reads the whole vocabulary
    # LoRA: per targeted projection, A (r x in) and B (out x r), per adapter in the batch.
    lora_params = adapters * layers * RANK * (2 * (h + heads * hd) + 2 * (h + kv * hd) + 3 * (h + i))
    kv_bytes = rows * context * layers * 2 * kv * hd * 4
    weight_bytes = (matmul_params + lora_params) * 4
    attention_flops = rows * layers * 2 * 2 * context * heads * hd
    flops = 2 * rows * matmul_params + attention_flops + 2 * rows * lora_params / max(1, adapters)
    return weight_bytes + kv_bytes, flops


def time_steps(runner: Any, rows: int, uids: list[int], steps: int) -> float:
    """Median milliseconds of a decode step (``rows`` rows, one new token each, CONTEXT cached)."""
    prompt = torch.randint(100, 20000, (rows, CONTEXT))
    zeros = torch.zeros(rows, dtype=torch.int64)
    runner.forward(0, prompt, zeros, torch.full((rows,), CONTEXT), uids, list(range(rows)))
    lengths = torch.ones(rows, dtype=torch.int64)
    times = []
    for i in range(steps + 2):
        starts = torch.full((rows,), CONTEXT + i, dtype=torch.int64)
        tokens = torch.randint(100, 20000, (rows, 1))
        started = time.perf_counter()
        runner.forward(0, tokens, starts, lengths, uids, list(range(rows)))
        if i >= 2:  # two warm-up steps
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


_RESIDENT = """
import os, sys, torch
from pathlib import Path
from hybrid_assistant.server.engines.model_runner import ModelRunner
from hybrid_assistant.testing.live import rss_bytes
runner = ModelRunner(Path(sys.argv[1]), dtype=torch.float32, max_rows=32, max_tokens=256,
                     model_name="m", aliases=set(), prepack=sys.argv[2] == "1")
runner.forward(0, torch.tensor([[5, 6, 7]]), torch.zeros(1, dtype=torch.int64), torch.tensor([3]), [0], [0])
print(rss_bytes(os.getpid()))
"""


def resident_gb(model_dir: Path, prepack: bool) -> float:
    """Resident memory of a fresh process holding one runner after a forward (GB)."""
    done = subprocess.run(
        [sys.executable, "-c", _RESIDENT, str(model_dir), "1" if prepack else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1e9


def product_times(
    runners: dict[str, Any], shape: dict[str, int], rows: int, repeats: int
) -> list[dict[str, Any]]:
    """Median ms of each product kind over all layers (weights streamed as in a step), per variant.

    One call per layer in turn, as a step makes them, so each weight comes from memory, not cache.
    """
    widths = {"qkv": shape["hidden"], "o": shape["heads"] * shape["head_dim"], "gate_up": shape["hidden"]}
    widths["down"] = shape["inter"]
    out = []
    for kind in (*widths, "lm_head"):
        x = torch.randn(rows, shape["hidden"] if kind == "lm_head" else widths[kind])
        timed = {}
        for name in ("default", "plain_weights"):
            runner = runners[name]
            calls = (
                [runner.head]
                if kind == "lm_head"
                else [getattr(layer, f"{kind}_linear") for layer in runner.lean.layers]
            )
            times = []
            with torch.inference_mode():
                for i in range(repeats + 1):
                    started = time.perf_counter()
                    for call in calls:
                        call(x)
                    if i:
                        times.append((time.perf_counter() - started) * 1000 / len(calls))
            timed[name] = statistics.median(times)
        out.append(
            {
                "product": kind,
                "rows": rows,
                "prepacked_ms": timed["default"],
                "plain_ms": timed["plain_weights"],
                "prepack_speedup": timed["plain_weights"] / timed["default"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 steps per point instead of 20")
    args = parser.parse_args()
    steps = 5 if args.quick else 20

    from bench.serve import make_adapters
    from hybrid_assistant.adapters.peft_format import inspect_adapter, load_lora_weights
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.engines.model_runner import ModelRunner
    from hybrid_assistant.server.model_store import resolve_model

    bandwidth = stream_copy_gbps()
    gemm = matmul_gflops(2048, 2048, 2048, seconds=1.5)
    settings = load_settings(None)
    model_dir = resolve_model(None, None, settings.models_dir).path
    shape = model_shape(model_dir)
    decode_gemm = matmul_gflops(16, shape["hidden"], shape["inter"])
    # The default (lean forward, prepacked weights) and the two alternatives, same weights.
    variants = {"default": (True, True), "plain_weights": (True, False), "hf_modules": (False, False)}
    runners = {
        name: ModelRunner(
            model_dir,
            dtype=torch.float32,
            max_rows=max(ROWS),
            max_tokens=CONTEXT + 2 * steps + 16,
            model_name="SmolLM2-135M-Instruct",
            aliases=set(),
            lean=lean,
            prepack=prepack,
            # The alternatives run torch's products at every row count, the row GEMV kernel too.
            gemv_max_rows=load_settings(None).gemv_max_rows if name == "default" else 0,
        )
        for name, (lean, prepack) in variants.items()
    }
    if not runners["default"].prepacked:
        print("note: prepacked weights are unavailable here; 'default' runs plain weights")
    with tempfile.TemporaryDirectory() as tmp:
        made = make_adapters(model_dir, Path(tmp), 4, RANK, TARGETS)
        for runner in runners.values():
            for uid, path in enumerate(made.values(), start=1):
                spec = inspect_adapter(path, runner.base_spec, max_rank=64)
                runner.bank.add(uid, load_lora_weights(spec, torch.float32))

    results: list[dict[str, Any]] = []
    for adapters in (0, 4):
        for rows in ROWS:
            uids = [1 + r % adapters for r in range(rows)] if adapters else [0] * rows
            used = min(adapters, rows)
            # Which path goes first rotates between points, so drift hits all of them.
            names = list(variants)
            shift = len(results) % len(names)
            order = names[shift:] + names[:shift]
            timed = {name: time_steps(runners[name], rows, uids, steps) for name in order}
            step_ms, plain_ms, hf_ms = timed["default"], timed["plain_weights"], timed["hf_modules"]
            read, flops = step_costs(shape, rows, CONTEXT, used)
            memory_ms = read / (bandwidth * 1e9) * 1000
            compute_ms = flops / (gemm * 1e9) * 1000
            roof = max(memory_ms, compute_ms)
            results.append(
                {
                    "rows": rows,
                    "adapters": used,
                    "step_ms": step_ms,
                    "plain_weights_step_ms": plain_ms,
                    "hf_modules_step_ms": hf_ms,
                    "prepack_speedup": plain_ms / step_ms,
                    "speedup_vs_hf_modules": hf_ms / step_ms,
                    "memory_bound_ms": memory_ms,
                    "compute_bound_ms": compute_ms,
                    "bound_by": "memory" if memory_ms >= compute_ms else "compute",
                    "step_over_roofline": step_ms / roof,
                    "tokens_per_s": rows / step_ms * 1000,
                    "achieved_gflops": flops / (step_ms / 1000) / 1e9,
                }
            )
    # Decode rows, then prefill-sized chunks (the eval's prompts are prefilled 128-512 tokens at a time).
    products = [
        p
        for rows in (*ROWS, *PREFILL_ROWS)
        for p in product_times(runners, shape, rows, 3 if args.quick or rows in PREFILL_ROWS else 10)
        if runners["default"].prepacked and runners["default"].lean is not None
    ]
    memory = {"resident_gb_prepacked": resident_gb(model_dir, True)}
    memory["resident_gb_plain_weights"] = resident_gb(model_dir, False)
    limits = {
        "stream_copy_gbps": bandwidth,
        "gemm_2048_gflops": gemm,
        "gemm_decode_shape_gflops": decode_gemm,
        "threads": torch.get_num_threads(),
    }
    print(table([limits], list(limits), "this machine's limits (measured now)"))
    print()
    columns = ["rows", "adapters", "step_ms", "plain_weights_step_ms", "hf_modules_step_ms"]
    columns += ["prepack_speedup", "speedup_vs_hf_modules", "memory_bound_ms"]
    columns += ["compute_bound_ms", "bound_by"]
    columns += ["step_over_roofline", "tokens_per_s", "achieved_gflops"]
    print(table(results, columns, f"decode step, float32, {CONTEXT}-token context, rank-{RANK} adapters"))
    print()
    print(table([memory], list(memory), "resident memory of one runner after a forward (GB)"))
    if products:
        print()
        columns = ["product", "rows", "prepacked_ms", "plain_ms", "prepack_speedup"]
        print(table(products, columns, "one product per layer (ms per call), prepacked vs plain weights"))
    payload = {
        "context": CONTEXT,
        "steps": steps,
        "prepacked": runners["default"].prepacked,
        "limits": limits,
        "decode_steps": results,
        "products": products,
        "memory": memory,
    }
    path = write_results("roofline", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

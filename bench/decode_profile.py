"""Where a decode step's time goes: the embedded engine's model runner under torch.profiler.

Runs ModelRunner directly (no scheduler, no gRPC): ``--rows`` rows hold a ``--context``-token
prompt each, then decode steps of one token per row, with 0 or 4 adapters mixed across the
rows. Prints the share of step time per operator group (linear layers, attention, LoRA bank,
everything else) next to the time the step's GEMMs alone would take at the CPU's measured
rate for that shape: what separates the engine from its ceiling.

    python bench/decode_profile.py                  # 16 rows, 128-token context
    python bench/decode_profile.py --rows 32 --adapters 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.profiler import ProfilerActivity, profile

from bench.harness import matmul_gflops, table, write_results

GROUPS = {
    # mkldnn::_linear_pointwise: the prepacked weights (server/engines/packed_linear.py).
    "linear (GEMM)": (
        "aten::addmm",
        "aten::mm",
        "aten::linear",
        "aten::matmul",
        "aten::bmm",
        "mkldnn::_linear_pointwise",
    ),
    "attention": ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product"),
    "copies / cache writes": ("aten::copy_", "aten::index_copy_", "aten::cat", "aten::index", "aten::clone"),
    "elementwise / norms": ("aten::mul", "aten::add", "aten::silu", "aten::pow", "aten::mean", "aten::rsqrt"),
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--adapters", type=int, default=0, choices=[0, 1, 4])
    args = parser.parse_args()

    from bench.serve import make_adapters, model_flops_per_token
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.engines.model_runner import ModelRunner
    from hybrid_assistant.server.model_store import resolve_model

    settings = load_settings(None)
    model_dir = resolve_model(None, None, settings.models_dir).path
    runner = ModelRunner(
        model_dir,
        dtype=torch.float32,
        max_rows=args.rows,
        max_tokens=args.context + args.steps + 8,
        model_name="SmolLM2-135M-Instruct",
        aliases=set(),
    )
    uids = [0] * args.rows
    if args.adapters:
        from hybrid_assistant.adapters.peft_format import inspect_adapter, load_lora_weights

        with tempfile.TemporaryDirectory() as tmp:
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            made = make_adapters(model_dir, Path(tmp), args.adapters, 8, targets)
            for uid, path in enumerate(made.values(), start=1):
                spec = inspect_adapter(path, runner.base_spec, max_rank=64)
                runner.bank.add(uid, load_lora_weights(spec, torch.float32))
        uids = [1 + i % args.adapters for i in range(args.rows)]

    rows = args.rows
    prompt = torch.randint(100, 20000, (rows, args.context))
    zeros = torch.zeros(rows, dtype=torch.int64)
    runner.forward(0, prompt, zeros, torch.full((rows,), args.context), uids, list(range(rows)))
    lengths = torch.ones(rows, dtype=torch.int64)

    def step(i: int) -> None:
        starts = torch.full((rows,), args.context + i, dtype=torch.int64)
        runner.forward(0, torch.randint(100, 20000, (rows, 1)), starts, lengths, uids, list(range(rows)))

    step(0)  # warm-up
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, args.steps + 1):
            step(i)
    step_ms = (time.perf_counter() - started) / args.steps * 1000

    shares: dict[str, float] = defaultdict(float)
    total_self = 0.0
    for event in prof.key_averages():
        shares[group_of(event.key)] += event.self_cpu_time_total
        total_self += event.self_cpu_time_total
    config = runner.model.config
    flops = rows * model_flops_per_token(model_dir)
    rate = matmul_gflops(rows, config.hidden_size, config.intermediate_size)
    gemm_ms = flops / (rate * 1e9) * 1000
    out: list[dict[str, Any]] = [
        {"group": g, "share_of_step": v / total_self}
        for g, v in sorted(shares.items(), key=lambda kv: -kv[1])
    ]
    threads = torch.get_num_threads()
    print(f"{rows} rows, {args.context}-token context, {args.adapters} adapters, float32, {threads} threads")
    print(table(out, ["group", "share_of_step"], "share of profiled operator time"))
    summary = {
        "step_ms": step_ms,
        "gemm_only_ms_at_measured_rate": gemm_ms,
        "gemm_gflops_at_decode_shape": rate,
        "step_over_gemm_only": step_ms / gemm_ms,
    }
    print()
    print(table([summary], list(summary), "step time against its GEMMs alone"))
    path = write_results(
        f"decode-profile-r{rows}-a{args.adapters}", {"args": vars(args), "groups": out, **summary}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

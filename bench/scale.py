"""Scale figures: many server replicas sharing one PostgreSQL, against one replica on SQLite.

Three measurements in one run, on one throwaway PostgreSQL cluster
(:class:`hybrid_assistant.testing.postgres.PostgresServer`) and real server processes:

1. **Serving throughput** with 1, 2 and 3 replicas on one PostgreSQL, against the same replica
   counts on the default SQLite (each replica its own file, nothing shared: the control that
   separates what the shared store costs from what splitting the machine into N processes costs;
   1 replica on SQLite is the obvious alternative). A client round-robins requests across the
   replicas; every configuration gets the same traffic (the same streams, requests and prompts;
   greedy, ``ignore_eos`` and a fixed ``max_tokens``, so every request makes the same number of
   tokens). Each replica gets ``max(1, cores // N)`` torch threads (``HA_THREADS``) so that N
   replicas do not oversubscribe the cores. Repetitions run the configurations in alternating
   order (ABBA...), so drift on a shared machine hits all of them. On a machine with few cores
   the replicas share the same cores: the ratio to 1 replica is then no hardware scale-out (that
   needs a machine, or a CPU budget, per replica) but the cost of splitting the same cores, and
   PostgreSQL/SQLite at the same N is the shared store's coordination cost.
2. **The shared store's write capacity**, in-process, both backends on the same disk: request-log
   rows/s through the real writer (:class:`~hybrid_assistant.server.experiments.request_log.RequestLog`,
   batched as in serving; 1 and 3 writers, as 1 and 3 replicas would write) and durable feedback
   writes/s (one commit each; 1 and 4 callers), in blocks that alternate the backends. From it:
   how many replicas one PostgreSQL carries at the per-replica request rate measured in 1
   (rows/s capacity / requests/s per replica).
3. **Request-log overhead on serving**: the same traffic on one replica with the log on SQLite and
   on PostgreSQL (paired per repetition, ABBA order), as a ratio.

    python bench/scale.py            # 12 streams x 1 request x 24 tokens, 6 repetitions (~6 min on 2 cores)
    python bench/scale.py --quick    # a smoke run

Results: bench/results/scale.json (``scale-quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import STREAM_PROMPTS as PROMPTS
from bench.harness import median, table, write_results
from hybrid_assistant.process import ServerProcess

# name -> (backend, replicas). "sqlite-1" is the obvious alternative: one replica on the embedded
# store. "sqlite-2"/"sqlite-3" (each replica its own file, nothing shared) are the control that
# separates what the shared store costs from what splitting one machine into N processes costs.
CONFIGS = {
    "sqlite-1": ("sqlite", 1),
    "pg-1": ("pg", 1),
    "sqlite-2": ("sqlite", 2),
    "pg-2": ("pg", 2),
    "sqlite-3": ("sqlite", 3),
    "pg-3": ("pg", 3),
}


# ---------------------------------------------------------------------------------- 2. store capacity


def _records(n: int, prefix: str) -> list[Any]:
    from hybrid_assistant.server.experiments.store import LogRecord

    record = LogRecord("r", 0.0, "e", "a", True, "u", "x", True, ("d1", "d2"), 30, 64, 5.0, 900.0, "ok")
    now = time.time()
    return [replace(record, request_id=f"{prefix}{i}", time_unix=now, subject_key=f"u{i}") for i in range(n)]


def log_rows_per_s(store: Any, rows: int, writers: int, prefix: str) -> float:
    """Rows/s committed by ``writers`` request-log writers at once, each handed rows/writers rows
    queued up front (the writer takes up to batch_size rows per commit, as under load)."""
    from hybrid_assistant.server.experiments.request_log import RequestLog
    from hybrid_assistant.server.experiments.settings import RequestLogSettings

    each = rows // writers
    logs = [RequestLog(store, RequestLogSettings(queue_size=each + 10)) for _ in range(writers)]
    for w, log in enumerate(logs):
        for record in _records(each, f"{prefix}w{w}-"):
            log.record(record)  # writers not started: the rows wait in the queue
    started = time.perf_counter()
    for log in logs:
        log.start()
    for log in logs:
        assert log.flush(600), "request-log writer did not finish"
    elapsed = time.perf_counter() - started
    for log in logs:
        log.close()
        assert log.dropped == 0, f"{log.dropped} rows dropped"
        assert log.duplicates == 0, f"{log.duplicates} duplicate ids"
    return each * writers / elapsed


def feedback_per_s(store: Any, request_ids: Sequence[str], callers: int) -> float:
    """Durable feedback writes/s: each one committed (fsync'd) before the call returns."""
    chunks = [request_ids[c::callers] for c in range(callers)]

    def run(ids: Sequence[str]) -> None:
        for request_id in ids:
            assert store.record_feedback(request_id, "thumbs", 1.0, time.time(), None) is False

    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(request_ids) / (time.perf_counter() - started)


CAPACITY = (
    "log_rows_per_s_1_writer",
    "log_rows_per_s_3_writers",
    "feedback_per_s_1_caller",
    "feedback_per_s_4_callers",
)


def store_capacity(work: Path, pg_dsn: str, rows: int, feedback: int, blocks: int) -> dict[str, Any]:
    """Each measurement in ``blocks`` blocks, the backends taking turns (ABBA), because the disk's
    fsync time moves a lot on a shared machine: per backend the median block and the range, and
    PostgreSQL/SQLite as the median of the paired per-block ratios."""
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.experiments.log_store import open_log_store

    # Opened as the server opens them: the setting database_url picks the backend.
    stores = {
        "sqlite": open_log_store(load_settings(None, data_dir=work / "capacity")),
        "postgresql": open_log_store(load_settings(None, data_dir=work / "capacity", database_url=pg_dsn)),
    }
    runs: list[dict[str, Any]] = []
    try:
        for backend, store in stores.items():
            assert store.backend == backend, store.backend
        for block in range(blocks):
            for backend in list(stores) if block % 2 == 0 else list(reversed(stores)):
                store = stores[backend]
                ids = [f"{block}aw0-{i}" for i in range(2 * feedback)]
                run = {
                    "block": block,
                    "backend": backend,
                    "log_rows_per_s_1_writer": log_rows_per_s(store, rows, 1, f"{block}a"),
                    "log_rows_per_s_3_writers": log_rows_per_s(store, rows, 3, f"{block}b"),
                    "feedback_per_s_1_caller": feedback_per_s(store, ids[:feedback], 1),
                    "feedback_per_s_4_callers": feedback_per_s(store, ids[feedback:], 4),
                }
                runs.append(run)
                print(table([run], list(run)), flush=True)
    finally:
        for store in stores.values():
            store.close()
    summary: list[dict[str, Any]] = []
    for backend in stores:
        mine = [r for r in runs if r["backend"] == backend]
        row: dict[str, Any] = {"backend": backend}
        for key in CAPACITY:
            values = [r[key] for r in mine]
            row |= {key: median(values), f"{key}_min": min(values), f"{key}_max": max(values)}
        summary.append(row)
    by = {(r["block"], r["backend"]): r for r in runs}
    ratio: dict[str, Any] = {"backend": "postgresql/sqlite"}
    for key in CAPACITY:
        paired = [by[(b, "postgresql")][key] / by[(b, "sqlite")][key] for b in range(blocks)]
        ratio |= {key: median(paired), f"{key}_min": min(paired), f"{key}_max": max(paired)}
    return {"runs": runs, "summary": [*summary, ratio]}


def _spans(row: dict[str, Any], keys: Sequence[str], first: str) -> dict[str, Any]:
    """A row for a printed table: each value with its range in one cell."""

    def cell(key: str) -> str:
        if key not in row:
            return "-"
        digits = 2 if row[key] < 100 else 0
        return f"{row[key]:.{digits}f} ({row[f'{key}_min']:.{digits}f}-{row[f'{key}_max']:.{digits}f})"

    return {first: row[first], **{key: cell(key) for key in keys}}


# ---------------------------------------------------------------------------------- 1 and 3. serving


async def traffic(targets: Sequence[str], streams: int, per_stream: int, max_tokens: int) -> dict[str, Any]:
    """``streams`` concurrent streams of ``per_stream`` requests each; request k (in the order they
    are sent) goes to replica k mod N, as a round-robin client or load balancer sends them."""
    from hybrid_assistant.client import AsyncAssistantClient

    clients = [AsyncAssistantClient(t, timeout=1800) for t in targets]
    for client in clients:
        await client.__aenter__()
    turn = itertools.count()
    tokens: list[int] = []
    ttft: list[float] = []
    per_replica = [0] * len(targets)

    async def one(stream: int) -> None:
        for r in range(per_stream):
            replica = next(turn) % len(clients)
            per_replica[replica] += 1
            sent, first = time.perf_counter(), 0.0
            prompt = PROMPTS[(stream * per_stream + r) % len(PROMPTS)]
            async for part in clients[replica].stream(
                prompt, temperature=0, max_tokens=max_tokens, ignore_eos=True
            ):
                if part.HasField("summary"):
                    tokens.append(part.summary.usage.completion_tokens)
                elif part.delta and not first:
                    first = time.perf_counter()
            ttft.append(first - sent)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(s) for s in range(streams)))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    return {
        "requests": len(tokens),
        "tokens": sum(tokens),
        "uneven_requests": sum(t != max_tokens for t in tokens),  # ignore_eos: want 0
        "per_replica": "/".join(map(str, per_replica)),
        "wall_s": wall,
        "tokens_per_s": sum(tokens) / wall,
        "requests_per_s": len(tokens) / wall,
        "ttft_p50_ms": median(ttft) * 1000,
        "ttft_all_ms": sorted(t * 1000 for t in ttft),
    }


async def warm(targets: Sequence[str]) -> None:
    from hybrid_assistant.client import AsyncAssistantClient

    for target in targets:
        async with AsyncAssistantClient(target, timeout=600) as client:
            await client.generate("warm up", max_tokens=4, temperature=0)


def threads_for(replicas: int, cores: int) -> int:
    return max(1, cores // replicas)


def layout(cores: int) -> dict[str, list[str]]:
    """Server names per configuration. The replicas of "B-3" are those of "B-2" plus one when the
    thread budget is the same (2 or 3 cores), so fewer processes sit idle in memory."""
    out: dict[str, list[str]] = {}
    for config, (backend, n) in CONFIGS.items():
        previous = out.get(f"{backend}-{n - 1}", [])
        if n > 2 and threads_for(n, cores) == threads_for(n - 1, cores):
            out[config] = [*previous, f"{backend}-{n}-{n - 1}"]
        else:
            out[config] = [f"{backend}-{n}-{i}" for i in range(n)]
    return out


def start_servers(
    work: Path, model_dir: Path, pg_dsn: str, cores: int, replicas: dict[str, list[str]]
) -> dict[str, ServerProcess]:
    """Every configuration's replicas, each with its configuration's thread budget; PostgreSQL
    replicas share one database, SQLite replicas each keep their own file (unshared state: the
    situation many replicas without PostgreSQL are in). Idle PostgreSQL replicas only re-read the
    experiment definitions once a second."""
    servers = {}
    for config, names in replicas.items():
        backend, n = CONFIGS[config]
        for name in names:
            if name in servers:
                continue
            extra = ["--model-path", str(model_dir), "--data-dir", str(work / f"data-{name}")]
            threads = str(threads_for(n, cores))
            env = {"HA_KNOWLEDGE": "false", "HA_THREADS": threads, "HA_MAX_BATCH_SIZE": "32"}
            if backend == "pg":
                env["HA_DATABASE_URL"] = pg_dsn
            servers[name] = ServerProcess(extra, env=env, log=work / f"server-{name}.log")
    for server in servers.values():
        server.wait_ready()
    return servers


def pg_rows(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM requests").fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------------- summary


def summarize(rows: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    """Per configuration: pooled throughput and TTFT, and two paired ratios per repetition (median
    and range): against 1 replica on the same store (scaling), and PostgreSQL against SQLite at
    the same replica count (what the shared store costs)."""
    reps = sorted({r["rep"] for r in rows})
    tps = {(r["rep"], r["config"]): r["tokens_per_s"] for r in rows}
    out = []
    for config, (backend, n) in CONFIGS.items():
        mine = [r for r in rows if r["config"] == config]
        row: dict[str, Any] = {
            "config": config,
            "replicas": n,
            "threads_each": threads_for(n, cores),
            "tokens_per_s": sum(r["tokens"] for r in mine) / sum(r["wall_s"] for r in mine),
            "tokens_per_s_min": min(r["tokens_per_s"] for r in mine),
            "tokens_per_s_max": max(r["tokens_per_s"] for r in mine),
            "ttft_p50_ms": median([t for r in mine for t in r["ttft_all_ms"]]),
            "requests_per_s": sum(r["requests"] for r in mine) / sum(r["wall_s"] for r in mine),
        }
        scaling = [tps[(rep, config)] / tps[(rep, f"{backend}-1")] for rep in reps]
        row |= {
            "vs_1_replica": median(scaling),
            "vs_1_replica_min": min(scaling),
            "vs_1_replica_max": max(scaling),
        }
        if backend == "pg":
            store = [tps[(rep, config)] / tps[(rep, f"sqlite-{n}")] for rep in reps]
            row |= {
                "pg_vs_sqlite": median(store),
                "pg_vs_sqlite_min": min(store),
                "pg_vs_sqlite_max": max(store),
            }
        out.append(row)
    return out


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A serving summary row for the printed table: each ratio with its range in one cell."""
    plain = ("config", "replicas", "threads_each", "tokens_per_s", "ttft_p50_ms", "requests_per_s")
    return {**{k: row[k] for k in plain}, **_spans(row, ("vs_1_replica", "pg_vs_sqlite"), "config")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--streams", type=int, default=12)
    parser.add_argument("--per-stream", type=int, default=1, help="streams x per-stream: a multiple of 6")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--reps", type=int, default=6, help="even: ABBA order")
    parser.add_argument("--log-rows", type=int, default=10_000, help="rows per writer-capacity block")
    parser.add_argument("--feedback", type=int, default=150, help="feedback writes per block")
    parser.add_argument("--blocks", type=int, default=4, help="store-capacity blocks (even: ABBA order)")
    parser.add_argument("--model-path", type=Path, default=None, help="default: SmolLM2 from the data dir")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.per_stream, args.max_tokens, args.reps = 4, 3, 8, 2
        args.log_rows, args.feedback, args.blocks = 2_000, 30, 2

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model
    from hybrid_assistant.testing.postgres import PostgresServer

    cores = os.cpu_count() or 1
    model_dir = args.model_path or resolve_model(None, None, load_settings().models_dir).path
    # Other work on the machine moves every figure here: its load is recorded beside them.
    results: dict[str, Any] = {"model": str(model_dir), "ignore_eos": True, "load_avg_start": os.getloadavg()}
    results.update({k: v for k, v in vars(args).items() if k != "model_path"})
    postgres = PostgresServer.start_new()
    results["postgresql"] = postgres.bin_dir.parts[-2] if postgres.bin_dir.parts[-3] == "postgresql" else "?"
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(dir=postgres.root.parent) as tmp:  # same disk as the cluster
            work = Path(tmp)
            capacity_dsn = postgres.create_database("capacity")
            capacity = store_capacity(work, capacity_dsn, args.log_rows, args.feedback, args.blocks)
            serve_dsn = postgres.create_database("serve")
            replicas = layout(cores)
            servers = start_servers(work, model_dir, serve_dsn, cores, replicas)
            results["servers"] = {config: names for config, names in replicas.items()}
            sent_to_pg = 0
            try:
                for name, server in servers.items():  # a first request outside the measurement
                    asyncio.run(warm([server.target]))
                    sent_to_pg += name.startswith("pg")
                for rep in range(args.reps):
                    order = list(CONFIGS) if rep % 2 == 0 else list(reversed(CONFIGS))
                    for config in order:
                        targets = [servers[name].target for name in replicas[config]]
                        run = asyncio.run(traffic(targets, args.streams, args.per_stream, args.max_tokens))
                        rows.append({"rep": rep, "config": config, **run})
                        sent_to_pg += run["requests"] if config.startswith("pg") else 0
                        shown = {k: v for k, v in rows[-1].items() if k != "ttft_all_ms"}
                        print(table([shown], list(shown)), flush=True)
            finally:
                for server in servers.values():
                    server.stop()  # SIGTERM: each writer commits what it still holds
            logged = pg_rows(serve_dsn)
    finally:
        postgres.remove()

    results["load_avg_end"] = os.getloadavg()
    summary = summarize(rows, cores)
    pg1 = next(s for s in summary if s["config"] == "pg-1")
    per_replica_rps = pg1["requests_per_s"]
    cap = {row["backend"]: row for row in capacity["summary"]}
    pg_cap, ratio = cap["postgresql"], cap["postgresql/sqlite"]
    log_capacity = max(pg_cap["log_rows_per_s_1_writer"], pg_cap["log_rows_per_s_3_writers"])
    feedback_capacity = max(pg_cap["feedback_per_s_1_caller"], pg_cap["feedback_per_s_4_callers"])
    by = {(r["rep"], r["config"]): r["tokens_per_s"] for r in rows}
    paired = [by[(rep, "pg-1")] / by[(rep, "sqlite-1")] for rep in range(args.reps)]
    carry = {
        "requests_per_s_per_replica": per_replica_rps,
        "pg_log_rows_per_s": log_capacity,
        "pg_feedback_per_s": feedback_capacity,
        "replicas_by_log_rows": log_capacity / per_replica_rps,
        "replicas_if_every_request_gets_feedback": feedback_capacity / per_replica_rps,
        "pg_vs_sqlite_log_rows": ratio["log_rows_per_s_1_writer"],
        "pg_vs_sqlite_feedback": ratio["feedback_per_s_1_caller"],
    }
    overhead = {
        "pg_vs_sqlite_tokens_per_s_median": median(paired),
        "pg_vs_sqlite_min": min(paired),
        "pg_vs_sqlite_max": max(paired),
        "sqlite_cv_pct": statistics.pstdev([by[(r, "sqlite-1")] for r in range(args.reps)])
        / statistics.fmean([by[(r, "sqlite-1")] for r in range(args.reps)])
        * 100,
        "pg_rows_logged": logged,
        "pg_requests_sent": sent_to_pg,
    }
    total = args.streams * args.per_stream
    note = (
        f"All replicas share this machine's {cores} cores (threads each = max(1, {cores} // N)), so "
        "vs_1_replica is not hardware scale-out: it shows what splitting the same cores into N "
        "processes costs (smaller batches, N copies of the weights through one memory bus) plus the "
        "shared store's coordination; pg_vs_sqlite at the same N (SQLite replicas share nothing) "
        "isolates the store."
    )
    print(f"\n{note}")
    start, end = results["load_avg_start"][0], results["load_avg_end"][0]
    print(f"1-minute load average: {start:.1f} at the start, {end:.1f} at the end ({cores} cores)")
    title = (
        f"1. serving: {total} requests x {args.max_tokens} tokens per run, {args.streams} streams, "
        f"round-robin; median (min-max) over {args.reps} paired repetitions"
    )
    print(table([_shown(row) for row in summary], list(_shown(summary[0])), title))
    title = f"2. store write capacity (in-process, same disk); median (min-max) of {args.blocks} ABBA blocks"
    shown = [_spans(row, CAPACITY, "backend") for row in capacity["summary"]]
    print("\n" + table(shown, list(shown[0]), title))
    print("\n" + table([carry], list(carry), "   replicas one PostgreSQL carries at the measured rate"))
    title = "3. request log on PostgreSQL vs SQLite, 1 replica (paired, ABBA)"
    print("\n" + table([overhead], list(overhead), title))
    path = write_results(
        "scale-quick" if args.quick else "scale",
        {
            **results,
            "note": note,
            "runs": rows,
            "serving": summary,
            "store_capacity": capacity,
            "replicas_one_postgres_carries": carry,
            "request_log_overhead": overhead,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

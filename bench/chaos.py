"""Chaos bench: the long run of tests/robustness (fuzz, health under hostile requests, adapter
churn, kill -9 loops, disk full), with the figures issue 10 sets as targets:

- >= 10,000 fuzzed requests across all RPCs: 0 crashes, 0 INTERNAL/UNKNOWN, health p99 < 100 ms;
- 10 min churn at 16 streams x 4 adapters, a replace every 0.5 s: only OK and NOT_FOUND,
  0 crashes, server RSS drift < 5% after warm-up;
- 50 x kill -9 during ingest and during feedback: 0 inconsistencies, 0 acknowledged writes lost.

The server runs in a child process on the tiny test model (fast on 2 cores) unless --model-path
names another (SmolLM2). Results go to bench/results/chaos.json and a table is printed.

    python bench/chaos.py                                   # the full run (about 40 min on 2 cores)
    python bench/chaos.py --fuzz-requests 2000 --churn-s 60 --kills 5   # a shorter one
    python bench/chaos.py --only fuzz,probe                 # some parts
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm

from bench.harness import table, write_results

PARTS = ("fuzz", "probe", "churn", "kill-feedback", "kill-ingest", "kill-training", "disk-full")
TARGET_HEALTH_P99_MS = 100.0
TARGET_RSS_DRIFT_PCT = 5.0


def run_fuzz(ws: Any, work: Path, requests: int, garbage_share: float) -> dict[str, Any]:
    """Fuzz every RPC (structured hostile requests, then raw garbage), health probed throughout."""
    from hybrid_assistant.testing.fuzz import (
        LONG_LIMITS,
        RPCS,
        FuzzRunner,
        fuzz_garbage,
        fuzz_rpc,
        seed_server,
    )
    from hybrid_assistant.testing.live import HealthProbe, LiveServer, summarize_ms

    server = LiveServer(ws, work / "fuzz-data").start()
    runner = FuzzRunner(server, timeout_s=120, check_every=5)
    seed_server(runner)
    garbage = int(requests * garbage_share)
    per_rpc = max(1, (requests - garbage) // len(RPCS))
    bar = tqdm(total=requests, desc="fuzz", unit="req")

    def step() -> None:
        bar.update(1)

    runner.on_request = step
    started = time.perf_counter()
    probe = HealthProbe(server.target).start()
    try:
        for rpc in RPCS:
            before = runner.requests
            fuzz_rpc(runner, rpc, per_rpc, LONG_LIMITS, profile="robustness-long")
            short = per_rpc - (runner.requests - before)
            if short > 0:  # RPCs with no fields have few distinct examples: top up with repeats
                for _ in range(short):
                    runner.run(rpc, rpc.request(), "admin")
        fuzz_garbage(runner, max(1, requests - runner.requests), profile="robustness-long")
    finally:
        probe.stop()
        bar.close()
        runner.close()
        server.stop()
    codes = Counter(runner.counts)
    return {
        "requests": runner.requests,
        "wall_s": time.perf_counter() - started,
        "crashes": runner.crashes,
        "internal_or_unknown": codes.get("INTERNAL", 0) + codes.get("UNKNOWN", 0),
        "violations": len(runner.violations),
        "violation_kinds": dict(Counter(v.kind for v in runner.violations)),
        "first_violations": [vars(v) for v in runner.violations[:25]],
        "codes": dict(codes),
        "by_rpc": {k: dict(v) for k, v in runner.by_rpc.items()},
        "health": summarize_ms(probe.all_latencies()),
        "server_restarts": server.starts - 1,
    }


def run_probe(ws: Any, work: Path, timeout_s: float) -> dict[str, Any]:
    from hybrid_assistant.testing.live import LiveServer
    from hybrid_assistant.testing.scenarios import probe_hostile

    server = LiveServer(ws, work / "probe-data").start()
    try:
        rows = probe_hostile(server, timeout_s=timeout_s)
        alive = server.alive()
    finally:
        server.stop()
    return {"rows": rows, "server_alive": alive}


def run_churn(ws: Any, work: Path, seconds: float, streams: int) -> dict[str, Any]:
    from hybrid_assistant.testing.live import LiveServer
    from hybrid_assistant.testing.scenarios import churn

    # The default max_resident_adapters (8) holds the 4 hot adapters and the replaced versions
    # still in flight; 5 cold names loaded in turn push past it, so every load evicts (LRU).
    server = LiveServer(ws, work / "churn-data", preload=()).start()
    bar = tqdm(total=int(seconds), desc="churn", unit="s")

    def tick(now: float) -> None:
        bar.n = min(int(now), int(seconds))
        bar.refresh()

    try:
        result = churn(
            server, duration_s=seconds, streams=streams, replace_every_s=0.5, cold_adapters=5, on_tick=tick
        )
    finally:
        bar.close()
        server.stop()
    warmup = min(60.0, seconds * 0.2)
    return {"seconds": seconds, "streams": streams, "warmup_s": warmup, **result.summary(warmup)}


def run_kill_feedback(ws: Any, work: Path, kills: int, seed: int) -> dict[str, Any]:
    from hybrid_assistant.testing.live import LiveServer
    from hybrid_assistant.testing.scenarios import feedback_kill_round, integrity, missing_feedback

    rng = random.Random(seed)
    server = LiveServer(ws, work / "kill-feedback-data", preload=(), knowledge=False)
    every: dict[tuple[str, str], float] = {}
    bad_integrity, lost, errors = 0, 0, Counter[str]()
    for round_ in tqdm(range(kills), desc="kill -9 feedback"):
        result, acked = feedback_kill_round(server, f"k{round_}", rng)
        every.update(acked)
        bad_integrity += result.integrity != "ok"
        lost += len(result.lost)
        errors.update(result.errors)
    server.start()
    server.stop()
    path = server.data_dir / "request-log.sqlite3"
    final_lost = missing_feedback(path, every)
    return {
        "kills": kills,
        "acknowledged": len(every),
        "lost_after_kill": lost,
        "lost_at_end": len(final_lost),
        "integrity_failures": bad_integrity + (integrity(path) != "ok"),
        "client_errors": dict(errors),
        "examples_lost": final_lost[:10],
    }


def run_kill_ingest(ws: Any, work: Path, kills: int, seed: int) -> dict[str, Any]:
    from hybrid_assistant.testing.live import LiveServer
    from hybrid_assistant.testing.scenarios import check_index, ingest_kill_round

    rng = random.Random(seed)
    server = LiveServer(ws, work / "kill-ingest-data", preload=())
    every: set[str] = set()
    inconsistent, problems_seen, errors = 0, [], Counter[str]()
    for round_ in tqdm(range(kills), desc="kill -9 ingest"):
        result, acked = ingest_kill_round(server, f"k{round_}", rng)
        every |= acked
        errors.update(result.errors)
        status, problems = check_index(server.data_dir, every)
        if status != "ok" or problems:
            inconsistent += 1
            problems_seen.append({"round": round_, "integrity": status, "problems": problems[:5]})
    return {
        "kills": kills,
        "acknowledged_batches": len(every),
        "inconsistent_rounds": inconsistent,
        "client_errors": dict(errors),
        "problems": problems_seen[:10],
    }


def run_kill_training(ws: Any, work: Path, kills: int, seed: int) -> dict[str, Any]:
    from hybrid_assistant.testing.scenarios import training_kill_round

    rng = random.Random(seed)
    rounds = []
    for round_ in tqdm(range(kills), desc="kill -9 training"):
        rounds.append(training_kill_round(ws.model_dir, work / "trained", "trained", rng))
        del rounds[-1]["stderr_tail"]
        _ = round_
    mid = training_kill_round(ws.model_dir, work / "trained-mid", "trained", rng, mode="die-mid-publish")
    return {
        "kills": kills,
        "acknowledged_then_missing_or_broken": sum(
            1 for r in rounds if r["published"] and not (r["exists"] and r["loads"])
        ),
        "leftover_dirs_after_kills": rounds[-1]["leftovers"] if rounds else [],
        "kill_mid_publish": {k: v for k, v in mid.items() if k != "stderr_tail"},
    }


def run_disk_full(ws: Any, work: Path) -> dict[str, Any]:
    from hybrid_assistant.testing.live import LiveServer
    from hybrid_assistant.testing.scenarios import disk_full_ingest, disk_full_logging

    ingest = disk_full_ingest(LiveServer(ws, work / "df-ingest-data", preload=()))
    logging_ = disk_full_logging(LiveServer(ws, work / "df-log-data", preload=(), knowledge=False))
    return {
        name: {**vars(r), "clear_error": r.clear_error}
        for name, r in (("ingest", ingest), ("request_log", logging_))
    }


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: the measured figure and whether it meets the target."""
    rows: list[dict[str, Any]] = []
    fuzz = results.get("fuzz")
    if fuzz:
        rows += [
            {
                "target": "fuzzed requests >= 10,000",
                "measured": fuzz["requests"],
                "met": fuzz["requests"] >= 10_000,
            },
            {"target": "fuzz crashes == 0", "measured": fuzz["crashes"], "met": fuzz["crashes"] == 0},
            {
                "target": "INTERNAL/UNKNOWN == 0",
                "measured": fuzz["internal_or_unknown"],
                "met": fuzz["internal_or_unknown"] == 0,
            },
            {
                "target": "undocumented outcomes == 0",
                "measured": fuzz["violations"],
                "met": fuzz["violations"] == 0,
            },
            {
                "target": "health p99 < 100 ms (fuzz)",
                "measured": round(fuzz["health"]["p99_ms"], 1),
                "met": fuzz["health"]["p99_ms"] < TARGET_HEALTH_P99_MS,
            },
        ]
    probe = results.get("probe")
    if probe:
        for row in probe["rows"]:
            rows.append(
                {
                    "target": f"health p99 < 100 ms during {row['request']}",
                    "measured": f"p99 {row['p99_ms']:.0f} / max {row['max_ms']:.0f} ms ({row['code']})",
                    "met": row["p99_ms"] < TARGET_HEALTH_P99_MS,
                }
            )
    churn = results.get("churn")
    if churn:
        codes = set(churn["stream_codes"]) | set(churn["admin_codes"])
        rows += [
            {
                "target": "churn: only OK/NOT_FOUND",
                "measured": sorted(codes),
                "met": codes <= {"OK", "NOT_FOUND"},
            },
            {"target": "churn crashes == 0", "measured": int(churn["crashed"]), "met": not churn["crashed"]},
            {
                "target": "churn RSS drift < 5%",
                "measured": round(churn["rss_drift_pct"], 2),
                "met": abs(churn["rss_drift_pct"]) < TARGET_RSS_DRIFT_PCT,
            },
            {
                "target": "health p99 < 100 ms (churn)",
                "measured": round(churn["health"]["p99_ms"], 1),
                "met": churn["health"]["p99_ms"] < TARGET_HEALTH_P99_MS,
            },
        ]
    feedback = results.get("kill-feedback")
    if feedback:
        lost = feedback["lost_after_kill"] + feedback["lost_at_end"]
        rows += [
            {
                "target": f"kill -9 feedback x{feedback['kills']}: lost == 0",
                "measured": lost,
                "met": lost == 0,
            },
            {
                "target": "feedback integrity failures == 0",
                "measured": feedback["integrity_failures"],
                "met": feedback["integrity_failures"] == 0,
            },
        ]
    ingest = results.get("kill-ingest")
    if ingest:
        rows.append(
            {
                "target": f"kill -9 ingest x{ingest['kills']}: inconsistencies == 0",
                "measured": ingest["inconsistent_rounds"],
                "met": ingest["inconsistent_rounds"] == 0,
            }
        )
    training = results.get("kill-training")
    if training:
        mid = training["kill_mid_publish"]
        rows += [
            {
                "target": f"kill -9 training x{training['kills']}: no lost/broken adapter",
                "measured": training["acknowledged_then_missing_or_broken"],
                "met": training["acknowledged_then_missing_or_broken"] == 0,
            },
            {
                "target": "kill mid-publish keeps the previous adapter",
                "measured": f"exists={mid['exists']} loads={mid['loads']}",
                "met": bool(mid["exists"] and mid["loads"]),
            },
        ]
    disk = results.get("disk-full")
    if disk:
        for name in ("ingest", "request_log"):
            r = disk[name]
            met = bool(
                r["clear_error"]
                and r["recovered_code"] == "OK"
                and r["integrity"] == "ok"
                and not r["problems"]
            )
            rows.append(
                {
                    "target": f"disk full ({name}): clear error, recovery, no corruption",
                    "measured": f"{r['full_code']} -> {r['recovered_code']}, integrity {r['integrity']}",
                    "met": met,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-path", type=Path, default=None, help="default: the tiny test model, built here"
    )
    parser.add_argument("--fuzz-requests", type=int, default=10_000)
    parser.add_argument("--garbage-share", type=float, default=0.15, help="share of raw-garbage requests")
    parser.add_argument("--churn-s", type=float, default=600.0)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--kills", type=int, default=50, help="kill -9 rounds for ingest and feedback each")
    parser.add_argument("--training-kills", type=int, default=5)
    parser.add_argument("--probe-timeout-s", type=float, default=180.0)
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from hybrid_assistant.testing.live import Workspace, cpu_info

    results: dict[str, Any] = {
        **cpu_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {
            "fuzz_requests": 10_000,
            "health_p99_ms": TARGET_HEALTH_P99_MS,
            "churn_s": 600,
            "churn_streams": 16,
            "rss_drift_pct": TARGET_RSS_DRIFT_PCT,
            "kills": 50,
        },
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        work = Path(tmp)
        ws = Workspace.prepare(work / "ws", args.model_path)
        tiny = "tiny-llama (hybrid_assistant.testing.models.build_tiny_model)"
        results["model"] = str(args.model_path or tiny)
        for part in parts:
            part_started = time.perf_counter()
            if part == "fuzz":
                results[part] = run_fuzz(ws, work, args.fuzz_requests, args.garbage_share)
            elif part == "probe":
                results[part] = run_probe(ws, work, args.probe_timeout_s)
                print(
                    table(
                        results[part]["rows"],
                        ["request", "code", "request_s", "n", "p50_ms", "p99_ms", "max_ms"],
                    )
                )
            elif part == "churn":
                results[part] = run_churn(ws, work, args.churn_s, args.streams)
            elif part == "kill-feedback":
                results[part] = run_kill_feedback(ws, work, args.kills, args.seed)
            elif part == "kill-ingest":
                results[part] = run_kill_ingest(ws, work, args.kills, args.seed + 1)
            elif part == "kill-training":
                results[part] = run_kill_training(ws, work, args.training_kills, args.seed + 2)
            elif part == "disk-full":
                results[part] = run_disk_full(ws, work)
            results[part]["part_wall_s"] = round(time.perf_counter() - part_started, 1)
            print(f"{part}: done in {results[part]['part_wall_s']} s", flush=True)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    results["verdicts"] = verdicts(results)
    print("\n" + table(results["verdicts"], ["target", "measured", "met"], "chaos targets"))
    path = write_results("chaos", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

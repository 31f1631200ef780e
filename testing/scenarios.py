"""Chaos scenarios against a live server, sized by their arguments: the tests run each briefly,
bench/chaos.py runs them long and reports the figures.

- :func:`probe_hostile`: health-check latency while each hostile request runs;
- :func:`churn`: adapter load / replace / unload / LRU eviction under streaming traffic, with RSS;
- :func:`feedback_kill_round` and :func:`ingest_kill_round`: ``kill -9`` while writing, then every
  acknowledged write must be on disk and the SQLite files must pass ``PRAGMA integrity_check``;
- :func:`training_kill_round`: ``kill -9`` while training, then the adapter directory either does
  not exist or holds a complete adapter the server accepts;
- :func:`disk_full_ingest` and :func:`disk_full_logging`: RLIMIT_FSIZE on the running server
  (``prlimit``) as a full disk, then space returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hybrid_assistant.testing.live import ADAPTERS, HealthProbe, LiveServer, summarize_ms
from hybrid_assistant.testing.statuses import DOCUMENTED
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc

Code = grpc.StatusCode
WORKER = "hybrid_assistant.testing.train_worker"
BIG_OPTIONS = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]


def _user(text: str) -> list[pb.ChatMessage]:
    return [pb.ChatMessage(role="user", content=text)]


def _code(exc: grpc.RpcError) -> Code:
    code: Code = exc.code()
    return code


def _details(exc: grpc.RpcError) -> str:
    return str(exc.details() or "")


# ---------------------------------------------------------------------------- health probe


def hostile_requests(scale: float = 1.0) -> list[tuple[str, str, pb.GenerateRequest | pb.ScoreRequest]]:
    """(name, method, request) of the requests issue 10 saw freeze the event loop."""
    n_passages = max(1, int(600 * scale))
    passages = [
        pb.Passage(document_id=f"d{i}", text=" ".join(f"passage {i} word {j}" for j in range(40)))
        for i in range(n_passages)
    ]
    ten_mb = int(10_000_000 * scale)
    return [
        (
            f"generate-{n_passages}-passages",
            "Generate",
            pb.GenerateRequest(
                messages=_user("Summarise the passages."),
                sampling=pb.SamplingParams(max_tokens=4),
                retrieval=pb.RetrievalOptions(enabled=True, passages=passages),
            ),
        ),
        (
            f"generate-{ten_mb // 1_000_000}MB-message",
            "Generate",
            pb.GenerateRequest(
                messages=_user("word " * (ten_mb // 5)), sampling=pb.SamplingParams(max_tokens=4)
            ),
        ),
        (
            "score-huge-continuations",
            "Score",
            pb.ScoreRequest(
                messages=_user("Pick the best one."),
                continuations=["lorem ipsum " * max(1, int(20_000 * scale)) for _ in range(20)],
            ),
        ),
        (
            "generate-10000-stops",
            "Generate",
            pb.GenerateRequest(
                messages=_user("Tell me a story."),
                sampling=pb.SamplingParams(
                    max_tokens=8, stop=[f"stop-{i}" for i in range(int(10_000 * scale))]
                ),
            ),
        ),
        (
            "generate-600-filter-keys",
            "Generate",
            pb.GenerateRequest(
                messages=_user("fox"),
                sampling=pb.SamplingParams(max_tokens=4),
                retrieval=pb.RetrievalOptions(
                    enabled=True, metadata_filter={f"k{i}": "v" for i in range(max(1, int(600 * scale)))}
                ),
            ),
        ),
    ]


def probe_hostile(
    server: LiveServer, *, scale: float = 1.0, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Health latency (p50/p99/max) while each hostile request runs, one request at a time."""
    rows: list[dict[str, Any]] = []
    with (
        grpc.insecure_channel(server.target, options=BIG_OPTIONS) as channel,
        HealthProbe(server.target) as probe,
    ):
        stub = pb_grpc.AssistantStub(channel)
        time.sleep(0.5)
        with probe.window() as idle:
            time.sleep(1.0)
        rows.append({"request": "idle", "code": "-", "request_s": 0.0, **idle})
        for name, method, request in hostile_requests(scale):
            code, details = "OK", ""
            with probe.window() as stats:
                started = time.perf_counter()
                try:
                    getattr(stub, method)(request, timeout=timeout_s)
                except grpc.RpcError as exc:
                    code, details = _code(exc).name, _details(exc)[:200]
                elapsed = time.perf_counter() - started
            rows.append(
                {
                    "request": name,
                    "bytes": request.ByteSize(),
                    "code": code,
                    "details": details,
                    "request_s": elapsed,
                    **stats,
                }
            )
    return rows


# ---------------------------------------------------------------------------- churn


@dataclass
class ChurnResult:
    stream_codes: Counter[str] = field(default_factory=Counter)
    admin_codes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    replaces: int = 0
    unloads: int = 0
    evictions_seen: int = 0
    tokens: int = 0
    crashed: bool = False
    exit_code: int | None = None
    health_ms: dict[str, float] = field(default_factory=dict)

    def rss_drift_pct(self, warmup_s: float) -> float:
        """(mean RSS of the last 10% of samples - mean of the first 10% after warm-up) / first."""
        after = [mb for t, mb in self.rss_mb if t >= warmup_s]
        if len(after) < 4:
            return float("nan")
        k = max(1, len(after) // 10)
        first, last = sum(after[:k]) / k, sum(after[-k:]) / k
        return (last - first) / first * 100

    def summary(self, warmup_s: float) -> dict[str, Any]:
        return {
            "streams_ok": self.stream_codes.get("OK", 0),
            "stream_codes": dict(self.stream_codes),
            "admin_codes": dict(self.admin_codes),
            "replaces": self.replaces,
            "unloads": self.unloads,
            "evictions_seen": self.evictions_seen,
            "tokens": self.tokens,
            "crashed": self.crashed,
            "exit_code": self.exit_code,
            "rss_start_mb": self.rss_mb[0][1] if self.rss_mb else float("nan"),
            "rss_end_mb": self.rss_mb[-1][1] if self.rss_mb else float("nan"),
            "rss_drift_pct": self.rss_drift_pct(warmup_s),
            "health": self.health_ms,
            "unexpected": self.unexpected[:20],
        }


CHURN_ALLOWED = frozenset({"OK", "NOT_FOUND"})
#: The registry's documented back-pressure: a load needs a resident slot while every resident
#: adapter is in flight (max_resident_adapters below the adapters in use). Counted apart.
AT_CAP = "RESOURCE_EXHAUSTED(at resident cap)"


def _churn_code(exc: grpc.RpcError) -> str:
    code = _code(exc).name
    return AT_CAP if code == "RESOURCE_EXHAUSTED" and "pinned or in use" in _details(exc) else code


def churn(
    server: LiveServer,
    *,
    duration_s: float,
    streams: int = 16,
    replace_every_s: float = 0.5,
    max_tokens: int = 24,
    seed: int = 0,
    cold_adapters: int = 0,
    on_tick: Callable[[float], None] | None = None,
) -> ChurnResult:
    """Streams on the base model and every adapter while an admin task replaces one adapter every
    ``replace_every_s`` and now and then unloads one and loads it back.

    LRU eviction: with ``cold_adapters``, the admin task also loads one of that many extra names
    each tick (rarely asked for: one stream turn in 8), so that with more names than
    max_resident_adapters every load evicts the least recently used idle adapter, and the rare
    request for an evicted one reloads it. Without them, run the server with
    max_resident_adapters below len(ADAPTERS) to make loads evict hot adapters instead."""
    result = ChurnResult()
    rng = random.Random(seed)
    metadata = server.metadata()
    names = list(ADAPTERS)
    cold = [f"cold{i}" for i in range(cold_adapters)]

    async def stream_worker(stub: pb_grpc.AssistantStub, index: int, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            adapter = None if (index + turn) % (len(names) + 1) == 0 else names[(index + turn) % len(names)]
            if cold and turn % 8 == 7:
                adapter = cold[(index + turn) % len(cold)]
            turn += 1
            request = pb.GenerateRequest(
                messages=_user(f"Tell me story {index}-{turn}."),
                sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=turn),
            )
            if adapter:
                request.adapter = adapter
            try:
                async for part in stub.GenerateStream(request, timeout=120):
                    if part.HasField("summary"):
                        result.tokens += part.summary.usage.completion_tokens
                result.stream_codes["OK"] += 1
            except grpc.RpcError as exc:
                code = _churn_code(exc)
                result.stream_codes[code] += 1
                if code not in CHURN_ALLOWED | {AT_CAP}:
                    result.unexpected.append(f"stream {adapter}: {code} {_details(exc)[:200]}")
                    await asyncio.sleep(0.2)

    async def admin_worker(stub: pb_grpc.AdaptersStub, stop: asyncio.Event) -> None:
        tick = 0
        while not stop.is_set():
            await asyncio.sleep(replace_every_s)
            tick += 1
            name = names[tick % len(names)]
            try:
                if tick % 10 == 0:  # unload, let streams see NOT_FOUND for a moment, load back
                    await stub.UnloadAdapter(
                        pb.UnloadAdapterRequest(name=name), metadata=metadata, timeout=60
                    )
                    result.unloads += 1
                    await asyncio.sleep(rng.uniform(0.0, 0.2))
                    await stub.LoadAdapter(
                        pb.LoadAdapterRequest(name=name, path=name), metadata=metadata, timeout=60
                    )
                else:  # hot swap: the same name gets another adapter's weights
                    path = names[rng.randrange(len(names))]
                    await stub.LoadAdapter(
                        pb.LoadAdapterRequest(name=name, path=path, replace=True),
                        metadata=metadata,
                        timeout=60,
                    )
                    result.replaces += 1
                if cold:  # one more resident name: past the cap, the LRU idle adapter is evicted
                    await stub.LoadAdapter(
                        pb.LoadAdapterRequest(
                            name=cold[tick % len(cold)], path=names[rng.randrange(len(names))], replace=True
                        ),
                        metadata=metadata,
                        timeout=60,
                    )
                result.admin_codes["OK"] += 1
                listed = await stub.ListAdapters(pb.ListAdaptersRequest(), timeout=30)
                result.evictions_seen += sum(1 for a in listed.adapters if not a.resident)
            except grpc.RpcError as exc:
                code = _churn_code(exc)
                result.admin_codes[code] += 1
                if code not in CHURN_ALLOWED | {AT_CAP}:
                    result.unexpected.append(f"admin {name}: {code} {_details(exc)[:200]}")

    async def sampler(started: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.perf_counter() - started
            with contextlib.suppress(OSError, RuntimeError):
                result.rss_mb.append((now, server.rss_bytes() / 2**20))
            if on_tick is not None:
                on_tick(now)
            await asyncio.sleep(1.0)

    async def main() -> None:
        async with grpc.aio.insecure_channel(server.target) as channel:
            adapters = pb_grpc.AdaptersStub(channel)
            for name in names:  # unpinned: eligible for LRU eviction
                try:
                    await adapters.LoadAdapter(
                        pb.LoadAdapterRequest(name=name, path=name, replace=True),
                        metadata=metadata,
                        timeout=60,
                    )
                except grpc.RpcError as exc:
                    result.unexpected.append(f"initial load {name}: {_code(exc).name} {_details(exc)[:200]}")
            stop = asyncio.Event()
            started = time.perf_counter()
            stub = pb_grpc.AssistantStub(channel)
            tasks = [asyncio.create_task(stream_worker(stub, i, stop)) for i in range(streams)]
            tasks.append(asyncio.create_task(admin_worker(adapters, stop)))
            tasks.append(asyncio.create_task(sampler(started, stop)))
            while time.perf_counter() - started < duration_s and server.alive():  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            stop.set()
            await asyncio.wait(tasks, timeout=180)

    with HealthProbe(server.target, interval_s=0.05) as probe:
        asyncio.run(main())
    result.health_ms = summarize_ms(probe.all_latencies())
    result.crashed = not server.alive()
    result.exit_code = server.exit_code()
    return result


# ---------------------------------------------------------------------------- kill -9: feedback


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@dataclass
class KillRound:
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    integrity: str = ""
    errors: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)


def _kill_after(server: LiveServer, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        server.kill()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def feedback_kill_round(
    server: LiveServer,
    tag: str,
    rng: random.Random,
    *,
    min_s: float = 0.5,
    max_s: float = 2.5,
    writers: int = 2,
) -> tuple[KillRound, dict[tuple[str, str], float]]:
    """Start the server, write Generate + RecordFeedback from ``writers`` threads, SIGKILL it at a
    random moment, then check the request log: integrity, and every acknowledged feedback there."""
    result = KillRound()
    acked: dict[tuple[str, str], float] = {}
    lock = threading.Lock()
    server.start()
    target, metadata = server.target, server.metadata()

    def writer(w: int) -> None:
        with grpc.insecure_channel(target) as channel:
            assistant, experiments = pb_grpc.AssistantStub(channel), pb_grpc.ExperimentsStub(channel)
            i = 0
            while True:
                request_id = f"{tag}-w{w}-{i}"
                value = float(rng.randint(1, 5))
                try:
                    assistant.Generate(
                        pb.GenerateRequest(
                            request_id=request_id,
                            messages=_user("hi"),
                            sampling=pb.SamplingParams(max_tokens=1),
                        ),
                        timeout=30,
                    )
                    experiments.RecordFeedback(
                        pb.RecordFeedbackRequest(request_id=request_id, metric="rating", value=value),
                        timeout=30,
                        metadata=metadata,
                    )
                except grpc.RpcError as exc:
                    code = _code(exc)
                    with lock:
                        result.errors[code.name] += 1
                    if code in (Code.UNAVAILABLE, Code.CANCELLED) or not server.alive():
                        return
                    result.details.append(f"{code.name} {_details(exc)[:200]}")
                    if len(result.details) > 20:
                        return
                    continue
                with lock:
                    acked[(request_id, "rating")] = value
                i += 1

    killer = _kill_after(server, rng.uniform(min_s, max_s))
    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    killer.join()
    for t in threads:
        t.join(60)
    result.acknowledged = len(acked)
    path = server.data_dir / "request-log.sqlite3"
    result.integrity = integrity(path)
    result.lost = missing_feedback(path, acked)
    return result, acked


def missing_feedback(path: Path, acked: dict[tuple[str, str], float]) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        stored = {(r, m): v for r, m, v in conn.execute("SELECT request_id, metric, value FROM feedback")}
        requests = {r for (r,) in conn.execute("SELECT request_id FROM requests")}
    finally:
        conn.close()
    lost = []
    for key, value in acked.items():
        if stored.get(key) != value:
            lost.append(f"feedback {key} = {value} missing (stored {stored.get(key)!r})")
        elif key[0] not in requests:
            lost.append(f"request row {key[0]} missing under its feedback")
    return lost


# ---------------------------------------------------------------------------- kill -9: ingest

DOCS_PER_STREAM = 20  # below the servicer's ingest batch: one Ingest call is one commit


def _batch(tag: str, batch: int) -> list[pb.IngestRequest]:
    return [
        pb.IngestRequest(
            document=pb.Document(
                id=f"{tag}-b{batch}-d{j}",
                text=" ".join(
                    f"Fact {k} of {tag} batch {batch} item {j} concerns topic{(j + k) % 7}." for k in range(8)
                ),
                metadata={"batch": f"{tag}-{batch}"},
            )
        )
        for j in range(DOCS_PER_STREAM)
    ]


def ingest_kill_round(
    server: LiveServer, tag: str, rng: random.Random, *, min_s: float = 0.3, max_s: float = 2.0
) -> tuple[KillRound, set[str]]:
    """Ingest batches (one Ingest stream each) until SIGKILL; then the index must hold every
    acknowledged batch whole, no batch in part, and FAISS must agree with the docstore."""
    result = KillRound()
    acked: set[str] = set()
    server.start()
    metadata = server.metadata()

    def writer() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.KnowledgeStub(channel)
            batch = 0
            while True:
                try:
                    stub.Ingest(iter(_batch(tag, batch)), timeout=60, metadata=metadata)
                except grpc.RpcError as exc:
                    result.errors[_code(exc).name] += 1
                    if _code(exc) not in (Code.UNAVAILABLE, Code.CANCELLED) and server.alive():
                        result.details.append(f"{_code(exc).name} {_details(exc)[:200]}")
                    return
                acked.add(f"{tag}-{batch}")
                batch += 1

    killer = _kill_after(server, rng.uniform(min_s, max_s))
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    killer.join()
    thread.join(60)
    result.acknowledged = len(acked)
    return result, acked


def check_index(data_dir: Path, acked: set[str]) -> tuple[str, list[str]]:
    """(integrity_check, problems) of the server's knowledge index after a crash: every
    acknowledged batch whole, no batch in part, FAISS ids == docstore chunk ids, searchable."""
    import numpy as np

    from hybrid_assistant.retrieval.embedder import HashingEmbedder
    from hybrid_assistant.retrieval.knowledge_base import KnowledgeBase
    from hybrid_assistant.retrieval.settings import RetrievalSettings

    directory = data_dir / "index"
    problems: list[str] = []
    status = integrity(directory / "docstore.sqlite3")
    kb = KnowledgeBase.open(directory, HashingEmbedder(), RetrievalSettings())
    try:
        conn = sqlite3.connect(directory / "docstore.sqlite3")
        try:
            batches = Counter(
                r[0] for r in conn.execute("SELECT value FROM document_metadata WHERE key = 'batch'")
            )
            chunk_ids = np.array(
                [r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64
            )
            declared = conn.execute("SELECT COALESCE(SUM(chunk_count), 0) FROM documents").fetchone()[0]
        finally:
            conn.close()
        partial = {b: n for b, n in batches.items() if n != DOCS_PER_STREAM}
        if partial:
            problems.append(f"batches in part: {partial}")
        problems += [
            f"acknowledged batch {b} missing" for b in sorted(acked) if batches.get(b) != DOCS_PER_STREAM
        ]
        if declared != len(chunk_ids):
            problems.append(f"documents declare {declared} chunks, {len(chunk_ids)} stored")
        index = kb._index
        live = np.setdiff1d(index.ids(), np.fromiter(index._tombstones, dtype=np.int64))
        if not np.array_equal(np.sort(live), chunk_ids):
            problems.append(f"FAISS ids ({len(live)}) != docstore chunk ids ({len(chunk_ids)})")
        if len(chunk_ids) and not kb.search("fact concerns topic3", top_k=3, mode="hybrid"):
            problems.append("no search hits")
    finally:
        kb.close()
    return status, problems


# ---------------------------------------------------------------------------- kill -9: training


def training_kill_round(
    model_dir: Path,
    out_root: Path,
    name: str,
    rng: random.Random,
    *,
    mode: str = "loop",
    timeout_s: float = 300,
) -> dict[str, Any]:
    """Run :mod:`hybrid_assistant.testing.train_worker`, kill it (at random after its first publish, or where
    ``mode`` makes it die), then check what the output directory holds."""
    process = subprocess.Popen(
        [sys.executable, "-m", WORKER, str(model_dir), str(out_root), name, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    published = 0
    deadline = time.monotonic() + timeout_s
    try:
        if mode == "loop":
            wanted = rng.randint(1, 2)
            while published < wanted and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                published += line.startswith("published")
            time.sleep(rng.uniform(0.0, 1.5))
        process.wait(timeout=max(1.0, deadline - time.monotonic()) if mode != "loop" else 0.001)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    rest = process.stdout.read()
    published += sum(line.startswith("published") for line in rest.splitlines())
    stderr = process.stderr.read() if process.stderr else ""
    return {
        "published": published,
        "returncode": process.returncode,
        **inspect_output(model_dir, out_root, name),
        "stderr_tail": stderr[-1500:],
    }


def inspect_output(model_dir: Path, out_root: Path, name: str) -> dict[str, Any]:
    """Does ``out_root/name`` exist, does it pass the server's own adapter checks, and what
    hidden staging/trash directories were left beside it."""
    from transformers import AutoModelForCausalLM

    from hybrid_assistant.adapters.peft_format import BaseModelSpec, inspect_adapter

    target = out_root / name
    leftovers = sorted(p.name for p in out_root.glob(f".{name}.*"))
    out: dict[str, Any] = {"exists": target.exists(), "loads": False, "error": "", "leftovers": leftovers}
    if target.exists():
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir)
            inspect_adapter(target, BaseModelSpec.from_model(model, model_dir.name), 64)
            out["loads"] = True
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return out


# ---------------------------------------------------------------------------- disk full


def set_fsize(pid: int, limit: int) -> None:
    """Set the running process's RLIMIT_FSIZE soft limit (hard stays); SIGXFSZ is ignored by
    Python, so writes past the limit fail with EFBIG instead of killing it."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


def _healthy(target: str) -> str | None:
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.AssistantStub(channel).Generate(
                pb.GenerateRequest(messages=_user("hi"), sampling=pb.SamplingParams(max_tokens=2)), timeout=30
            )
        except grpc.RpcError as exc:
            return f"plain Generate: {_code(exc).name} {_details(exc)[:200]}"
    return None


@dataclass
class DiskFullResult:
    full_code: str = ""
    full_details: str = ""
    healthy_while_full: str | None = None
    served_while_full: str = ""
    recovered_code: str = ""
    recovered_details: str = ""
    integrity: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def clear_error(self) -> bool:
        return self.full_code != "OK" and grpc.StatusCode[self.full_code] in DOCUMENTED


def disk_full_ingest(server: LiveServer) -> DiskFullResult:
    """Ingest with no room to grow any file, check the answer and health; then with room again."""
    result = DiskFullResult()
    server.start()
    metadata = server.metadata()
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.KnowledgeStub(channel)
        stub.Ingest(iter(_batch("df", 0)), timeout=60, metadata=metadata)
        set_fsize(server.pid, 0)
        try:
            try:
                stub.Ingest(iter(_batch("df", 1)), timeout=60, metadata=metadata)
                result.full_code = "OK"
            except grpc.RpcError as exc:
                result.full_code, result.full_details = _code(exc).name, _details(exc)[:300]
            result.healthy_while_full = _healthy(server.target) if server.alive() else "server exited"
        finally:
            if server.alive():
                set_fsize(server.pid, resource.RLIM_INFINITY)
        acked = {"df-0"}
        if server.alive():
            try:
                stub.Ingest(iter(_batch("df", 2)), timeout=60, metadata=metadata)
                result.recovered_code = "OK"
                acked.add("df-2")
            except grpc.RpcError as exc:
                result.recovered_code, result.recovered_details = _code(exc).name, _details(exc)[:300]
    server.stop()
    if result.full_code == "OK":
        acked.add("df-1")
    result.integrity, result.problems = check_index(server.data_dir, acked)
    return result


def disk_full_logging(server: LiveServer) -> DiskFullResult:
    """Generate + feedback with no room to grow the request log, then with room again."""
    result = DiskFullResult()
    server.start()
    metadata = server.metadata()
    acked: dict[tuple[str, str], float] = {}
    with grpc.insecure_channel(server.target) as channel:
        assistant, experiments = pb_grpc.AssistantStub(channel), pb_grpc.ExperimentsStub(channel)

        def generate_and_rate(request_id: str) -> tuple[str, str]:
            try:
                assistant.Generate(
                    pb.GenerateRequest(
                        request_id=request_id, messages=_user("hi"), sampling=pb.SamplingParams(max_tokens=2)
                    ),
                    timeout=30,
                )
                experiments.RecordFeedback(
                    pb.RecordFeedbackRequest(request_id=request_id, metric="rating", value=4.0),
                    timeout=30,
                    metadata=metadata,
                )
            except grpc.RpcError as exc:
                return _code(exc).name, _details(exc)[:300]
            acked[(request_id, "rating")] = 4.0
            return "OK", ""

        first = generate_and_rate("df-before")
        if first[0] != "OK":
            result.problems.append(f"before the disk filled: {first}")
        set_fsize(server.pid, 0)
        try:
            # A durable write on a full disk: feedback on a request whose row is already stored.
            try:
                experiments.RecordFeedback(
                    pb.RecordFeedbackRequest(request_id="df-before", metric="second", value=1.0),
                    timeout=30,
                    metadata=metadata,
                )
                result.full_code = "OK"
            except grpc.RpcError as exc:
                result.full_code, result.full_details = _code(exc).name, _details(exc)[:300]
            # A request served on a full disk: its log row cannot be written; feedback on it.
            result.served_while_full = "/".join(generate_and_rate("df-full"))
            result.healthy_while_full = _healthy(server.target) if server.alive() else "server exited"
        finally:
            if server.alive():
                set_fsize(server.pid, resource.RLIM_INFINITY)
        if server.alive():
            time.sleep(0.5)
            result.recovered_code, result.recovered_details = generate_and_rate("df-after")
    server.stop()
    path = server.data_dir / "request-log.sqlite3"
    result.integrity = integrity(path)
    result.problems += missing_feedback(path, acked)
    return result

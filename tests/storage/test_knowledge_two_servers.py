"""Real server processes on one PostgreSQL: an Ingest RPC through replica A is retrievable
through replica B within seconds, a Delete through B leaves A (each keeps its own cache), and a
replica refuses a knowledge schema newer than it knows."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import psycopg

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import ServerProcess
from hybrid_assistant.retrieval.shared_schema import SCHEMA_VERSION
from hybrid_assistant.retrieval.shared_store import SharedStore

TOKEN = "replica-token"
LIGHTHOUSE = "The Brannock lighthouse was painted cobalt blue in 1911 by keeper Ilse Varn."
FERRY = "The Marrowby ferry crosses the Sound in forty minutes and carries twelve cars."


def start(model: Path, data: Path, dsn: str, log: Path) -> ServerProcess:
    env = {
        "HA_MODEL_PATH": str(model),
        "HA_DATA_DIR": str(data),
        "HA_THREADS": "1",
        "HA_EMBEDDER": "hashing",
        "HA_DATABASE_URL": dsn,
        "HA_ADMIN_TOKEN": TOKEN,
        "HA_MAX_TOTAL_TOKENS": "512",
        "HA_MAX_PROMPT_TOKENS": "384",
    }
    return ServerProcess(env=env, log=log)


def documents_of(client: AssistantClient, query: str) -> list[str]:
    try:
        return [p.document_id for p in client.retrieve(query, top_k=3, mode="lexical").passages]
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:  # no documents yet
            return []
        raise


def wait_until(check: object, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "the change did not reach the other replica in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_ingest_via_one_replica_is_retrievable_via_the_other(
    tiny_model_dir: Path, pg_dsn: str, tmp_path: Path
) -> None:
    servers = [
        start(tiny_model_dir, tmp_path / name, pg_dsn, tmp_path / f"{name}.log") for name in ("a", "b")
    ]
    try:
        a, b = (s.wait_ready(timeout=180) for s in servers)
        with (
            AssistantClient(a.target, token=TOKEN, timeout=30) as via_a,
            AssistantClient(b.target, token=TOKEN, timeout=30) as via_b,
        ):
            reply = via_a.ingest([{"id": "lighthouse", "text": LIGHTHOUSE}, {"id": "ferry", "text": FERRY}])
            assert (reply.received, reply.added) == (2, 2)
            assert documents_of(via_a, "lighthouse cobalt")[:1] == ["lighthouse"]  # at once on A
            waited = wait_until(lambda: documents_of(via_b, "lighthouse cobalt")[:1] == ["lighthouse"])
            assert waited < 5.0, waited
            hit_a = via_a.retrieve("ferry cars", top_k=1, mode="lexical").passages[0]
            hit_b = via_b.retrieve("ferry cars", top_k=1, mode="lexical").passages[0]
            # One store, one numbering: a citation names the same chunk on every replica.
            assert (hit_a.document_id, hit_a.chunk_id, hit_a.text) == (
                hit_b.document_id,
                hit_b.chunk_id,
                hit_b.text,
            )
            assert via_b.delete_documents(["ferry"]).deleted == 1
            wait_until(lambda: documents_of(via_a, "ferry cars") == [])
            wait_until(lambda: via_a.index_stats().fingerprint == via_b.index_stats().fingerprint)
            assert via_a.index_stats().documents == via_b.index_stats().documents == 1
    finally:
        for s in servers:
            s.stop()


def test_a_replica_refuses_to_start_on_a_newer_knowledge_schema(
    tiny_model_dir: Path, pg_dsn: str, tmp_path: Path
) -> None:
    SharedStore.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1 WHERE component = 'knowledge'")
    server = start(tiny_model_dir, tmp_path / "data", pg_dsn, tmp_path / "refused.log")
    try:
        assert server.proc.wait(timeout=120) == 1
    finally:
        server.stop()
    log = (tmp_path / "refused.log").read_text()
    assert f"knowledge schema is at version {SCHEMA_VERSION + 1}" in log, log[-3000:]
    assert "Run that release (or newer) on every replica" in log

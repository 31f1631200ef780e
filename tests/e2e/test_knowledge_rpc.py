"""Knowledge RPCs and retrieval-augmented generation over gRPC (real FAISS + SQLite, hashing embedder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.v1 import assistant_pb2 as pb
from tests.helpers import ServerThread

TOKEN = "kb-token"
DOCS = [
    {
        "id": "lighthouse",
        "text": "The Brannock lighthouse was painted cobalt blue in 1911 by keeper Ilse Varn.",
    },
    {"id": "ferry", "text": "The Marrowby ferry crosses the Sound in forty minutes and carries twelve cars."},
    {
        "id": "mill",
        "text": "The Osterby mill grinds barley with a waterwheel of oak and iron.",
        "metadata": {"k": "v"},
    },
]


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.fixture
def kb_server(start_server: Callable[..., ServerThread]) -> ServerThread:
    return start_server(admin_token=TOKEN)


def test_ingest_retrieve_update_delete(kb_server: ServerThread) -> None:
    with AssistantClient(kb_server.target, token=TOKEN) as client:
        reply = client.ingest(DOCS)
        assert (reply.received, reply.added, reply.unchanged) == (3, 3, 0)
        assert reply.chunks_added >= 3
        assert client.ingest(DOCS).unchanged == 3  # content hash: a no-op
        stats = client.index_stats()
        assert (stats.documents, stats.index_type) == (3, "flat")
        for mode in ("dense", "lexical", "hybrid"):
            hits = client.retrieve("which ferry carries cars", top_k=2, mode=mode).passages
            assert hits[0].document_id == "ferry", mode
        filtered = client.retrieve("waterwheel barley", metadata_filter={"k": "v"}).passages
        assert [p.document_id for p in filtered] == ["mill"]
        changed = [{"id": "ferry", "text": "The Marrowby ferry now takes ninety minutes."}]
        assert client.ingest(changed).updated == 1
        assert "ninety" in client.retrieve("Marrowby ferry minutes", top_k=1).passages[0].text
        before = client.index_stats().fingerprint
        deleted = client.delete_documents(["mill", "ghost"])
        assert (deleted.deleted, list(deleted.not_found)) == (1, ["ghost"])
        assert client.index_stats().documents == 2
        assert client.index_stats().fingerprint != before
        assert client.server_info().index_fingerprint == client.index_stats().fingerprint


def test_generate_with_retrieval_cites_passages(
    kb_server: ServerThread, tiny_adapters: dict[str, Path]
) -> None:
    question = "What colour was the Brannock lighthouse painted?"
    with AssistantClient(kb_server.target, token=TOKEN) as client:
        client.ingest(DOCS)
        client.load_adapter("alpha", "alpha")
        plain = client.generate(question, temperature=0, max_tokens=8)
        rag = client.generate(question, temperature=0, max_tokens=8, retrieval=True, top_k=2)
        both = client.generate(
            question, adapter="alpha", temperature=0, max_tokens=8, retrieval=True, top_k=2
        )
        streamed = list(client.stream(question, temperature=0, max_tokens=8, retrieval=True, top_k=2))
        supplied = pb.Passage(document_id="given", chunk_id="g1", text="The lighthouse is green.")
        oracle = client.generate(question, temperature=0, max_tokens=8, passages=[supplied])
    assert plain.arm == "base" and not plain.contexts and plain.usage.context_tokens == 0
    assert rag.arm == "rag" and both.arm == "adapter:alpha+rag" and oracle.arm == "context"
    assert rag.contexts[0].document_id == "lighthouse"
    assert [c.index for c in rag.contexts] == [1, 2]
    assert rag.usage.context_tokens > 0 and rag.usage.prompt_tokens > plain.usage.prompt_tokens
    assert rag.timings.retrieval_ms > 0
    assert [c.document_id for c in streamed[-1].summary.contexts] == [c.document_id for c in rag.contexts]
    assert streamed[-1].summary.text == rag.text
    assert [c.document_id for c in oracle.contexts] == ["given"]


def test_knowledge_failure_paths(kb_server: ServerThread) -> None:
    with AssistantClient(kb_server.target) as anonymous:
        code, _ = code_of(lambda: anonymous.ingest(DOCS))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(lambda: anonymous.delete_documents(["x"]))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        code, details = code_of(lambda: anonymous.retrieve("anything"))
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "ingest" in details  # empty index
        code, details = code_of(lambda: anonymous.generate("hi", retrieval=True))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        code, details = code_of(lambda: anonymous.retrieve("   "))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "query is empty" in details
        code, details = code_of(lambda: anonymous.retrieve("x", top_k=1000))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "1000" in details
        code, _ = code_of(lambda: anonymous.generate("hi", retrieval=True, top_k=1000))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    with AssistantClient(kb_server.target, token=TOKEN) as admin:
        code, _ = code_of(lambda: admin.delete_documents([]))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        reply = admin.ingest([{"id": "", "text": "no id"}, {"id": "blank", "text": "   "}, DOCS[0]])
        assert reply.added == 1 and len(reply.errors) == 2


def test_ingest_cli_reports_skipped_files(kb_server: ServerThread, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha\nThe alpha valley grows saffron.")
    (folder / "sub" / "b.txt").write_text("The beta river floods in May.")
    (folder / "c.jsonl").write_text(
        json.dumps({"id": "c1", "text": "Gamma hill has a copper mine.", "region": "north"}) + "\n{broken\n"
    )
    (folder / "d.bin.txt").write_bytes(b"\x00\x01\x02binary")
    env = {**os.environ, "HA_TARGET": kb_server.target}
    cmd = [sys.executable, "-m", "hybrid_assistant.server", "ingest", str(folder), "--token", TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "3 added" in out.stdout
    assert "c.jsonl:2" in out.stdout + out.stderr  # malformed line, with its number
    assert "d.bin.txt" in out.stdout + out.stderr  # binary file skipped, not fatal
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_assistant.server",
            "knowledge",
            "search",
            "copper mine",
            "--top-k",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "c1" in search.stdout


def test_hostile_knowledge_input_is_invalid_argument(kb_server: ServerThread) -> None:
    import random

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    admin_md = [("authorization", f"Bearer {TOKEN}")]
    with AssistantClient(kb_server.target, token=TOKEN) as admin:
        admin.ingest(DOCS)
        # Streamed Ingest messages that do not decode (random bytes, a string field that is not
        # UTF-8) were INTERNAL: the decode error surfaced inside the handler.
        with grpc.insecure_channel(kb_server.target) as channel:
            raw_ingest = channel.stream_unary("/hybrid_assistant.v1.Knowledge/Ingest")
            rng = random.Random(10)
            payloads = [b"\x0a\x05\x0a\x03\xff\xfe\xfd"] + [
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(30)
            ]
            for payload in payloads:
                valid = pb.IngestRequest()
                try:
                    valid.ParseFromString(payload)
                except Exception:
                    valid = None  # type: ignore[assignment]
                try:
                    raw_ingest(iter([payload]), metadata=admin_md, timeout=30)
                except grpc.RpcError as exc:
                    assert valid is None and exc.code() is invalid, (payload, exc.code(), exc.details())
        # Garbage that does decode: bad documents are named in errors, the rest ingested.
        hostile = [
            {"id": "x" * 5000, "text": "long id"},
            {"id": "nul\x00id", "text": "text with \x00 NUL and \x1b escapes"},
            {"id": "wide-meta", "text": "many keys", "metadata": {f"k{i}": "v" for i in range(1000)}},
            {"id": "long-value", "text": "long value", "metadata": {"k": "v" * 100_000}},
            {"id": "ok", "text": "The pewter kettle whistles at dawn."},
        ]
        reply = admin.ingest(hostile)
        assert (reply.received, reply.added, len(reply.errors)) == (5, 2, 3), reply
        assert all(len(e) < 1000 for e in reply.errors)
        many_bad = admin.ingest([{"id": "", "text": "no id"}] * 1000)
        assert len(many_bad.errors) == 101 and "900 more" in many_bad.errors[-1]
        # metadata_filter past SQLite's 500 compound terms was INTERNAL.
        wide = {f"k{i}": "v" for i in range(600)}
        rag_wide = pb.RetrievalOptions(enabled=True, metadata_filter=wide)
        code, details = code_of(lambda: admin.retrieve("kettle", metadata_filter=wide))
        assert code is invalid and "metadata_filter has 600 keys; at most 32" in details
        code, details = code_of(lambda: admin.generate("kettle?", retrieval=rag_wide))
        assert code is invalid and "retrieval.metadata_filter has 600 keys" in details
        code, details = code_of(lambda: admin.retrieve("kettle", metadata_filter={"k" * 100_000: "v"}))
        assert code is invalid and len(details) < 2000
        code, details = code_of(lambda: admin.retrieve("kettle " * 10_000))
        assert code is invalid and "query has 70000 characters" in details
        filtered = admin.retrieve("kettle", metadata_filter={f"k{i}": "v" for i in range(32)})
        assert list(filtered.passages) == []
        # DeleteDocuments: bounded count and id length.
        code, details = code_of(lambda: admin.delete_documents([f"id{i}" for i in range(20_000)]))
        assert code is invalid and "at most 10000" in details
        code, details = code_of(lambda: admin.delete_documents(["y" * 5000]))
        assert code is invalid and len(details) < 2000
        assert admin.delete_documents(["ok"]).deleted == 1
        assert admin.retrieve("pewter kettle").passages  # the NUL document, still searchable
        assert admin.index_stats().documents == 4

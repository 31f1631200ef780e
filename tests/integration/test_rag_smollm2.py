"""Retrieval end to end on the real models: MiniLM embeddings, SmolLM2 answers, the demo knowledge base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_assistant.client import AssistantClient
from tests.helpers import ServerThread

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo"


def test_ingest_folder_then_ask_with_and_without_retrieval(smol_server: ServerThread) -> None:
    env = {**os.environ, "HA_TARGET": smol_server.target}
    ingest = subprocess.run(
        [sys.executable, "-m", "hybrid_assistant.server", "ingest", str(DEMO / "kb")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "47 added" in ingest.stdout

    facts = [json.loads(line) for line in (DEMO / "facts.jsonl").read_text().splitlines()[:12]]
    cited = 0
    with AssistantClient(smol_server.target) as client:
        for fact in facts:
            rag = client.generate(
                fact["test_question"], retrieval=True, top_k=3, temperature=0, max_tokens=32
            )
            cited += f"{fact['doc_id']}.md" in [c.document_id for c in rag.contexts]
        closed = client.generate(facts[0]["test_question"], temperature=0, max_tokens=32)
    assert not closed.contexts
    assert cited >= 10, f"the gold document was retrieved for {cited}/12 questions"

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_assistant.server",
            "generate",
            facts[0]["test_question"],
            "--rag",
            "--contexts",
            "--temperature",
            "0",
            "--max-tokens",
            "32",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"{facts[0]['doc_id']}.md" in cli.stderr  # the citation list names the right document

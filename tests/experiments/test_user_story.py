"""The issue's story end to end: define "style-adapter vs rag", send traffic with subject keys through
the Python client, record feedback, get the per-arm report with intervals and the HTML plot; and
the same through the CLI (create, pause/resume, weights, stop, report, export)."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.requests import experiment_arm
from hybrid_assistant.server.cli import app
from hybrid_assistant.server.config import AdapterPreload
from tests.helpers import ServerThread

DOCS = [
    {"id": "herons", "text": "The Brackwater herons nest on the old pier every spring."},
    {"id": "ferry", "text": "The Vask ferry leaves Kessmouth at nine each morning."},
]
QUESTIONS = ["When does the ferry leave?", "Where do the herons nest?", "Tell me about Kessmouth."]


@pytest.fixture
def server(start_server: Callable[..., ServerThread], tiny_adapters: dict[str, Path]) -> ServerThread:
    preload = [AdapterPreload(name="style", path=str(tiny_adapters["alpha"]))]
    return start_server(preload_adapters=preload, admin_token="admin")


def run_cli(server: ServerThread, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--target", server.target])
    assert result.exit_code == 0, result.output
    return result.output


def test_style_adapter_vs_rag_through_the_python_client(server: ServerThread, tmp_path: Path) -> None:
    with AssistantClient(server.target, token="admin", timeout=60) as client:
        client.ingest(DOCS)
        client.create_experiment(
            "style-vs-rag",
            [
                experiment_arm("style-adapter", adapter="style", control=True),
                experiment_arm("rag", retrieval=True, top_k=2),
            ],
            description="style-adapter vs rag",
        )
        rng = random.Random(7)
        arms: dict[str, set[str]] = {}
        for user in range(40):
            subject = f"user-{user}"
            for question in QUESTIONS[:2]:
                reply = client.generate(
                    question, experiment="style-vs-rag", subject_key=subject, max_tokens=4
                )
                arms.setdefault(reply.arm, set()).add(subject)
                assert (reply.adapter == "style") == (reply.arm == "style-adapter")
                assert bool(reply.contexts) == (reply.arm == "rag")
                # Users like the grounded answers more: thumbs up 85% vs 30% of the time.
                liked = rng.random() < (0.85 if reply.arm == "rag" else 0.30)
                assert not client.record_feedback(reply.request_id, "thumbs_up", liked).duplicate
        report = client.experiment_report("style-vs-rag")

    assert report.description == "style-adapter vs rag" and report.state == 1
    by_arm = {a.arm: a for a in report.arms}
    assert set(by_arm) == {"style-adapter", "rag"} and by_arm["style-adapter"].control
    for name, arm in by_arm.items():
        assert arm.subjects == len(arms[name]) and arm.requests == 2 * arm.subjects and arm.errors == 0
        assert 0 < arm.latency_p50_ms <= arm.latency_p99_ms and arm.mean_completion_tokens > 0
        (thumbs,) = arm.metrics
        assert thumbs.metric == "thumbs_up" and thumbs.n == arm.requests and thumbs.subjects == arm.subjects
        assert thumbs.ci_low <= thumbs.mean <= thumbs.ci_high
    rag = by_arm["rag"].metrics[0]
    assert rag.diff_vs_control == pytest.approx(rag.mean - by_arm["style-adapter"].metrics[0].mean)
    assert 0 < rag.diff_ci_low < rag.diff_vs_control < rag.diff_ci_high
    assert rag.p_value < 0.01

    # The report and its HTML page through the CLI.
    page = tmp_path / "report.html"
    out = run_cli(server, "experiments", "report", "style-vs-rag", "--html", str(page))
    assert "rag" in out and "thumbs_up" in out and "vs control" in out
    html = page.read_text()
    assert html.count("<img") == 2 and "style-adapter vs rag" in html and "Method" in html

    # The log export, for users' own analysis.
    jsonl = run_cli(server, "experiments", "export", "--experiment", "style-vs-rag", "--token", "admin")
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert len(rows) == 80 and all(r["in_test"] and "thumbs_up" in r["feedback"] for r in rows)
    assert {r["arm"] for r in rows} == {"style-adapter", "rag"}
    assert all(r["document_ids"] for r in rows if r["arm"] == "rag")
    text = run_cli(server, "experiments", "export", "--format", "csv", "--token", "admin")
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 80 and "feedback.thumbs_up" in table[0]


def test_cli_verbs(server: ServerThread) -> None:
    out = run_cli(
        server,
        "experiments",
        "create",
        "cli-exp",
        "--arm",
        "base:control",
        "--arm",
        "rag:retrieval,top_k=2,weight=3",
        "--token",
        "admin",
    )
    assert "created cli-exp" in out and "weight 3" in out
    assert "running" in run_cli(server, "experiments", "list")
    assert "paused" in run_cli(server, "experiments", "pause", "cli-exp", "--token", "admin")
    assert "running" in run_cli(server, "experiments", "resume", "cli-exp", "--token", "admin")
    assert "rag=1" in run_cli(server, "experiments", "weights", "cli-exp", "rag=1", "--token", "admin")
    assert "stopped" in run_cli(server, "experiments", "stop", "cli-exp", "--token", "admin")
    assert "stopped" in run_cli(server, "experiments", "list")
    # Errors are one line and exit 1.
    result = CliRunner().invoke(app, ["experiments", "resume", "cli-exp", "--target", server.target])
    assert result.exit_code == 1 and "UNAUTHENTICATED" in result.output
    result = CliRunner().invoke(app, ["experiments", "create", "x", "--arm", "a:colour=red"])
    assert result.exit_code != 0 and "colour=red" in result.output

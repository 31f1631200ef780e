"""A full evaluation through a real server on the tiny model: runner, cache, analysis, reports;
through the command line, and as a library user calls it (:func:`run_eval`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.eval.runner import EvalRunError
from hybrid_assistant.eval.workflow import EvalConfig, EvalInputError, run_eval
from tests.helpers import ServerThread

DOCS = {
    "ferry": "The Marrowby ferry carries twelve cars across the Sound.",
    "mill": "The Osterby mill grinds barley with an oak waterwheel.",
    "tower": "The Kessmouth clock tower was built of grey granite in 1852.",
}


def write_dataset(tmp: Path) -> tuple[Path, Path, Path]:
    docs = tmp / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / f"{name}.md").write_text(text)
    items = [
        {
            "id": "q1",
            "question": "How many cars does the Marrowby ferry carry?",
            "answers": ["twelve", "12"],
            "gold_doc_ids": ["ferry"],
            "options": ["twelve", "three"],
            "stratum": "kb",
            "style": "json-answer",
        },
        {
            "id": "q2",
            "question": "What does the Osterby mill grind?",
            "answers": ["barley"],
            "gold_doc_ids": ["mill"],
            "stratum": "kb",
            "style": "json-answer",
        },
        {
            "id": "q3",
            "question": "What stone is the Kessmouth clock tower made of?",
            "answers": ["granite"],
            "gold_doc_ids": ["tower"],
            "options": ["granite", "marble"],
            "stratum": "kb",
            "style": "json-answer",
        },
        {
            "id": "u1",
            "question": "Who owns the Marrowby ferry?",
            "answers": [],
            "answerable": False,
            "stratum": "unanswerable",
            "style": "json-answer",
        },
        {
            "id": "c1",
            "question": "What is the capital of France?",
            "answers": ["Paris"],
            "stratum": "control",
            "style": "json-answer",
        },
    ]
    dataset = tmp / "eval.jsonl"
    dataset.write_text("".join(json.dumps(i) + "\n" for i in items))
    spec = tmp / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "name": "json-answer",
                "description": "json",
                "answer_field": "answer",
                "max_chars": 200,
                "json_schema": {
                    "type": "object",
                    "required": ["answer"],
                    "properties": {"answer": {"type": "string"}},
                },
            }
        )
    )
    return dataset, spec, docs


def eval_command(dataset: Path, *flags: str) -> list[str]:
    """``hybrid-assistant eval --dataset DATASET FLAGS...`` in a child interpreter."""
    return [sys.executable, "-m", "hybrid_assistant.server", "eval", "--dataset", str(dataset), *flags]


def test_eval_cli_end_to_end(
    start_server: Callable[..., ServerThread], tiny_adapters: dict[str, Path], tmp_path: Path
) -> None:
    server = start_server()
    dataset, spec, docs = write_dataset(tmp_path)
    env = {**os.environ, "HA_TARGET": server.target}
    ingest = [sys.executable, "-m", "hybrid_assistant.server", "ingest", str(docs), "--ids", "stem"]
    assert subprocess.run(ingest, env=env, capture_output=True, timeout=120).returncode == 0
    with AssistantClient(server.target) as client:
        client.load_adapter("alpha", "alpha")
    out = tmp_path / "report"
    cmd = eval_command(
        dataset,
        "--out",
        str(out),
        "--arms",
        "base,adapter:alpha,rag@2,adapter:alpha+rag@2,oracle",
        "--style-spec",
        str(spec),
        "--documents",
        str(docs),
        "--max-tokens",
        "8",
        "--resamples",
        "200",
        "--sequential-sample",
        "5",  # one answer per arm, the oracle's included
    )
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "report:" in first.stdout and "adapter:alpha+rag@2" in first.stdout
    for name in ("report.json", "report.md", "report.html", "answers.jsonl", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert (run["requests"], run["failed"], run["cached"]) == (25, 0, 0)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    rag = next(a for a in answers if a["arm"] == "rag@2" and a["item_id"] == "q1")
    assert rag["contexts"][0] == "ferry"  # retrieved, cited by the server
    oracle = next(a for a in answers if a["arm"] == "oracle" and a["item_id"] == "q3")
    assert oracle["contexts"] == ["tower"]
    assert all(len(a["option_logprobs"]) == 2 for a in answers if a["item_id"] in ("q1", "q3"))
    assert "data:image/png;base64" in (out / "report.html").read_text()
    # Score re-reads each option item's prompt right after its Generate: the prefix cache serves it.
    cache = run["prefix_cache"]
    assert cache["hit_tokens"] > 0 and 0 < cache["hit_rate"] < 1 and cache["block_tokens"] == 16
    assert "prefix cache" in (out / "report.md").read_text()

    second = subprocess.run(cmd[:-2], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["cached"] == 25  # a re-run only asks what changed


def test_eval_cli_reports_missing_adapter(start_server: Callable[..., ServerThread], tmp_path: Path) -> None:
    server = start_server()
    dataset, _, _ = write_dataset(tmp_path)
    cmd = eval_command(dataset, "--arms", "base,adapter:nope", "--out", str(tmp_path / "r"))
    cmd += ["--target", server.target]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "'nope'" in out.stderr
    bad = subprocess.run([*cmd[:6], "--arms", "base,wat"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "wat" in bad.stderr


def test_run_eval_as_a_library(start_server: Callable[..., ServerThread], tmp_path: Path) -> None:
    """No typer, no subprocess: a config in, a RunSummary out, the same files on disk."""
    server = start_server()
    dataset, spec, docs = write_dataset(tmp_path)
    out = tmp_path / "lib"
    config = EvalConfig(
        dataset=dataset,
        arms="base,oracle",
        out=out,
        style_spec=spec,
        documents=[docs],
        max_tokens=4,
        resamples=50,
        sequential_sample=2,
        target=server.target,
        progress=False,
    )
    summary = run_eval(config)
    assert (summary.items, summary.arms) == (5, ["base", "oracle"])
    assert (summary.stats.requests, summary.stats.failed, summary.stats.cached) == (10, 0, 0)
    assert len(summary.records) == 10 and {r.arm for r in summary.records} == {"base", "oracle"}
    assert summary.analysis.meta["n_items"] == 5 and summary.analysis.arm("oracle").operations.n == 5
    info = summary.stats.server
    assert info["model"] and info["cpu"] and info["cpu_features"]
    assert set(summary.phases_s) == {"load_s", "answer_s", "analyse_s", "report_s"}
    assert summary.sequential_s_per_answer is not None and summary.speedup_vs_one_at_a_time is not None
    assert json.loads((out / "run.json").read_text()) == json.loads(json.dumps(summary.to_dict()))
    assert summary.reports["html"] == out / "report.html" and summary.reports["html"].is_file()
    assert (out / "answers.jsonl").is_file() and (out / "answers-cache.sqlite").is_file()

    again = run_eval(config)  # the answer cache is the library's too
    assert again.stats.cached == 10

    with pytest.raises(EvalInputError, match="wat"):
        run_eval(EvalConfig(dataset=dataset, arms="base,wat", out=tmp_path / "x", target=server.target))
    with pytest.raises(EvalRunError, match="'nope'"):
        run_eval(EvalConfig(dataset=dataset, arms="adapter:nope", out=tmp_path / "x", target=server.target))
    assert not (tmp_path / "x" / "run.json").exists()

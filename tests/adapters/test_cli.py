"""``hybrid-assistant adapters train | train-demo | available`` on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_assistant.server.cli import app
from tests.adapters.conftest import fox_examples

runner = CliRunner()


def write_fox(path: Path, count: int = 8) -> Path:
    path.write_text("".join(e.to_json() + "\n" for e in fox_examples(count)))
    return path


def test_bad_data_is_a_one_line_error_with_line_numbers(paths: list[str], tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "response": "a"}\n{oops\n{"prompt": "q"}\n')
    result = runner.invoke(app, ["adapters", "train", "--data", str(data), "--name", "x", *paths])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "bad.jsonl:2: invalid JSON" in lines[0] and "bad.jsonl:3: 'response'" in lines[0]
    assert not (tmp_path / "adapters").exists()


def test_bad_options_and_names_exit_2(paths: list[str], tmp_path: Path) -> None:
    data = write_fox(tmp_path / "fox.jsonl")
    result = runner.invoke(app, ["adapters", "train", "--data", str(data), "--name", "../up", *paths])
    assert result.exit_code == 2 and "adapter name '../up' is not allowed" in result.output
    result = runner.invoke(
        app, ["adapters", "train", "--data", str(data), "--name", "x", "--rank", "0", *paths]
    )
    assert result.exit_code == 2 and "rank must be >= 1, got 0" in result.output


def test_train_then_available(paths: list[str], tmp_path: Path) -> None:
    data = write_fox(tmp_path / "fox.jsonl")
    args = ["adapters", "train", "--data", str(data), "--name", "fox", "--purpose", "fox line",
            "--rank", "4", "--epochs", "1", "--max-length", "64", "--no-progress", *paths]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained fox ->" in result.output and "validation loss" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output

    listed = runner.invoke(app, ["adapters", "available", *paths[:4], "--adapter-root", paths[5], "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)
    assert entry["name"] == "fox" and entry["valid"] and entry["metadata"]["purpose"] == "fox line"
    table = runner.invoke(app, ["adapters", "available", *paths])
    assert table.exit_code == 0 and table.output.splitlines()[1].split()[:3] == ["fox", "yes", "tiny-llama"]


def test_train_demo_prints_reused_the_second_time(paths: list[str]) -> None:
    args = ["adapters", "train-demo", "--only", "style", "--limit", "4", "--no-progress", *paths]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "style: trained" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "style: reused" in second.output


def test_sweep_refuses_questions_from_its_training_data(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held-out question that is in the training set is a usage error, before any training."""
    monkeypatch.setenv("HA_MODEL_PATH", str(tiny_model_dir))
    data = write_fox(tmp_path / "fox.jsonl", count=2)
    question = fox_examples(1)[0].messages[0].content
    questions = tmp_path / "questions.jsonl"
    item = {"id": "leak", "question": question, "answers": ["x"], "stratum": "kb"}
    questions.write_text(json.dumps(item) + "\n")
    out = tmp_path / "sweep"
    args = ["adapters", "sweep", "--data", str(data), "--questions", str(questions), "--sizes", "1",
            "--seeds", "0", "--data-dir", str(tmp_path / "data"), "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "['leak']" in result.output and "are in the training data" in result.output
    assert not (out / "adapters").exists()


SWEEP_INPUT_ERRORS = [
    (["--max-questions", "0"], "max_questions must be >= 1"),
    (["--strata", "nope"], "no questions of strata ['nope']"),
    (["--data", "missing.jsonl"], "cannot read"),
    (["--data", "latin1.jsonl"], "not UTF-8"),
    (["--style-spec", "missing.json"], "style spec:"),
    (["--questions", "latin1.jsonl"], "questions:"),
]


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("sweep-context", ["--shares", "0,x"], "expected comma-separated numbers"),
        ("sweep-context", ["--shares", "0,1.5"], "must be in [0, 1]"),
        *(("sweep-context", args, message) for args, message in SWEEP_INPUT_ERRORS),
        *(("sweep", args, message) for args, message in SWEEP_INPUT_ERRORS),
    ],
)
def test_sweeps_bad_options_and_files_exit_2_before_training(
    command: str, args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every input problem, unreadable files included, is a usage error before anything trains."""
    monkeypatch.setenv("HA_MODEL_PATH", str(tmp_path / "no-model"))  # never reached
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.jsonl").write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    out = tmp_path / "sweep"
    cli = ["adapters", command, "--data-dir", str(tmp_path / "data"), "--out", str(out), *args]
    result = runner.invoke(app, cli)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()

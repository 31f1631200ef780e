"""Report writing: three files, a self-contained HTML page with embedded plots, a terminal table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybrid_assistant.eval.analysis import EvalAnalysis, analyse
from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.dataset import load_style_spec
from hybrid_assistant.eval.report import terminal_table, write_reports
from tests.eval.synthetic import ARMS, make_items, make_records

SPEC = load_style_spec(Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_spec.json")


@pytest.fixture(scope="module")
def analysis() -> EvalAnalysis:
    items = make_items()
    return analyse(items, make_records(items), parse_arms(ARMS), SPEC, n_resamples=200)


def test_write_reports(analysis: EvalAnalysis, tmp_path: Path) -> None:
    paths = write_reports(analysis, tmp_path / "out")
    assert set(paths) == {"json", "md", "html"} and all(p.is_file() for p in paths.values())
    assert json.loads(paths["json"].read_text())["meta"]["n_items"] == analysis.meta["n_items"]

    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4  # arms, effects, strata, retrieval split
    # Self-contained: nothing is loaded from elsewhere.
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    assert "<script" not in html
    for arm in analysis.meta["arms"]:
        assert arm in html

    md = paths["md"].read_text()
    assert md.startswith("# Evaluation report")
    assert "| arm | contains |" in md and "data:image" not in md
    assert "retrieval effect on contains (adapter:style x rag)" in md


def test_report_without_factorial_or_retrieval(tmp_path: Path) -> None:
    items = make_items(n_docs=2, per_doc=2)
    arms = parse_arms("base,adapter:style")
    small = analyse(items, make_records(items, arms), arms, SPEC, n_resamples=50)
    html = write_reports(small, tmp_path)["html"].read_text()
    assert "No complete 2x2" in html and "No arm searched the index." in html
    assert html.count("data:image/png;base64,") == 2  # arms and strata


def test_terminal_table(analysis: EvalAnalysis) -> None:
    text = terminal_table(analysis)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["arm", "contains", "f1"]
    assert any(line.startswith("adapter:style+rag ") for line in lines)
    assert re.search(
        r"adapter:style x rag\s+contains\s+retrieval effect\s+\+0\.\d\d \[\+0\.\d\d, \+0\.\d\d\]", text
    )
    assert "\x1b[" not in text

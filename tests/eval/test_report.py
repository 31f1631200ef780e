"""Report writing: three files, a self-contained HTML page with embedded plots, a terminal table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybrid_assistant.eval.analysis import EvalAnalysis, analyse
from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.cost import ArmCost, costs_to_dict
from hybrid_assistant.eval.dataset import load_style_spec
from hybrid_assistant.eval.decision import decide
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
    assert "No cost probe in this run" in html and "No decision computed for this run." in html
    assert "Break-even" not in html
    assert "No two style levers (adapter, prompt, few-shot) share a context." in html
    assert "Training curves" not in html
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


LEVER_ARMS = "base,adapter:style,prompt,fewshot@2,rag,adapter:style+rag,prompt+rag"
#: Mean latency per request in the synthetic cost probe, and the adapter's training time.
PROBE_MS = {"adapter:style": 100.0, "fewshot@2": 300.0, "prompt": 200.0}
CURVE = {
    "train_loss_by_step": "2.0 1.6 1.1 0.9 0.5 0.4",
    "steps": "6",
    "epoch_end_steps": "3 6",
    "val_loss_by_epoch": "1.5 1.3",
}


def probe(arm: str) -> ArmCost:
    latency = PROBE_MS.get(arm, 150.0)
    train_s = 20.0 if "adapter:" in arm else None
    ids = [f"d{d}q0" for d in range(4)]
    return ArmCost(arm, 4, 4, 0, 0.5, 8.0, 60.0, 12.0, 20.0, latency, latency, train_s, ids, [latency] * 4)


@pytest.fixture(scope="module")
def lever_analysis() -> EvalAnalysis:
    """The synthetic analysis with prompt and few-shot arms, a cost probe, its decision, curves."""
    arms = parse_arms(LEVER_ARMS)
    items = make_items()
    result = analyse(items, make_records(items, arms), arms, SPEC, n_resamples=200)
    costs = {a.name: probe(a.name) for a in arms}
    # The lead's EvalAnalysis fields: costs and decision as JSON-ready dicts.
    vars(result).update(costs=costs_to_dict(costs), decision=decide(result, costs).to_dict())
    result.meta["adapters"] = {"style": CURVE, "other": {"purpose": "no curve"}}
    return result


def test_lever_sections(lever_analysis: EvalAnalysis, tmp_path: Path) -> None:
    paths = write_reports(lever_analysis, tmp_path)
    md = paths["md"].read_text()
    titles = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    assert titles[-1] == "Decision"
    added = {
        "Head to head: style levers with the same context",
        "Cost per arm",
        "Break-even: adapter vs prompt",
    }
    assert added <= set(titles)
    # Head to head: later lever minus earlier, same context only.
    assert re.search(r"\| prompt \| adapter:style \| format_valid \| -0\.\d\d \[", md)
    assert "| prompt+rag | adapter:style+rag | format_valid |" in md
    assert "| prompt | adapter:style+rag |" not in md
    # Cost per arm: the probe's numbers, the one-time cost only for adapters.
    assert "| fewshot@2 | 60.0 | 20 | 300 | 8.00 | none | 4 (0 failed) |" in md
    assert "| adapter:style | 60.0 | 20 | 100 | 8.00 | 20.0 s | 4 (0 failed) |" in md
    # Break-even by hand: few-shot reaches the adapter's format validity (prompt alone does not),
    # and costs 200 ms more per request, so 20 s of training are repaid after 100 requests.
    assert (
        "adapter:style vs fewshot@2 (same format validity): 20.0 s of training repaid after 100 requests"
        in md
    )
    assert (
        "adapter:style+rag: no prompt arm reaches its format validity (prompt arms tried: prompt+rag)" in md
    )
    decision = md[md.index("## Decision") :]
    # Retrieval answers as well with or without a style lever; the cheapest and simplest is rag alone.
    assert "knowledge: rag (contains +0." in decision
    assert "style: adapter:style (format_valid +1.00 [+1.00, +1.00] vs base)" in decision
    assert "- style: too few items to tell: 14 clusters (under 20)" in decision

    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 5  # arms, effects, strata, split, training curves
    assert "<h2>Training curves</h2>" in html and html.rindex("<h2>") == html.index("<h2>Decision</h2>")
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    assert json.loads(paths["json"].read_text())["lever_comparisons"][0]["arm"] == "prompt"

    text = terminal_table(lever_analysis)
    assert re.search(r"\nadapter:style\s+60\.0\s+20\s+100\s+8\.00\s+20\.0 s\s+4 \(0 failed\)", text)
    assert "\ndecision: knowledge: " in text and "\nbreak-even: adapter:style vs fewshot@2" in text

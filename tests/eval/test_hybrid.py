"""Adapter x retrieval: style retention under the context and the hybrid gain over the better part."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.eval.analysis import EvalAnalysis, analyse
from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.dataset import load_style_spec
from hybrid_assistant.eval.hybrid import ALL_ITEMS, hybrid_pairs, hybrid_results
from hybrid_assistant.eval.report import render_html, render_markdown, terminal_table
from hybrid_assistant.eval.report.hybrid import HYBRID_TITLE
from hybrid_assistant.eval.stats import ClusterBootstrap
from tests.eval.synthetic import ARMS, make_items, make_records

SPEC = load_style_spec(Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_spec.json")


def _analyse(arms_spec: str, n_docs: int = 4, per_doc: int = 2, plain: int = 0) -> EvalAnalysis:
    """The synthetic run on ``arms_spec``; the first ``plain`` items of ``adapter:style+rag`` answer
    in plain text (off-style, same answer)."""
    items = make_items(n_docs=n_docs, per_doc=per_doc)
    arms = parse_arms(arms_spec)
    records = make_records(items, arms)
    ids = [it.id for it in items[:plain]]
    records = [
        dataclasses.replace(r, text=f"The answer is {json.loads(r.text)['answer']}.")
        if r.arm == "adapter:style+rag" and r.item_id in ids
        else r
        for r in records
    ]
    return analyse(items, records, arms, SPEC, n_resamples=200)


@pytest.fixture(scope="module")
def full() -> EvalAnalysis:
    items = make_items()
    return analyse(items, make_records(items), parse_arms(ARMS), SPEC, n_resamples=200)


def test_retention_by_hand() -> None:
    analysis = _analyse("base,adapter:style,rag,adapter:style+rag", plain=3)
    [h] = analysis.hybrids
    assert (h.adapter, h.with_context_arm, h.context_arm) == ("adapter:style", "adapter:style+rag", "rag")
    # 10 items (8 on documents, one unanswerable, one control), all scored for format; the adapter
    # is always valid alone and loses 3 of them with retrieval.
    assert h.n == 10
    assert h.validity_without == 1.0
    assert h.validity_with == pytest.approx(0.7)
    assert h.retention == pytest.approx(0.7)
    assert h.retention_ci is not None and h.retention_ci[0] <= h.retention_ci[1] <= 1.0
    # The same numbers as the arms' own format validity.
    assert h.validity_with == pytest.approx(analysis.arm("adapter:style+rag").metrics["format_valid"].mean)


def test_zero_denominator_gives_no_retention(full: EvalAnalysis) -> None:
    by_adapter = {h.adapter: h for h in full.hybrids}
    knowledge = by_adapter["adapter:knowledge"]  # never answers in JSON
    assert knowledge.validity_without == 0.0
    assert knowledge.retention is None and knowledge.retention_ci is None
    assert full.to_dict()["hybrids"][1]["retention"] is None


def _values(
    adapter: list[float], context: list[float], both: list[float]
) -> dict[str, dict[str, np.ndarray]]:
    valid = np.ones(len(adapter))
    return {
        "format_valid": {"adapter:k": valid, "rag": valid * 0, "adapter:k+rag": valid},
        "contains": {
            "adapter:k": np.array(adapter),
            "rag": np.array(context),
            "adapter:k+rag": np.array(both),
        },
    }


def test_better_part_is_the_part_with_the_higher_mean() -> None:
    arms = parse_arms("adapter:k,rag,adapter:k+rag")
    boot = ClusterBootstrap(["g1", "g2", "g3", "g4"], 200, seed=0)
    strata = ["a", "a", "b", "b"]
    # The adapter alone (0.75) beats retrieval alone (0.25): the gain is measured against it.
    [h] = hybrid_results(_values([1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]), arms, boot, strata)
    assert (h.knowledge_adapter, h.knowledge_context, h.knowledge_hybrid) == (0.75, 0.25, 1.0)
    assert h.better_part == "adapter:k" and h.gain == pytest.approx(0.25)
    # Within each stratum the better part is chosen again, on that stratum's items.
    a, b = h.strata
    assert (a.scope, a.better_part, a.gain, a.n) == ("a", "adapter:k", 0.0, 2)
    assert (b.scope, b.better_part, b.gain, b.n) == ("b", "adapter:k", 0.5, 2)
    # Retrieval alone better: the gain is against it.
    [h] = hybrid_results(_values([0, 0, 0, 1], [1, 1, 0, 1], [1, 1, 0, 0]), arms, boot, strata)
    assert h.better_part == "rag" and h.gain == pytest.approx(-0.25)
    # A tie goes to the context alone.
    [h] = hybrid_results(_values([1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]), arms, boot, strata)
    assert h.better_part == "rag" and h.gain == pytest.approx(0.25)


def test_gain_interval_makes_the_choice_of_the_better_part_in_each_resample() -> None:
    """Two parts of equal mean: in about half the resamples each is the better one, so the interval
    of ``both - max(parts)`` sits lower than that of ``both - the part chosen once`` would."""
    rng = np.random.default_rng(7)
    n = 80
    arms = parse_arms("adapter:k,rag,adapter:k+rag")
    boot = ClusterBootstrap([f"g{i // 2}" for i in range(n)], 1000, seed=0)
    alone = [float(x) for x in rng.permutation([1] * 40 + [0] * 40)]
    context = [float(x) for x in rng.permutation([1] * 40 + [0] * 40)]
    both = [float(x) for x in rng.random(n) < 0.6]
    [h] = hybrid_results(_values(alone, context, both), arms, boot, ["kb"] * n)
    star = [boot.resampled_means(np.array(c)) for c in (alone, context, both)]
    expected = np.percentile(star[2] - np.maximum(star[0], star[1]), [2.5, 97.5])
    assert h.gain_ci == pytest.approx(tuple(expected))
    chosen_once = np.percentile(star[2] - star[1], [2.5, 97.5])  # the tie went to rag
    assert h.gain_ci[1] < chosen_once[1]


def test_gain_interval_contains_the_estimate() -> None:
    rng = np.random.default_rng(3)
    n = 60
    arms = parse_arms("adapter:k,rag,adapter:k+rag")
    boot = ClusterBootstrap([f"g{i // 3}" for i in range(n)], 500, seed=0)
    draws = [list(rng.random(n) < p) for p in (0.4, 0.5, 0.7)]
    values = _values(*[[float(x) for x in d] for d in draws])
    [h] = hybrid_results(values, arms, boot, ["kb"] * 40 + ["control"] * 20)
    assert h.gain is not None and h.gain_ci is not None
    assert h.gain_ci[0] < h.gain < h.gain_ci[1]
    assert h.gain == pytest.approx(h.knowledge_hybrid - max(h.knowledge_adapter, h.knowledge_context))
    assert [g.scope for g in h.strata] == ["kb", "control"]
    for g in h.strata:
        assert g.gain_ci[0] <= g.gain <= g.gain_ci[1]


def test_gain_over_all_items_and_per_stratum(full: EvalAnalysis) -> None:
    style = next(h for h in full.hybrids if h.adapter == "adapter:style")
    assert style.better_part == "rag"
    assert style.gain is not None and style.gain_ci is not None
    assert style.gain_ci[0] <= style.gain <= style.gain_ci[1]
    # The unanswerable stratum has no contains value: no gain there.
    assert [g.scope for g in style.strata] == ["kb", "control"]
    overall = full.arm("rag").metrics["contains"].mean
    assert style.knowledge_context == pytest.approx(overall)
    assert ALL_ITEMS == "all"
    # JSON: standard (no NaN), with the documented fields.
    data = full.to_dict()["hybrids"][0]
    assert set(data) >= {
        "adapter",
        "context_arm",
        "with_context_arm",
        "validity_without",
        "validity_with",
        "retention",
        "retention_ci",
        "knowledge_adapter",
        "knowledge_context",
        "knowledge_hybrid",
        "better_part",
        "gain",
        "gain_ci",
        "n",
        "strata",
    }
    json.dumps(data, allow_nan=False)


def test_no_partner_no_entries_and_no_table() -> None:
    analysis = _analyse("base,adapter:style,rag")
    assert analysis.hybrids == [] and analysis.to_dict()["hybrids"] == []
    for text in (render_markdown(analysis), render_html(analysis), terminal_table(analysis)):
        assert HYBRID_TITLE not in text


def test_without_the_context_arm_alone_there_is_no_gain() -> None:
    analysis = _analyse("base,adapter:style,adapter:style+rag", plain=5)
    [h] = analysis.hybrids
    assert h.context_arm is None and h.retention == pytest.approx(0.5)
    assert h.gain is None and h.gain_ci is None and h.better_part is None and h.strata == []


def test_oracle_is_not_retrieval_and_k_must_match() -> None:
    analysis = _analyse("base,adapter:style,oracle,adapter:style+oracle")
    assert analysis.hybrids == []
    pairs = hybrid_pairs(parse_arms("adapter:style,rag,rag@3,adapter:style+rag@3,adapter:style+oracle"))
    assert [(a.name, b.name, c.name if c else None) for a, b, c in pairs] == [
        ("adapter:style", "adapter:style+rag@3", "rag@3")
    ]
    pairs = hybrid_pairs(parse_arms("adapter:style,rag,adapter:style+rag@3,adapter:style+prompt+rag"))
    assert [(a.name, b.name, c) for a, b, c in pairs] == [("adapter:style", "adapter:style+rag@3", None)]


def test_table_in_every_report(full: EvalAnalysis) -> None:
    md = render_markdown(full)
    overview = md.split("\n## ")[1]
    assert overview.startswith("Overview") and HYBRID_TITLE in overview
    assert "| adapter | with | validity without | validity with | retention [95% CI] |" in overview
    assert "| adapter:style | adapter:style+rag | 1.00 | 1.00 | 1.00 [1.00, 1.00] |" in overview
    assert "chosen by its mean on these same items" in overview
    html = render_html(full)
    assert HYBRID_TITLE in html and "<th>hybrid gain [95% CI]</th>" in html
    text = terminal_table(full)
    assert f"{HYBRID_TITLE}:" in text
    assert any(
        line.split()[:2] == ["adapter:knowledge", "adapter:knowledge+rag"] and " – " in line
        for line in text.splitlines()
    )

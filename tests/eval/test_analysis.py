"""End-to-end analysis on synthetic records with a known structure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.eval.analysis import AnalysisError, EvalAnalysis, analyse
from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.dataset import StyleSpec, load_style_spec
from hybrid_assistant.eval.records import AnswerRecord
from tests.eval.synthetic import ARMS, make_items, make_records

SPEC = load_style_spec(Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_spec.json")


@pytest.fixture(scope="module")
def analysis() -> EvalAnalysis:
    items = make_items()
    return analyse(items, make_records(items), parse_arms(ARMS), SPEC, n_resamples=300, seed=1)


def test_per_arm_metrics(analysis: EvalAnalysis) -> None:
    items = make_items()
    assert analysis.meta["n_items"] == len(items) and analysis.meta["n_groups"] == 14
    style = analysis.arm("adapter:style").metrics
    base = analysis.arm("base").metrics
    assert style["format_valid"].mean == 1.0 and base["format_valid"].mean == 0.0
    # The style adapter answers exactly what base answers, in JSON: same knowledge once extracted.
    assert style["contains"].mean == base["contains"].mean
    assert style["exact_match"].mean == style["contains"].mean  # the JSON answer field is the bare answer
    assert base["exact_match"].mean == 0.0  # "The answer is X." never matches exactly
    assert analysis.arm("oracle").metrics["contains"].mean >= analysis.arm("rag").metrics["contains"].mean
    assert analysis.arm("rag").metrics["abstained"].mean == 1.0  # the synthetic RAG arm refuses
    assert "retrieval_hit" in analysis.arm("rag").metrics and "retrieval_hit" not in base
    for arm in analysis.arms:
        for est in arm.metrics.values():
            assert est.ci_low <= est.mean + 1e-12 and est.mean <= est.ci_high + 1e-12
        assert arm.operations.n == len(items) and arm.operations.errors == 0
        assert arm.operations.latency_p50_ms is not None


def test_factorial_effects_match_the_arm_means(analysis: EvalAnalysis) -> None:
    sets = {(r.set, r.metric): r for r in analysis.factorial}
    assert {s for s, _ in sets} == {"adapter:style x rag", "adapter:knowledge x rag"}
    result = sets[("adapter:style x rag", "contains")]
    m = {a.arm: a.metrics["contains"].mean for a in analysis.arms}
    expected = ((m["rag"] - m["base"]) + (m["adapter:style+rag"] - m["adapter:style"])) / 2
    assert result.effects["context"].estimate == pytest.approx(expected)
    assert result.effects["context"].ci_low > 0  # retrieval clearly helps in this synthetic world
    assert result.effects["lever"].estimate == pytest.approx(0.0)
    style = sets[("adapter:style x rag", "format_valid")]
    assert style.effects["lever"].estimate == 1.0 and style.effects["context"].estimate == 0.0


def test_strata_keep_every_item(analysis: EvalAnalysis) -> None:
    n = analysis.meta["n_items"]
    for scheme in ("dataset", "closed_book"):
        strata = [s for s in analysis.strata if s.scheme == scheme]
        assert sum(s.n_items for s in strata) == n
    closed = {s.stratum: s for s in analysis.strata if s.scheme == "closed_book"}
    assert set(closed) <= {"known", "new", "unanswerable"} and "unanswerable" in closed
    if "known" in closed:
        assert closed["known"].metrics["base"]["contains"].mean == 1.0
    assert closed["new"].metrics["base"]["contains"].mean == 0.0
    assert analysis.meta["strata_counts"] == {"kb": 36, "unanswerable": 1, "control": 1}
    # Within each stratum every arm is compared with base on correctness, paired by item.
    kb = next(s for s in analysis.strata if s.stratum == "kb")
    versus = {c.arm: c.effect for c in kb.comparisons}
    assert set(versus) == set(analysis.meta["arms"]) - {"base"}
    assert all(c.baseline == "base" and c.metric == "contains" for c in kb.comparisons)
    rag_mean = kb.metrics["rag"]["contains"].mean - kb.metrics["base"]["contains"].mean
    assert versus["rag"].estimate == pytest.approx(rag_mean) and versus["rag"].n == kb.n_items


def test_retrieval_split_and_disagreements(analysis: EvalAnalysis) -> None:
    splits = {s.arm: s for s in analysis.retrieval_split}
    assert set(splits) == {"rag", "adapter:style+rag", "adapter:knowledge+rag"}
    rag = splits["rag"]
    assert rag.n == 36 and sum(rag.counts.values()) == 36
    assert rag.counts["retrieved_wrong"] == 0  # synthetic: a retrieved gold doc always yields the answer
    assert rag.fractions["retrieved_right"] + rag.fractions["missed_wrong"] + rag.fractions[
        "missed_right"
    ] == (pytest.approx(1.0))
    assert analysis.disagreements
    for d in analysis.disagreements:
        assert len(set(d.correct.values())) == 2
        assert set(d.answers) == set(analysis.meta["arms"])
    u1 = next(d for d in analysis.disagreements if d.item_id == "u1")
    assert u1.answers["adapter:style"] == "Paris" and u1.correct["rag"] and not u1.correct["base"]


def test_json_is_standard_and_complete(analysis: EvalAnalysis) -> None:
    data = json.loads(analysis.to_json())
    assert set(data) == {
        "meta",
        "arms",
        "factorial",
        "comparisons",
        "strata",
        "retrieval_split",
        "disagreements",
        "lever_comparisons",
        "notes",
        "costs",
        "decision",
        "hybrids",
    }
    assert data["arms"][0]["metrics"]["contains"]["n"] == 37
    comparisons = {(c["arm"], c["metric"]) for c in data["comparisons"]}
    assert ("oracle", "contains") in comparisons and ("adapter:style", "format_valid") in comparisons


def test_same_seed_same_numbers() -> None:
    items = make_items()
    records = make_records(items)
    a = analyse(items, records, ARMS.split(","), SPEC, n_resamples=200, seed=7)
    b = analyse(items, list(reversed(records)), ARMS.split(","), SPEC, n_resamples=200, seed=7)
    assert a.to_json() == b.to_json()


def test_errors_count_as_wrong_and_are_not_dropped() -> None:
    items = make_items(n_docs=3, per_doc=2)
    records = [
        AnswerRecord(
            r.item_id, r.arm, text=r.text, error="DEADLINE_EXCEEDED" if r.item_id == "d0q0" else None
        )
        for r in make_records(items, parse_arms("base,rag"))
    ]
    result = analyse(items, records, ["base", "rag"], SPEC, n_resamples=100)
    assert result.arm("rag").operations.errors == 1
    assert result.arm("rag").metrics["contains"].n == len([i for i in items if i.answerable])


def test_missing_and_inconsistent_inputs_are_reported() -> None:
    items = make_items(n_docs=2, per_doc=1)
    records = make_records(items, parse_arms("base,rag"))
    with pytest.raises(AnalysisError) as err:
        analyse(items, [*records[1:], records[-1]], ["base", "rag"], SPEC)
    text = "\n".join(err.value.problems)
    assert "no record for item 'd0q0' on arm 'base'" in text and "two records" in text
    with pytest.raises(AnalysisError, match="ask for style 'json-answer'"):
        analyse(items, records, ["base", "rag"], StyleSpec(name="other"))
    # Records of arms or items outside the analysis are ignored.
    extra = [*records, AnswerRecord("zzz", "base"), AnswerRecord("d0q0", "oracle")]
    assert analyse(items, extra, ["base", "rag"], SPEC, n_resamples=50).meta["n_items"] == len(items)


def test_without_base_there_are_no_known_new_strata() -> None:
    items = make_items(n_docs=2, per_doc=2)
    result = analyse(
        items, make_records(items, parse_arms("rag,oracle")), ["rag", "oracle"], SPEC, n_resamples=50
    )
    assert {s.scheme for s in result.strata} == {"dataset"}
    assert any("closed-book" in n for n in result.notes) and not result.factorial and not result.comparisons


def test_style_similarity_with_an_embedder() -> None:
    from hybrid_assistant.retrieval.embedder import HashingEmbedder

    items = make_items(n_docs=3, per_doc=2)
    records = make_records(items, parse_arms("base,adapter:style"))
    exemplars = ['{"answer": "Stockholm", "confidence": 0.96}', '{"answer": "Ag", "confidence": 0.9}']
    result = analyse(
        items,
        records,
        ["base", "adapter:style"],
        SPEC,
        exemplars=exemplars,
        embedder=HashingEmbedder(),
        n_resamples=50,
    )
    sim = {a.arm: a.metrics["style_similarity"].mean for a in result.arms}
    assert sim["adapter:style"] > sim["base"]
    eff = next(c for c in result.comparisons if c.metric == "style_similarity")
    assert eff.effect.test == "sign-flip-permutation" and np.isfinite(eff.effect.estimate)


def test_levers_compared_head_to_head_within_each_context() -> None:
    items = make_items()
    arms = parse_arms(
        "base,adapter:style,prompt,fewshot@4,rag@3,adapter:style+rag@3,prompt+rag@3,fewshot@4+rag@3"
    )
    result = analyse(items, make_records(items, arms), arms, SPEC, n_resamples=300, seed=1)
    rows = {(c.arm, c.baseline, c.metric): c.effect for c in result.lever_comparisons}
    pairs = [("prompt", "adapter:style"), ("fewshot@4", "adapter:style"), ("fewshot@4", "prompt")]
    pairs += [(f"{a}+rag@3", f"{b}+rag@3") for a, b in pairs]
    # Every two levers with the same context, never across contexts or against base.
    assert set(rows) == {(a, b, m) for a, b in pairs for m in ("format_valid", "contains")}
    mean = {a.arm: a.metrics for a in result.arms}
    for (arm, baseline, metric), eff in rows.items():
        assert eff.name == f"{arm} - {baseline}"
        expected = mean[arm][metric].mean - mean[baseline][metric].mean
        assert eff.estimate == pytest.approx(expected)
        assert eff.ci_low <= eff.estimate <= eff.ci_high
    # The prompt arm gives JSON on half the items, the adapter and the exemplars on all of them.
    assert rows[("prompt", "adapter:style", "format_valid")].ci_high < 0
    assert rows[("fewshot@4", "prompt", "format_valid")].ci_low > 0
    assert rows[("fewshot@4", "adapter:style", "format_valid")].estimate == 0.0
    # Knowledge is the same under every lever here: the answers differ only in form.
    assert all(rows[(a, b, "contains")].estimate == 0.0 for a, b in pairs)
    # The factorial sets cross every lever with rag@3.
    assert {r.lever for r in result.factorial} == {"adapter:style", "prompt", "fewshot@4"}
    assert result.to_dict()["lever_comparisons"][0]["effect"]["name"] == "prompt - adapter:style"


def test_no_head_to_head_with_a_single_lever(analysis: EvalAnalysis) -> None:
    # ARMS has two adapters: two levers, compared within each context (ordered by name).
    assert {(c.arm, c.baseline) for c in analysis.lever_comparisons} == {
        ("adapter:style", "adapter:knowledge"),
        ("adapter:style+rag", "adapter:knowledge+rag"),
    }
    single = analyse(
        make_items(), make_records(make_items()), parse_arms("base,adapter:style,rag"), SPEC, n_resamples=50
    )
    assert single.lever_comparisons == []

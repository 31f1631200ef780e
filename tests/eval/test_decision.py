"""The decision section on constructed cases: break-even arithmetic, the pick, and its caveats."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hybrid_assistant.eval.analysis import (
    ArmResult,
    Comparison,
    EvalAnalysis,
    FactorialResult,
    Operations,
    StratumResult,
)
from hybrid_assistant.eval.cost import ArmCost
from hybrid_assistant.eval.decision import break_even, break_even_requests, decide, recommend
from hybrid_assistant.eval.stats import FACTORIAL_CONTRASTS, Effect, Estimate

ARMS = ["base", "adapter:style", "prompt", "fewshot@4", "rag", "adapter:style+rag", "prompt+rag"]


def eff(estimate: float, low: float, high: float, mde: float | None = 0.1, n: int = 40) -> Effect:
    return Effect("e", estimate, low, high, 0.01, "test", n, n, 0.2, 0.03, mde)


def ops(prompt_tokens: float, completion_tokens: float = 10.0) -> Operations:
    return Operations(40, 0, 0, 100.0, 200.0, 20.0, 40.0, prompt_tokens, completion_tokens)


def cost(
    arm: str, latencies: list[float | None], train_s: float | None = None, items: list[str] | None = None
) -> ArmCost:
    ok = [x for x in latencies if x is not None]
    mean = sum(ok) / len(ok) if ok else None
    return ArmCost(
        arm, 4, len(latencies), 0, 1.0, 4.0, 100.0, 10.0, 20.0, mean, mean, train_s,
        items or [f"i{k}" for k in range(len(latencies))], latencies,
    )  # fmt: skip


def make_analysis(
    comparisons: dict[tuple[str, str], Effect],
    lever: dict[tuple[str, str], Effect] | None = None,
    *,
    tokens: dict[str, float] | None = None,
    strata: list[StratumResult] | None = None,
    factorial: list[FactorialResult] | None = None,
    n_groups: int = 40,
) -> EvalAnalysis:
    """``comparisons``: (arm, metric) -> arm - base; ``lever``: (arm, baseline) -> format_valid difference."""
    tokens = tokens or {}
    arms = [ArmResult(a, {}, ops(tokens.get(a, 100.0))) for a in ARMS]
    meta: dict[str, Any] = {"closed_book_arm": "base", "n_groups": n_groups, "arms": ARMS}
    return EvalAnalysis(
        meta,
        arms,
        factorial or [],
        [Comparison(a, "base", m, e) for (a, m), e in comparisons.items()],
        strata or [],
        [],
        [],
        lever_comparisons=[Comparison(a, b, "format_valid", e) for (a, b), e in (lever or {}).items()],
    )


def test_break_even_hand_computed() -> None:
    # Per-item savings 200, 400, 200, 400 ms: mean 300 ms, so 12 s of training take 12 / 0.3 = 40
    # requests. Every resampled mean lies in [200, 400], and each end has probability 1/16 > 2.5%,
    # so the interval is exactly [12 / 0.4, 12 / 0.2] = [30, 60].
    saved, saved_ci, requests, requests_ci = break_even_requests(
        12.0, [300.0, 500.0, 300.0, 500.0], [100.0, 100.0, 100.0, 100.0]
    )
    assert saved == pytest.approx(300.0)
    assert saved_ci == pytest.approx((200.0, 400.0))
    assert requests == pytest.approx(40.0)
    assert requests_ci == pytest.approx((30.0, 60.0))


def test_break_even_edges() -> None:
    # A failed request (None) leaves its pair out.
    _, _, requests, interval = break_even_requests(5.0, [150.0, None, 150.0], [100.0, 100.0, None])
    assert requests == pytest.approx(100.0) and interval == pytest.approx((100.0, 100.0))
    # The saving's interval reaches below 0: the upper end is open.
    saved, (low, _), requests, (_, most) = break_even_requests(1.0, [0.0, 400.0] * 2, [100.0] * 4)
    assert saved == pytest.approx(100.0) and low < 0 and requests == pytest.approx(10.0) and most is None
    # Slower than the prompt arm: never repaid.
    assert math.isinf(break_even_requests(1.0, [100.0], [200.0])[2])
    with pytest.raises(ValueError, match="no request"):
        break_even_requests(1.0, [None], [1.0])


#: The style adapter raises format validity over base: it has a prompt arm to replace.
FORMAT_LEVER = {("adapter:style", "format_valid"): eff(0.9, 0.8, 1.0)}


def test_break_even_picks_the_cheapest_prompt_arm_that_matches() -> None:
    analysis = make_analysis(
        FORMAT_LEVER,
        {
            ("prompt", "adapter:style"): eff(-0.05, -0.15, 0.05),  # not significantly worse: matches
            ("adapter:style", "fewshot@4"): eff(0.05, -0.02, 0.12),  # reversed orientation: matches
            ("prompt+rag", "adapter:style"): eff(0.0, -0.1, 0.1),  # another context: never compared
        },
    )
    costs = {
        "adapter:style": cost("adapter:style", [100.0, 100.0, 100.0, 100.0], train_s=12.0),
        "prompt": cost("prompt", [400.0, 400.0, 400.0, 400.0]),
        "fewshot@4": cost("fewshot@4", [300.0, 500.0, 300.0, 500.0]),
        "prompt+rag": cost("prompt+rag", [50.0] * 4),
    }
    result = break_even(analysis, costs, "adapter:style")
    assert result.prompt_arm == "fewshot@4" and result.verdict == "repaid"
    assert result.requests == pytest.approx(40.0) and result.requests_ci == pytest.approx((30.0, 60.0))
    assert "repaid after 40 requests (95% interval 30 to 60)" in result.text
    assert result.to_dict()["requests_ci"] == pytest.approx([30.0, 60.0])


def test_break_even_verdicts() -> None:
    worse = make_analysis(FORMAT_LEVER, {("prompt", "adapter:style"): eff(-0.4, -0.5, -0.3)})
    costs = {
        "adapter:style": cost("adapter:style", [100.0] * 4, train_s=12.0),
        "prompt": cost("prompt", [90.0] * 4),
    }
    none = break_even(worse, costs, "adapter:style")
    assert none.verdict == "no_matching_prompt_arm" and "no prompt arm reaches" in none.text

    same = make_analysis(FORMAT_LEVER, {("prompt", "adapter:style"): eff(0.0, -0.1, 0.1)})
    never = break_even(same, costs, "adapter:style")
    assert never.verdict == "never_repaid" and "never repaid" in never.text and never.requests is None

    wide = {
        "adapter:style": cost("adapter:style", [100.0] * 4, train_s=1.0),
        "prompt": cost("prompt", [0.0, 400.0] * 2),
    }
    open_ended = break_even(same, wide, "adapter:style")
    assert open_ended.verdict == "repaid" and "not repaid within the interval" in open_ended.text
    assert open_ended.to_dict()["requests_ci"][1] is None

    untrained = {**costs, "adapter:style": cost("adapter:style", [100.0] * 4)}
    assert break_even(same, untrained, "adapter:style").verdict == "no_training_cost"
    assert break_even(same, {}, "adapter:style").verdict == "no_cost_probe"

    # An adapter that does not move the format (a knowledge adapter) has no prompt arm to replace:
    # every prompt arm "reaches" its 0, and the latency difference would be one of answer lengths.
    flat = make_analysis(
        {("adapter:style", "format_valid"): eff(0.0, -0.05, 0.05)},
        {("prompt", "adapter:style"): eff(0.0, -0.1, 0.1)},
    )
    knowledge_like = break_even(flat, costs, "adapter:style")
    assert knowledge_like.verdict == "not_a_format_lever" and knowledge_like.prompt_arm is None
    assert "does not raise format validity over base (+0.00 [-0.05, +0.05])" in knowledge_like.text
    assert break_even(make_analysis({}), costs, "adapter:style").verdict == "not_a_format_lever"


KNOWLEDGE = {
    ("rag", "contains"): eff(0.50, 0.35, 0.65, mde=0.12),
    ("adapter:style+rag", "contains"): eff(0.55, 0.40, 0.70, mde=0.12),
    ("prompt+rag", "contains"): eff(0.40, 0.25, 0.55, mde=0.12),  # further than its MDE from the best
    ("prompt", "contains"): eff(0.02, -0.05, 0.09),
}
STYLE = {
    ("adapter:style", "format_valid"): eff(0.80, 0.70, 0.90),
    ("prompt", "format_valid"): eff(0.75, 0.60, 0.90),
    ("fewshot@4", "format_valid"): eff(0.50, 0.30, 0.70),
}


def test_recommendation_takes_the_cheapest_candidate() -> None:
    analysis = make_analysis({**KNOWLEDGE, **STYLE}, tokens={"rag": 400.0, "adapter:style+rag": 420.0})
    costs = {
        "rag": cost("rag", [300.0] * 4),
        "adapter:style+rag": cost("adapter:style+rag", [250.0] * 4, train_s=30.0),
        "adapter:style": cost("adapter:style", [250.0] * 4, train_s=30.0),
        "prompt": cost("prompt", [400.0] * 4),
    }
    knowledge = recommend(analysis, costs, "knowledge", "contains")
    assert knowledge.candidates == ["rag", "adapter:style+rag"]
    assert knowledge.arm == "adapter:style+rag" and knowledge.cost_basis == "latency"
    assert knowledge.per_request == pytest.approx(250.0) and knowledge.one_time_s == 30.0
    assert knowledge.text.endswith("250.0 ms per request (probe latency); one-time cost: 30.0 s of training.")
    # Without a probe, tokens decide: rag's 410 beat the adapter's 430.
    by_tokens = recommend(analysis, {}, "knowledge", "contains")
    assert by_tokens.arm == "rag" and by_tokens.cost_basis == "tokens" and by_tokens.per_request == 410.0
    assert by_tokens.one_time_s == 0.0
    assert by_tokens.text.endswith("410.0 tokens per request; one-time cost: none.")

    style = recommend(analysis, costs, "style", "format_valid")
    assert style.candidates == ["adapter:style", "prompt"] and style.arm == "adapter:style"
    # Equal per-request cost: the lower one-time cost wins (the prompt needs no training).
    tied = {**costs, "prompt": cost("prompt", [250.0] * 4)}
    assert recommend(analysis, tied, "style", "format_valid").arm == "prompt"
    assert not style.caveats


def test_a_cost_difference_within_the_probe_noise_is_a_tie() -> None:
    analysis = make_analysis({**KNOWLEDGE, **STYLE})
    costs = {
        "adapter:style": cost("adapter:style", [240.0, 262.0, 251.0, 247.0], train_s=30.0),
        # 4 ms dearer on average, but paired per item the interval reaches 0: noise, not a cost.
        "prompt": cost("prompt", [262.0, 248.0, 258.0, 248.0]),
    }
    style = recommend(analysis, costs, "style", "format_valid")
    assert style.arm == "prompt" and set(style.cost_ties) == {"adapter:style", "prompt"}
    assert style.per_request == pytest.approx(254.0) and style.one_time_s == 0.0
    assert "within noise of the cheapest, adapter:style (+4.0 ms [" in style.text
    assert style.text.endswith("so the lower one-time cost decides.")
    # The same 4 ms, every time: a real cost, so the cheapest wins even with its training.
    steady = {**costs, "prompt": cost("prompt", [244.0, 266.0, 255.0, 251.0])}
    picked = recommend(analysis, steady, "style", "format_valid")
    assert picked.arm == "adapter:style" and picked.cost_ties == ["adapter:style"]
    assert "within noise" not in picked.text


def test_none_of_the_levers_moved_it() -> None:
    analysis = make_analysis({("prompt", "format_valid"): eff(0.05, -0.05, 0.15, mde=0.3)}, n_groups=12)
    result = recommend(analysis, {}, "style", "format_valid")
    assert result.arm is None and "none of the levers moved format_valid" in result.text
    assert any("no arm's interval excludes 0 (smallest MDE 0.30)" in c for c in result.caveats)
    assert any("12 clusters" in c for c in result.caveats)
    empty = decide(make_analysis({}), {}).to_dict()
    assert [r["arm"] for r in empty["recommendations"]] == [None, None]
    assert [b["adapter_arm"] for b in empty["break_even"]] == ["adapter:style", "adapter:style+rag"]


def test_caveats_forgetting_style_lost_and_wide_mde() -> None:
    arms = ["base", "adapter:style", "rag", "adapter:style+rag"]
    lost = {k: eff(0.0, -0.1, 0.1) for k in FACTORIAL_CONTRASTS} | {
        "context_with_lever": eff(-0.4, -0.6, -0.2)
    }
    forgot = Comparison("adapter:style", "base", "contains", eff(-0.3, -0.5, -0.1))
    control = StratumResult("dataset", "control", 30, {}, [], [forgot])
    style_factorial = FactorialResult(
        "adapter:style x rag", "adapter:style", "rag", arms, "format_valid", lost
    )
    analysis = make_analysis(
        {("adapter:style", "format_valid"): eff(0.8, 0.7, 0.9, mde=0.25)},
        strata=[control],
        factorial=[style_factorial],
    )
    caveats = recommend(analysis, {}, "style", "format_valid").caveats
    assert any(c.startswith("forgetting: on the control stratum (n = 30) adapter:style") for c in caveats)
    assert any(
        c.startswith("style lost under rag: adapter:style's format validity changes by -0.40")
        for c in caveats
    )
    assert any("MDE 0.25 > 0.2" in c for c in caveats)

    # A drop whose interval reaches 0 is not called forgetting, but it is not hidden either.
    unsure = Comparison("adapter:style", "base", "contains", eff(-0.4, -0.8, 0.0))
    small = StratumResult("dataset", "control", 10, {}, [], [unsure])
    analysis = make_analysis({("adapter:style", "format_valid"): eff(0.8, 0.7, 0.9)}, strata=[small])
    (caveat,) = recommend(analysis, {}, "style", "format_valid").caveats
    assert caveat.startswith("possible forgetting, too few items to tell: on the control stratum (n = 10)")
    assert caveat.endswith("-0.40 [-0.80, +0.00] less often right than base; the interval reaches 0.")


def test_oracle_is_a_ceiling_not_a_lever_and_forgetting_without_a_paired_contrast() -> None:
    control = StratumResult(
        "dataset",
        "control",
        25,
        {
            "rag": {"contains": Estimate(0.2, 0.1, 0.3, 25, 25)},
            "base": {"contains": Estimate(0.9, 0.8, 1.0, 25, 25)},
        },
        [],
    )
    analysis = make_analysis(
        {("oracle", "contains"): eff(0.9, 0.8, 1.0), ("rag", "contains"): eff(0.5, 0.35, 0.65, mde=0.12)},
        strata=[control],
    )
    result = recommend(analysis, {}, "knowledge", "contains")
    # With the oracle counted as the best, rag (0.4 below it) would not be within its MDE.
    assert result.arm == "rag" and result.candidates == ["rag"]
    # No 2x2 within the stratum: the two intervals do not overlap.
    expected = "forgetting: on the control stratum (n = 25) rag scores 0.20 [0.10, 0.30] against base's 0.90"
    assert any(c.startswith(expected) for c in result.caveats)

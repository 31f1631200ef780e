"""From measured numbers to a decision: which lever for which job, and when an adapter pays off.

Pure functions of the analysis (:mod:`eval.analysis`) and the cost probe (:mod:`eval.cost`).

**Break-even** (:func:`break_evens`): for each arm whose style lever includes an adapter that
raises format validity over ``base`` (interval above 0; a knowledge adapter has no prompt arm
to replace), the
prompt arms that *reach the same format validity* are those with no adapter, ``prompt`` and/or
``fewshot@K``, the same context, and a paired difference (prompt arm minus adapter arm, on
``format_valid``) whose interval's upper bound is >= 0: not significantly worse. Of those, the
cheapest per request (mean latency in the probe) is the comparison. The adapter saves
``mean latency(prompt arm) - mean latency(adapter arm)`` per request (same items, same order,
same concurrency, so paired by item); ``requests = train_s / saved``. Its interval comes from a
bootstrap of the per-item latency difference: ``[train_s / upper(saved), train_s / lower(saved)]``,
infinite above when the saving's interval reaches 0. Saved <= 0: never repaid.

**Recommendation** (:func:`recommend`), for knowledge (``contains``) and style (``format_valid``)
separately: the candidates are the arms whose difference from ``base`` has an interval above 0
and an estimate within that comparison's MDE of the best arm's estimate; the cheapest per
request wins (probe mean latency; without a probe, mean prompt + completion tokens of the main
run), ties going to the lower one-time cost, then to the simpler arm (fewer parts). On probe
latency a tie is statistical: an arm whose paired bootstrap interval of extra latency over the
cheapest reaches 0 is tied with it, so run-to-run noise in a small probe does not decide. Caveats:
forgetting (the arm's ``contains`` on the ``control`` stratum lower than base's, interval
excluding 0: paired by item within the stratum, else, for an analysis without those
comparisons, two intervals apart), style
lost under retrieval (the lever's format validity lower with a context than without, interval
excluding 0), too few items (no candidate, an MDE above 0.2, fewer than 20 clusters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_assistant.eval.analysis import finite_json
from hybrid_assistant.eval.arms import parse_arm
from hybrid_assistant.eval.stats import ClusterBootstrap

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis
    from hybrid_assistant.eval.cost import ArmCost
    from hybrid_assistant.eval.stats import Effect

KNOWLEDGE_METRIC = "contains"
STYLE_METRIC = "format_valid"
CONTROL_STRATUM = "control"
#: An MDE above this means the design cannot see effects of a size that matters.
MAX_USEFUL_MDE = 0.2
MIN_GROUPS = 20
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class BreakEven:
    """After how many requests an adapter's training time is repaid, against one prompt arm."""

    adapter_arm: str
    prompt_arm: str | None
    train_s: float | None
    saved_ms: float | None  # mean latency per request: prompt arm minus adapter arm
    saved_ci_ms: tuple[float, float] | None
    requests: float | None
    requests_ci: tuple[float | None, float | None] | None  # None above: not repaid within the interval
    verdict: str  # repaid | never_repaid | no_matching_prompt_arm | no_training_cost | no_cost_probe
    text: str

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


@dataclass
class Recommendation:
    """The pick for one goal; ``arm`` None when no lever moved the metric."""

    goal: str  # knowledge | style
    metric: str
    text: str
    caveats: list[str]
    arm: str | None = None
    estimate: float | None = None  # difference from base
    ci: tuple[float, float] | None = None
    mde: float | None = None
    candidates: list[str] = field(default_factory=list)
    cost_ties: list[str] = field(default_factory=list)  # candidates not measurably dearer than the cheapest
    cost_basis: str = ""  # "latency" (probe) | "tokens" (main run)
    per_request: float | None = None  # ms of latency, or tokens
    one_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


@dataclass
class Decision:
    recommendations: list[Recommendation] = field(default_factory=list)
    break_even: list[BreakEven] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendations": [r.to_dict() for r in self.recommendations],
            "break_even": [b.to_dict() for b in self.break_even],
        }


# ---------------------------------------------------------------------------------------- break-even


def paired_mean_difference(
    first: Sequence[float | None],
    second: Sequence[float | None],
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """``mean(first - second)`` over the positions both have, with a percentile bootstrap interval
    (:class:`ClusterBootstrap` with every position its own cluster).

    Raises ValueError when no position has both values.
    """
    diff = np.array(
        [np.nan if a is None or b is None else a - b for a, b in zip(first, second, strict=True)],
        dtype=np.float64,
    )
    if np.isnan(diff).all():
        raise ValueError("no request answered by both arms")
    positions = [str(i) for i in range(len(diff))]
    estimate = ClusterBootstrap(positions, n_resamples, seed, confidence).mean_ci(diff)
    return estimate.mean, (estimate.ci_low, estimate.ci_high)


def break_even_requests(
    train_s: float,
    prompt_latencies_ms: Sequence[float | None],
    adapter_latencies_ms: Sequence[float | None],
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, tuple[float, float], float, tuple[float, float | None]]:
    """``(saved_ms, saved interval, requests, requests interval)``, paired by position.

    Positions where either latency is missing are left out. ``requests`` is infinite when the
    mean saving is <= 0; the interval's upper end is None when the saving's interval reaches 0.
    """
    saved, (low, high) = paired_mean_difference(
        prompt_latencies_ms, adapter_latencies_ms, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    requests = train_s / (saved / 1000) if saved > 0 else math.inf
    fewest = train_s / (high / 1000) if high > 0 else math.inf
    most = train_s / (low / 1000) if low > 0 else None
    return saved, (low, high), requests, (fewest, most)


def _paired_format(analysis: EvalAnalysis, prompt_arm: str, adapter_arm: str) -> tuple[float, float] | None:
    """Interval of (prompt arm - adapter arm) on format validity from the head-to-head comparisons."""
    for c in analysis.lever_comparisons:
        if c.metric != STYLE_METRIC or c.effect.n == 0:
            continue
        if (c.arm, c.baseline) == (prompt_arm, adapter_arm):
            return c.effect.ci_low, c.effect.ci_high
        if (c.arm, c.baseline) == (adapter_arm, prompt_arm):
            return -c.effect.ci_high, -c.effect.ci_low
    return None


def _no_break_even(
    adapter_arm: str, prompt_arm: str | None, train_s: float | None, verdict: str, text: str
) -> BreakEven:
    return BreakEven(adapter_arm, prompt_arm, train_s, None, None, None, None, verdict, text)


def break_even(analysis: EvalAnalysis, costs: Mapping[str, ArmCost], adapter_arm: str) -> BreakEven:
    """The break-even of one adapter arm (see the module docstring)."""
    arm = parse_arm(adapter_arm)
    own = costs.get(adapter_arm)
    train_s = own.train_s if own else None
    base = analysis.meta.get("closed_book_arm", "base")
    format_effect = next(
        (
            c.effect
            for c in analysis.comparisons
            if c.arm == adapter_arm and c.baseline == base and c.metric == STYLE_METRIC
        ),
        None,
    )
    # A prompt arm "reaching the same format validity" only means something for an adapter that
    # moves the format: a knowledge adapter's 0 is reached by any arm, so its break-even would be
    # a comparison of answer lengths, not of prompt work saved.
    if format_effect is None or not format_effect.n or format_effect.ci_low <= 0:
        moved = "not compared with base" if format_effect is None else _signed(format_effect)
        return _no_break_even(
            adapter_arm,
            None,
            train_s,
            "not_a_format_lever",
            f"{adapter_arm}: does not raise format validity over {base} ({moved}), "
            "so there is no prompt arm for it to replace.",
        )
    names = [a.arm for a in analysis.arms]
    peers = [
        p
        for p in map(parse_arm, names)
        if p.adapter is None and p.prompted and p.context_label == arm.context_label
    ]
    matching = []
    for peer in peers:
        interval = _paired_format(analysis, peer.name, adapter_arm)
        if interval is not None and interval[1] >= 0:
            matching.append(peer.name)
    if not matching:
        tried = ", ".join(p.name for p in peers) or "none with the same context"
        return _no_break_even(
            adapter_arm,
            None,
            train_s,
            "no_matching_prompt_arm",
            f"{adapter_arm}: no prompt arm reaches its format validity (prompt arms tried: {tried}).",
        )
    probed = [m for m in matching if m in costs and costs[m].latency_mean_ms is not None]
    if own is None or own.latency_mean_ms is None or not probed:
        return _no_break_even(
            adapter_arm, matching[0], train_s, "no_cost_probe", f"{adapter_arm}: no cost probe to price it."
        )
    prompt_arm = min(probed, key=lambda m: (costs[m].latency_mean_ms, m))
    if train_s is None:
        return _no_break_even(
            adapter_arm,
            prompt_arm,
            None,
            "no_training_cost",
            f"{adapter_arm}: its metadata records no training time (train_s), so no break-even.",
        )
    prompt = costs[prompt_arm]
    if prompt.item_ids != own.item_ids:
        raise ValueError(f"the probes of {prompt_arm!r} and {adapter_arm!r} asked different items")
    saved, saved_ci, requests, requests_ci = break_even_requests(
        train_s, prompt.latencies_ms, own.latencies_ms
    )
    head = f"{adapter_arm} vs {prompt_arm} (same format validity)"
    if saved <= 0:
        verdict, repaid_after, repaid_ci = "never_repaid", None, None
        text = (
            f"{head}: never repaid — the adapter saves no time per request ({saved:+.1f} ms), "
            f"so its {train_s:.1f} s of training are never recovered."
        )
    else:
        verdict, repaid_after, repaid_ci = "repaid", requests, requests_ci
        fewest, most = requests_ci
        upper = "not repaid within the interval" if most is None else f"{most:,.0f}"
        text = (
            f"{head}: {train_s:.1f} s of training repaid after {requests:,.0f} requests "
            f"(95% interval {fewest:,.0f} to {upper}), saving {saved:.1f} ms per request "
            f"[{saved_ci[0]:.1f}, {saved_ci[1]:.1f}]."
        )
    return BreakEven(
        adapter_arm, prompt_arm, train_s, saved, saved_ci, repaid_after, repaid_ci, verdict, text
    )


def break_evens(analysis: EvalAnalysis, costs: Mapping[str, ArmCost]) -> list[BreakEven]:
    """One :class:`BreakEven` per arm whose style lever includes an adapter."""
    return [break_even(analysis, costs, a.arm) for a in analysis.arms if parse_arm(a.arm).adapter]


# ------------------------------------------------------------------------------------ recommendation


def _per_request(
    analysis: EvalAnalysis, costs: Mapping[str, ArmCost], arms: list[str]
) -> tuple[str, dict[str, float]]:
    """The basis and each arm's cost per request: probe latency when every arm was probed, else tokens."""
    latency = {a: costs[a].latency_mean_ms for a in arms if a in costs}
    if arms and all(latency.get(a) is not None for a in arms):
        return "latency", {a: float(v) for a, v in latency.items() if v is not None}
    tokens = {}
    for a in arms:
        ops = analysis.arm(a).operations
        tokens[a] = (ops.prompt_tokens_mean or 0.0) + (ops.completion_tokens_mean or 0.0)
    return "tokens", tokens


def _one_time(arm: str, costs: Mapping[str, ArmCost]) -> float | None:
    """Training seconds of the arm's adapter; 0 without an adapter; None when unknown."""
    if parse_arm(arm).adapter is None:
        return 0.0
    cost = costs.get(arm)
    return cost.train_s if cost else None


def _forgetting(analysis: EvalAnalysis, arm: str, base: str) -> str | None:
    """The arm's ``contains`` on the control stratum below base's, interval excluding 0."""
    for stratum in analysis.strata:
        if stratum.scheme != "dataset" or stratum.stratum != CONTROL_STRATUM:
            continue
        for versus in stratum.comparisons:  # arm - base within the stratum, paired by item
            if versus.arm == arm and versus.baseline == base and versus.metric == KNOWLEDGE_METRIC:
                if versus.effect.n and versus.effect.ci_high < 0:
                    return (
                        f"forgetting: on the {CONTROL_STRATUM} stratum (n = {stratum.n_items}) {arm} "
                        f"answers {_signed(versus.effect)} less often right than {base}."
                    )
                if versus.effect.n and versus.effect.estimate < 0:
                    return (
                        f"possible forgetting, too few items to tell: on the {CONTROL_STRATUM} stratum "
                        f"(n = {stratum.n_items}) {arm} answers {_signed(versus.effect)} less often right "
                        f"than {base}; the interval reaches 0."
                    )
                return None
        ours, theirs = stratum.metrics.get(arm, {}), stratum.metrics.get(base, {})
        mine, ref = ours.get(KNOWLEDGE_METRIC), theirs.get(KNOWLEDGE_METRIC)
        # No paired contrast for this arm: two intervals that do not overlap (a stricter test).
        if mine is not None and ref is not None and mine.ci_high < ref.ci_low:
            return (
                f"forgetting: on the {CONTROL_STRATUM} stratum (n = {stratum.n_items}) {arm} scores "
                f"{mine.mean:.2f} [{mine.ci_low:.2f}, {mine.ci_high:.2f}] against {base}'s "
                f"{ref.mean:.2f} [{ref.ci_low:.2f}, {ref.ci_high:.2f}]."
            )
    return None


def _style_lost(analysis: EvalAnalysis, arm: str) -> list[str]:
    """The arm's style lever loses format validity once a context is added (interval below 0)."""
    lever = parse_arm(arm).style_lever
    out = []
    for result in analysis.factorial:
        if result.metric != STYLE_METRIC or result.lever != lever:
            continue
        eff = result.effects.get("context_with_lever")
        if eff is not None and eff.n and eff.ci_high < 0:
            out.append(
                f"style lost under {result.context}: {lever}'s format validity changes by {_signed(eff)} "
                f"when {result.context} is added."
            )
    return out


def recommend(analysis: EvalAnalysis, costs: Mapping[str, ArmCost], goal: str, metric: str) -> Recommendation:
    """The cheapest arm whose effect on ``metric`` is above 0 and within the MDE of the best.

    Oracle arms are left out: handing over the gold passages is a ceiling, not a lever one can deploy.
    """
    base = analysis.meta.get("closed_book_arm", "base")
    against = [
        c
        for c in analysis.comparisons
        if c.metric == metric and c.baseline == base and c.effect.n and not parse_arm(c.arm).oracle
    ]
    n_groups = int(analysis.meta.get("n_groups", 0))
    few = (
        [f"too few items to tell: {n_groups} clusters (under {MIN_GROUPS})"] if n_groups < MIN_GROUPS else []
    )
    if not against:
        return Recommendation(goal, metric, f"{goal}: no arm was compared with {base} on {metric}.", few)
    best = max(c.effect.estimate for c in against)
    candidates = [
        c for c in against if c.effect.ci_low > 0 and best - c.effect.estimate <= (c.effect.mde or 0.0)
    ]
    if not candidates:
        mdes = [c.effect.mde for c in against if c.effect.mde is not None]
        smallest = f" (smallest MDE {min(mdes):.2f})" if mdes else ""
        text = f"{goal}: none of the levers moved {metric} (no interval above 0 against {base})."
        return Recommendation(
            goal, metric, text, [f"too few items to tell: no arm's interval excludes 0{smallest}", *few]
        )
    names = [c.arm for c in candidates]
    basis, per_request = _per_request(analysis, costs, names)
    one_time = {a: _one_time(a, costs) for a in names}
    cheapest = min(
        candidates,
        key=lambda c: (per_request[c.arm], _sort_cost(one_time[c.arm]), c.arm.count("+"), c.arm),
    )
    # Ties: arms not measurably dearer per request than the cheapest (a probe of ~10 requests
    # moves by tens of ms between runs, so a point estimate alone would flip the pick from run to
    # run) go to the lower one-time cost, then to the simpler arm (fewer parts).
    ties = {c.arm: _cost_tie(c.arm, cheapest.arm, basis, per_request, costs) for c in candidates}
    chosen = min(
        (c for c in candidates if ties[c.arm] is not None),
        key=lambda c: (_sort_cost(one_time[c.arm]), c.arm.count("+"), per_request[c.arm], c.arm),
    )
    eff = chosen.effect
    forgot = _forgetting(analysis, chosen.arm, base)
    caveats = [*([forgot] if forgot else []), *_style_lost(analysis, chosen.arm)]
    if eff.mde is not None and eff.mde > MAX_USEFUL_MDE:
        caveats.append(f"too few items to tell: MDE {eff.mde:.2f} > {MAX_USEFUL_MDE}")
    unit = "ms per request (probe latency)" if basis == "latency" else "tokens per request"
    once = one_time[chosen.arm]
    once_text = f"{once:.1f} s of training" if once else "unknown (no train_s)" if once is None else "none"
    text = (
        f"{goal}: {chosen.arm} ({metric} {_signed(eff)} vs {base}), the cheapest of {len(names)} "
        f"candidate(s) within the MDE of the best: {per_request[chosen.arm]:.1f} {unit}; "
        f"one-time cost: {once_text}."
    )
    tie = ties[chosen.arm]
    if chosen.arm != cheapest.arm and tie is not None:
        text += (
            f" Its per-request cost is within noise of the cheapest, {cheapest.arm} "
            f"({tie[0]:+.1f} {'ms' if basis == 'latency' else 'tokens'}"
            + (f" [{tie[1][0]:+.1f}, {tie[1][1]:+.1f}]" if basis == "latency" else "")
            + "), so the lower one-time cost decides."
        )
    return Recommendation(
        goal,
        metric,
        text,
        [*caveats, *few],
        arm=chosen.arm,
        estimate=eff.estimate,
        ci=(eff.ci_low, eff.ci_high),
        mde=eff.mde,
        candidates=names,
        cost_ties=[a for a, t in ties.items() if t is not None],
        cost_basis=basis,
        per_request=per_request[chosen.arm],
        one_time_s=once,
    )


def _signed(eff: Effect) -> str:
    return f"{eff.estimate:+.2f} [{eff.ci_low:+.2f}, {eff.ci_high:+.2f}]"


def _cost_tie(
    arm: str, cheapest: str, basis: str, per_request: Mapping[str, float], costs: Mapping[str, ArmCost]
) -> tuple[float, tuple[float, float]] | None:
    """``arm``'s extra cost per request over ``cheapest`` when it is not measurably dearer, else None.

    On probe latency: the paired (same items, same order) bootstrap interval of the difference
    reaches 0. On tokens (no probe, no per-request spread kept): equal means only.
    """
    extra = per_request[arm] - per_request[cheapest]
    if arm == cheapest:
        return 0.0, (0.0, 0.0)
    if basis != "latency":
        return (extra, (extra, extra)) if extra == 0 else None
    own, other = costs[arm], costs[cheapest]
    if own.item_ids != other.item_ids:
        return None  # not paired: only the point estimates compare
    try:
        extra, interval = paired_mean_difference(own.latencies_ms, other.latencies_ms)
    except ValueError:
        return None
    return (extra, interval) if interval[0] <= 0 else None


def _sort_cost(value: float | None) -> float:
    return math.inf if value is None else value


def decide(analysis: EvalAnalysis, costs: Mapping[str, ArmCost]) -> Decision:
    """The decision section: knowledge and style recommendations, and every adapter's break-even."""
    return Decision(
        [
            recommend(analysis, costs, "knowledge", KNOWLEDGE_METRIC),
            recommend(analysis, costs, "style", STYLE_METRIC),
        ],
        break_evens(analysis, costs),
    )

"""From items and answer records to every number the reports show.

:func:`analyse` scores each (item, arm) record (:mod:`eval.metrics`), then reports, with one
paired cluster bootstrap shared by all arms (:mod:`eval.stats`):

- per arm and metric: the mean and its 95% interval;
- per complete 2x2 (:func:`eval.arms.factorial_sets`) and metric: the context (retrieval or
  oracle) effect, the style lever's effect (an adapter, ``prompt``, ``fewshot@K``...), their
  interaction and the simple effects, each with an interval, a p-value and the minimum
  detectable effect;
- every arm against the ``base`` arm;
- head to head, every two style levers asked with the same context (``prompt - adapter:style``,
  ``fewshot@4+rag@3 - prompt+rag@3``...), on the primary style and knowledge metrics;
- per stratum: the dataset's own labels, and "known" vs "new" from the closed-book ``base``
  arm's correctness (unanswerable items form their own stratum); no item is ever dropped;
- for arms that search the index: the four-way split of retrieval hit x correctness;
- the items where arms disagree on correctness, with every arm's extracted answer;
- per arm: latency (p50/p99), time to first token, tokens, errors and truncated answers;
- per adapter with a retrieval partner: style retention under the context and the hybrid gain
  over the better of its parts (:mod:`eval.hybrid`).

Correctness (for strata, disagreements, the split) is ``contains`` on answerable items and
``abstained`` on unanswerable ones.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hybrid_assistant.eval.arms import Arm, FactorialSet, factorial_sets, parse_arm
from hybrid_assistant.eval.dataset import EvalItem, StyleSpec
from hybrid_assistant.eval.hybrid import HybridResult, hybrid_results
from hybrid_assistant.eval.metrics.knowledge import extract_answer, is_correct
from hybrid_assistant.eval.metrics.registry import (
    EFFECT_METRICS,
    METRICS,
    PRIMARY_KNOWLEDGE,
    PRIMARY_STYLE,
    score_record,
)
from hybrid_assistant.eval.metrics.retrieval import four_way_split
from hybrid_assistant.eval.metrics.style import TextEmbedder, style_similarity
from hybrid_assistant.eval.records import AnswerRecord
from hybrid_assistant.eval.stats import (
    ClusterBootstrap,
    Effect,
    Estimate,
    factorial_effects,
    paired_difference,
)

logger = logging.getLogger(__name__)

CLOSED_BOOK_ARM = "base"
KNOWN, NEW, UNANSWERABLE = "known", "new", "unanswerable"
#: Metrics whose factorial effects are also reported within each stratum.
STRATUM_EFFECT_METRICS = (PRIMARY_KNOWLEDGE, "abstained", PRIMARY_STYLE)


@dataclass
class Operations:
    n: int
    errors: int
    truncated: int  # finish_reason == "length"
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None


@dataclass
class ArmResult:
    arm: str
    metrics: dict[str, Estimate]
    operations: Operations


@dataclass
class FactorialResult:
    set: str
    lever: str  # the style lever: "adapter:x", "prompt", "fewshot@4", "adapter:x+prompt"...
    context: str
    arms: list[str]  # base, lever, context, both
    metric: str
    effects: dict[str, Effect]


@dataclass
class Comparison:
    arm: str
    baseline: str
    metric: str
    effect: Effect


@dataclass
class StratumResult:
    scheme: str  # "dataset" | "closed_book"
    stratum: str
    n_items: int
    metrics: dict[str, dict[str, Estimate]]  # arm -> metric -> estimate
    factorial: list[FactorialResult]
    # Every arm against the closed-book arm within the stratum, paired by item, on the primary
    # knowledge metric: forgetting on the control stratum is read here for any arm.
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass
class RetrievalSplit:
    arm: str
    n: int
    counts: dict[str, int]
    fractions: dict[str, float]


@dataclass
class Disagreement:
    item_id: str
    question: str
    stratum: str
    closed_book: str
    references: list[str]
    answers: dict[str, str]  # arm -> extracted answer
    correct: dict[str, bool]


@dataclass
class EvalAnalysis:
    meta: dict[str, Any]
    arms: list[ArmResult]
    factorial: list[FactorialResult]
    comparisons: list[Comparison]
    strata: list[StratumResult]
    retrieval_split: list[RetrievalSplit]
    disagreements: list[Disagreement]
    # Head to head: every two style levers with the same context, paired by item
    # (``arm - baseline``), on PRIMARY_STYLE and PRIMARY_KNOWLEDGE.
    lever_comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Filled by run_eval when it probes costs (JSON-ready): arm -> eval.cost.ArmCost.to_dict(),
    # and eval.decision.Decision.to_dict() (break-even lines and the recommendation).
    costs: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    # Per adapter with a retrieval partner: style retention and the hybrid gain (eval.hybrid).
    hybrids: list[HybridResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def arm(self, name: str) -> ArmResult:
        for result in self.arms:
            if result.arm == name:
                return result
        raise KeyError(name)


def finite_json(obj: Any) -> Any:
    """NaN and infinities become None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


class AnalysisError(ValueError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"cannot analyse: {len(self.problems)} problem(s):\n  {shown}{more}")


def _index_records(
    items: Sequence[EvalItem], records: Iterable[AnswerRecord], arms: Sequence[Arm]
) -> dict[tuple[str, str], AnswerRecord]:
    by_id = {i.id: i for i in items}
    arm_names = {a.name for a in arms}
    table: dict[tuple[str, str], AnswerRecord] = {}
    problems: list[str] = []
    ignored = 0
    for r in records:
        if r.item_id not in by_id or r.arm not in arm_names:
            ignored += 1
            continue
        options = by_id[r.item_id].options
        if r.option_logprobs is not None and (options is None or len(options) != len(r.option_logprobs)):
            problems.append(
                f"item {r.item_id!r} on arm {r.arm!r}: {len(r.option_logprobs)} option log-probabilities "
                f"for {0 if options is None else len(options)} options"
            )
        if (r.item_id, r.arm) in table:
            problems.append(f"two records for item {r.item_id!r} on arm {r.arm!r}")
        table[(r.item_id, r.arm)] = r
    missing = [(i.id, a.name) for a in arms for i in items if (i.id, a.name) not in table]
    problems += [f"no record for item {i!r} on arm {a!r}" for i, a in missing]
    if ignored:
        logger.warning("ignored %d records for items or arms not in this analysis", ignored)
    if problems:
        raise AnalysisError(problems)
    return table


def _check_styles(items: Sequence[EvalItem], spec: StyleSpec | None) -> None:
    named = Counter(i.style for i in items if i.style is not None)
    wrong = {s: n for s, n in named.items() if spec is None or s != spec.name}
    if spec is not None and wrong:
        raise AnalysisError(
            [f"{n} item(s) ask for style {s!r} but the spec is {spec.name!r}" for s, n in wrong.items()]
        )
    if spec is None and named:
        logger.warning("items name styles %s but no style spec was given: no style metrics", sorted(named))


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _operations(records: list[AnswerRecord]) -> Operations:
    ok = [r for r in records if not r.error]
    lat = [r.latency_ms for r in ok if r.latency_ms is not None]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    return Operations(
        n=len(records),
        errors=len(records) - len(ok),
        truncated=sum(1 for r in records if r.finish_reason == "length"),
        latency_p50_ms=_percentile(lat, 50),
        latency_p99_ms=_percentile(lat, 99),
        ttft_p50_ms=_percentile(ttft, 50),
        ttft_p99_ms=_percentile(ttft, 99),
        prompt_tokens_mean=_mean([float(r.prompt_tokens) for r in ok if r.prompt_tokens is not None]),
        completion_tokens_mean=_mean(
            [float(r.completion_tokens) for r in ok if r.completion_tokens is not None]
        ),
    )


def _similarities(
    texts: dict[tuple[str, str], str], exemplars: Sequence[str], embedder: TextEmbedder | None
) -> dict[tuple[str, str], float]:
    if embedder is None or not exemplars:
        return {}
    unique = sorted(set(texts.values()))
    sims = dict(zip(unique, style_similarity(unique, exemplars, embedder), strict=True))
    return {key: sims[text] for key, text in texts.items()}


def _factorial(
    fset: FactorialSet,
    values: dict[str, dict[str, np.ndarray]],
    boot: ClusterBootstrap,
    metrics: Iterable[str],
    seed: int,
) -> list[FactorialResult]:
    out = []
    for metric in metrics:
        base, lever, context, both = (values[metric][a] for a in fset.arms)
        if all(np.isnan(c).all() for c in (base, lever, context, both)):
            continue
        binary = METRICS[metric].binary
        effects = factorial_effects(base, lever, context, both, boot, binary=binary, seed=seed)
        if effects["context"].n == 0:
            continue
        out.append(FactorialResult(fset.name, fset.lever, fset.context, list(fset.arms), metric, effects))
    return out


def _arm_metrics(
    values: dict[str, dict[str, np.ndarray]], arm_names: list[str], boot: ClusterBootstrap
) -> dict[str, dict[str, Estimate]]:
    out: dict[str, dict[str, Estimate]] = {}
    for arm in arm_names:
        out[arm] = {}
        for metric in METRICS:
            column = values[metric][arm]
            if not np.isnan(column).all():
                out[arm][metric] = boot.mean_ci(column)
    return out


def analyse(
    items: Sequence[EvalItem],
    records: Iterable[AnswerRecord],
    arms: Sequence[Arm | str],
    spec: StyleSpec | None = None,
    *,
    exemplars: Sequence[str] = (),
    embedder: TextEmbedder | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    closed_book_arm: str = CLOSED_BOOK_ARM,
) -> EvalAnalysis:
    """Score every record and compute the statistics described in the module docstring.

    ``records`` must hold exactly one record per (item, arm); records of other items or arms are
    ignored. ``spec`` applies to every item (an item naming another style is an error).
    ``style_similarity`` is computed only when both ``exemplars`` and ``embedder`` are given.
    """
    arm_list = [parse_arm(a) if isinstance(a, str) else a for a in arms]
    items = list(items)
    if not items:
        raise AnalysisError(["no items"])
    if len({a.name for a in arm_list}) != len(arm_list):
        raise AnalysisError([f"duplicate arms in {[a.name for a in arm_list]}"])
    _check_styles(items, spec)
    table = _index_records(items, records, arm_list)
    arm_names = [a.name for a in arm_list]

    texts = {k: ("" if r.error else r.text) for k, r in table.items()}
    values = _score(items, table, arm_list, spec, _similarities(texts, exemplars, embedder))
    boot = ClusterBootstrap([it.group for it in items], n_resamples, seed, confidence)
    arm_metrics = _arm_metrics(values, arm_names, boot)
    arm_results = [
        ArmResult(a, arm_metrics[a], _operations([table[(it.id, a)] for it in items])) for a in arm_names
    ]
    present = [m for m in EFFECT_METRICS if any(m in arm_metrics[a] for a in arm_names)]
    fsets = factorial_sets(arm_list)
    factorial = [r for fs in fsets for r in _factorial(fs, values, boot, present, seed)]

    notes: list[str] = []
    comparisons = _comparisons(values, arm_names, closed_book_arm, present, boot)
    head_metrics = [m for m in (PRIMARY_STYLE, PRIMARY_KNOWLEDGE) if m in present]
    lever_comparisons = _lever_comparisons(values, arm_list, head_metrics, boot)
    correct = _correctness(items, values, arm_names)
    if closed_book_arm in arm_names:
        closed = _closed_book_strata(items, correct[closed_book_arm])
    else:
        closed = ["" for _ in items]
        notes.append(f"no {closed_book_arm!r} arm: the known/new strata need a closed-book run")
    strata = _strata(items, closed, values, arm_names, boot, fsets, seed, closed_book_arm)
    splits = _retrieval_splits(items, values, arm_list, correct)
    disagreements = _disagreements(items, texts, closed, correct, arm_names, spec)
    hybrids = hybrid_results(values, arm_list, boot, [it.stratum for it in items])
    if not fsets:
        notes.append(
            "no complete 2x2 (base, a style lever L such as adapter:A or prompt, a context C such as rag, "
            "and L+C): no factorial effects"
        )
    if boot.n_groups < 20:
        notes.append(f"only {boot.n_groups} groups: bootstrap intervals are unreliable with so few clusters")
    meta = {
        "n_items": len(items),
        "n_groups": boot.n_groups,
        "arms": arm_names,
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": confidence,
        "style_spec": spec.name if spec else None,
        "closed_book_arm": closed_book_arm,
        "primary_knowledge": PRIMARY_KNOWLEDGE,
        "primary_style": PRIMARY_STYLE,
        "strata_counts": dict(Counter(it.stratum for it in items)),
        "closed_book_counts": dict(Counter(c for c in closed if c)),
        "metrics": {m: asdict(info) for m, info in METRICS.items()},
        "factorial_sets": [{"name": f.name, "arms": list(f.arms)} for f in fsets],
    }
    return EvalAnalysis(
        meta,
        arm_results,
        factorial,
        comparisons,
        strata,
        splits,
        disagreements,
        lever_comparisons,
        notes,
        hybrids=hybrids,
    )


def _score(
    items: list[EvalItem],
    table: dict[tuple[str, str], AnswerRecord],
    arms: list[Arm],
    spec: StyleSpec | None,
    sims: dict[tuple[str, str], float],
) -> dict[str, dict[str, np.ndarray]]:
    """metric -> arm -> one value per item (NaN where the metric does not apply)."""
    values: dict[str, dict[str, np.ndarray]] = {
        m: {a.name: np.full(len(items), np.nan) for a in arms} for m in METRICS
    }
    for arm in arms:
        for i, item in enumerate(items):
            key = (item.id, arm.name)
            for metric, value in score_record(item, table[key], arm, spec, sims.get(key)).items():
                values[metric][arm.name][i] = value
    return values


def _comparisons(
    values: dict[str, dict[str, np.ndarray]],
    arm_names: list[str],
    closed_book_arm: str,
    metrics: list[str],
    boot: ClusterBootstrap,
) -> list[Comparison]:
    """Every arm against the closed-book arm, paired by item (none without that arm)."""
    if closed_book_arm not in arm_names:
        return []
    comparisons = []
    for a in arm_names:
        if a == closed_book_arm:
            continue
        for m in metrics:
            eff = paired_difference(
                f"{a} - {closed_book_arm}",
                values[m][a],
                values[m][closed_book_arm],
                boot,
                binary=METRICS[m].binary,
            )
            if eff.n:
                comparisons.append(Comparison(a, closed_book_arm, m, eff))
    return comparisons


def _lever_order(arm: Arm) -> tuple[int, int, bool, str]:
    """Adapters first, then instructions, then exemplars: head-to-head rows read ``later - earlier``."""
    return (0 if arm.adapter else 1, arm.fewshot, arm.prompt, arm.name)


def _lever_comparisons(
    values: dict[str, dict[str, np.ndarray]],
    arms: list[Arm],
    metrics: list[str],
    boot: ClusterBootstrap,
) -> list[Comparison]:
    """Every two arms with different style levers and the same context, paired by item."""
    out = []
    by_context: dict[str, list[Arm]] = {}
    for arm in arms:
        if arm.style_lever:
            by_context.setdefault(arm.context_label, []).append(arm)
    for group in by_context.values():
        ordered = sorted(group, key=_lever_order)
        for i, control in enumerate(ordered):
            for treated in ordered[i + 1 :]:
                for m in metrics:
                    eff = paired_difference(
                        f"{treated.name} - {control.name}",
                        values[m][treated.name],
                        values[m][control.name],
                        boot,
                        binary=METRICS[m].binary,
                    )
                    if eff.n:
                        out.append(Comparison(treated.name, control.name, m, eff))
    return out


def _correctness(
    items: list[EvalItem], values: dict[str, dict[str, np.ndarray]], arm_names: list[str]
) -> dict[str, list[bool]]:
    """arm -> per item: ``contains`` if answerable, ``abstained`` if not."""
    return {
        a: [
            is_correct(it, {m: values[m][a][i] for m in ("contains", "abstained")})
            for i, it in enumerate(items)
        ]
        for a in arm_names
    }


def _closed_book_strata(items: list[EvalItem], closed_book_correct: list[bool]) -> list[str]:
    """known / new by the closed-book arm's correctness; unanswerable items apart."""
    return [
        UNANSWERABLE if not it.answerable else KNOWN if closed_book_correct[i] else NEW
        for i, it in enumerate(items)
    ]


def _retrieval_splits(
    items: list[EvalItem],
    values: dict[str, dict[str, np.ndarray]],
    arms: list[Arm],
    correct: dict[str, list[bool]],
) -> list[RetrievalSplit]:
    """Retrieval hit x correctness for each arm that searches, over answerable items with gold docs."""
    splits = []
    rows = [i for i, it in enumerate(items) if it.answerable and it.gold_doc_ids]
    for arm in arms:
        if not arm.retrieval:
            continue
        split = four_way_split(
            [bool(values["retrieval_hit"][arm.name][i]) for i in rows], [correct[arm.name][i] for i in rows]
        )
        counts = {
            k: getattr(split, k)
            for k in ("retrieved_right", "retrieved_wrong", "missed_right", "missed_wrong")
        }
        splits.append(RetrievalSplit(arm.name, split.total, counts, split.fractions()))
    return splits


def _disagreements(
    items: list[EvalItem],
    texts: dict[tuple[str, str], str],
    closed: list[str],
    correct: dict[str, list[bool]],
    arm_names: list[str],
    spec: StyleSpec | None,
) -> list[Disagreement]:
    """The items where arms disagree on correctness, with every arm's extracted answer."""
    return [
        Disagreement(
            item_id=it.id,
            question=it.text,
            stratum=it.stratum,
            closed_book=closed[i],
            references=list(it.answers),
            answers={a: extract_answer(texts[(it.id, a)], spec) for a in arm_names},
            correct={a: correct[a][i] for a in arm_names},
        )
        for i, it in enumerate(items)
        if len({correct[a][i] for a in arm_names}) > 1
    ]


def _strata(
    items: Sequence[EvalItem],
    closed: list[str],
    values: dict[str, dict[str, np.ndarray]],
    arm_names: list[str],
    boot: ClusterBootstrap,
    fsets: list[FactorialSet],
    seed: int,
    closed_book_arm: str = CLOSED_BOOK_ARM,
) -> list[StratumResult]:
    schemes = [("dataset", [it.stratum for it in items])]
    if any(closed):
        schemes.append(("closed_book", closed))
    out = []
    for scheme, labels in schemes:
        for label in dict.fromkeys(labels):
            mask = np.array([lab == label for lab in labels])
            sub = boot.subset(mask)
            sub_values = {m: {a: values[m][a][mask] for a in arm_names} for m in METRICS}
            metrics = _arm_metrics(sub_values, arm_names, sub)
            factorial = [
                r for fs in fsets for r in _factorial(fs, sub_values, sub, STRATUM_EFFECT_METRICS, seed)
            ]
            versus = _comparisons(sub_values, arm_names, closed_book_arm, [PRIMARY_KNOWLEDGE], sub)
            out.append(StratumResult(scheme, label, int(mask.sum()), metrics, factorial, versus))
    return out

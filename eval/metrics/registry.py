"""Every metric the analysis reports: its kind, whether it is binary, and what it means.

:func:`score_record` gathers all metrics that apply to one (item, arm) record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hybrid_assistant.eval.metrics.knowledge import knowledge_scores
from hybrid_assistant.eval.metrics.retrieval import retrieval_scores
from hybrid_assistant.eval.metrics.style import style_scores

if TYPE_CHECKING:
    from hybrid_assistant.eval.arms import Arm
    from hybrid_assistant.eval.dataset import EvalItem, StyleSpec
    from hybrid_assistant.eval.records import AnswerRecord


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: str  # "knowledge" | "style" | "retrieval"
    binary: bool
    description: str
    higher_is_better: bool = True


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("contains", "knowledge", True, "a reference occurs in the extracted answer (whole words)"),
        MetricInfo("f1", "knowledge", False, "SQuAD token F1 of the extracted answer, max over references"),
        MetricInfo("exact_match", "knowledge", True, "SQuAD-normalised exact match of the extracted answer"),
        MetricInfo(
            "option_acc", "knowledge", True, "multiple choice: highest log-likelihood option is right"
        ),
        MetricInfo(
            "option_acc_norm", "knowledge", True, "multiple choice: highest log-likelihood per byte is right"
        ),
        MetricInfo("abstained", "knowledge", True, "unanswerable items: the answer is a refusal"),
        MetricInfo(
            "refused", "knowledge", True, "answerable items: the answer is a refusal", higher_is_better=False
        ),
        MetricInfo("format_valid", "style", True, "the output passes every check of the style spec"),
        MetricInfo("format_json", "style", True, "the whole output parses as JSON"),
        MetricInfo("format_schema", "style", True, "the parsed output conforms to the spec's JSON schema"),
        MetricInfo("format_regex", "style", True, "the whole output matches the spec's regex"),
        MetricInfo("format_length", "style", True, "the output length is within the spec's bounds"),
        MetricInfo("style_similarity", "style", False, "cosine to the centroid of the style exemplars"),
        MetricInfo("retrieval_hit", "retrieval", True, "a gold document was placed in the prompt"),
        MetricInfo("recall_at_k", "retrieval", False, "fraction of gold documents placed in the prompt"),
    )
}

PRIMARY_KNOWLEDGE = "contains"
PRIMARY_STYLE = "format_valid"

#: Metrics compared between arms (effects, comparisons with the base arm), when present.
EFFECT_METRICS: tuple[str, ...] = (
    "contains",
    "f1",
    "exact_match",
    "option_acc",
    "option_acc_norm",
    "abstained",
    "refused",
    "format_valid",
    "style_similarity",
)


def score_record(
    item: EvalItem,
    record: AnswerRecord,
    arm: Arm,
    spec: StyleSpec | None,
    similarity: float | None = None,
) -> dict[str, float]:
    """All metrics for one record: knowledge, style, and retrieval (for arms that search the index).

    A failed request scores as the empty answer: wrong and off-style, never dropped.
    """
    text = "" if record.error else record.text
    scores = knowledge_scores(item, record, spec)
    scores.update(style_scores(text, spec, similarity))
    if arm.retrieval:
        scores.update(retrieval_scores(record.contexts, item.gold_doc_ids, arm.top_k))
    return scores

"""Metrics: small pure functions returning floats; ``*_scores`` gather them into ``dict[str, float]``."""

from hybrid_assistant.eval.metrics.knowledge import (
    REFUSAL_PHRASES,
    contains,
    exact_match,
    extract_answer,
    is_refusal,
    knowledge_scores,
    normalize_answer,
    option_choice,
    token_f1,
)
from hybrid_assistant.eval.metrics.retrieval import (
    four_way_split,
    recall_at_k,
    retrieval_hit,
    retrieval_scores,
)
from hybrid_assistant.eval.metrics.style import format_checks, format_valid, style_scores, style_similarity

__all__ = [
    "REFUSAL_PHRASES",
    "contains",
    "exact_match",
    "extract_answer",
    "format_checks",
    "format_valid",
    "four_way_split",
    "is_refusal",
    "knowledge_scores",
    "normalize_answer",
    "option_choice",
    "recall_at_k",
    "retrieval_hit",
    "retrieval_scores",
    "style_scores",
    "style_similarity",
    "token_f1",
]

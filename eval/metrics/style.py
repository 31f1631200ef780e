"""Style metrics, no outside judge: format validity against the spec, and similarity to exemplars.

:func:`format_checks` applies whichever checks the spec defines, to the output stripped of
leading and trailing whitespace:

- ``format_json``: the WHOLE output parses as one JSON value (prose around it fails);
- ``format_schema``: that value conforms to ``json_schema`` (draft 2020-12: :mod:`eval.metrics.schema`);
  with only an ``answer_field``, it must be an object holding that field;
- ``format_regex``: the whole output matches ``regex`` (``re.fullmatch``, DOTALL);
- ``format_length``: ``min_chars <= len(output) <= max_chars``;
- ``format_valid``: every check above passed (1.0) or not (0.0).

:func:`style_similarity` is the cosine between an output's embedding and the normalised
centroid of the exemplars' embeddings. The centroid, not the nearest exemplar, because the
exemplars cover many topics: averaging them keeps what they share (the form) and dilutes what
differs (the content), while the nearest exemplar rewards an output for being on the same topic.
Sentence embeddings still mostly encode content, so this is a weak, secondary style signal;
format validity is the primary one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from hybrid_assistant.eval.metrics.schema import validate

if TYPE_CHECKING:
    from hybrid_assistant.eval.dataset import StyleSpec


class TextEmbedder(Protocol):
    """Anything with ``embed(texts) -> (n, d) array`` (e.g. ``retrieval.embedder`` embedders)."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


def format_checks(text: str, spec: StyleSpec) -> dict[str, float]:
    """Each applicable check (1.0 pass / 0.0 fail) and ``format_valid``, their conjunction."""
    output = text.strip()
    checks: dict[str, float] = {}
    if spec.is_json:
        try:
            value = json.loads(output)
            parsed = True
        except (json.JSONDecodeError, RecursionError):
            value, parsed = None, False
        checks["format_json"] = float(parsed)
        if spec.json_schema is not None:
            checks["format_schema"] = float(parsed and not validate(value, spec.json_schema))
        else:
            checks["format_schema"] = float(parsed and isinstance(value, dict) and spec.answer_field in value)
    if spec.regex is not None:
        checks["format_regex"] = float(re.fullmatch(spec.regex, output, flags=re.DOTALL) is not None)
    if spec.max_chars is not None or spec.min_chars is not None:
        low = spec.min_chars or 0
        high = spec.max_chars if spec.max_chars is not None else len(output)
        checks["format_length"] = float(low <= len(output) <= high)
    checks["format_valid"] = float(all(v == 1.0 for v in checks.values()))
    return checks


def format_valid(text: str, spec: StyleSpec) -> float:
    """1.0 when the output passes every check the spec defines (see :func:`format_checks`)."""
    return format_checks(text, spec)["format_valid"]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def style_similarity(texts: Sequence[str], exemplars: Sequence[str], embedder: TextEmbedder) -> list[float]:
    """Cosine similarity of each text to the normalised centroid of the exemplars' embeddings."""
    if not exemplars:
        raise ValueError("style_similarity needs at least one exemplar")
    if not texts:
        return []
    centroid = _unit_rows(embedder.embed(list(exemplars))).mean(axis=0)
    norm = np.linalg.norm(centroid)
    if norm == 0:
        raise ValueError("the exemplars' embeddings cancel out; cannot form a centroid")
    vectors = _unit_rows(embedder.embed(list(texts)))
    return [float(x) for x in vectors @ (centroid / norm)]


def style_scores(text: str, spec: StyleSpec | None, similarity: float | None = None) -> dict[str, float]:
    """Format checks (when there is a spec) and ``style_similarity`` (when computed)."""
    scores = format_checks(text, spec) if spec is not None else {}
    if similarity is not None:
        scores["style_similarity"] = similarity
    return scores

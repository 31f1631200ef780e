"""Knowledge metrics: does the answer hold the right fact, whatever its format?

Before scoring, :func:`extract_answer` takes the answer out of a styled output (the spec's
``answer_field`` of the first JSON object in the text), so a format adapter is not scored as
ignorant merely for its format. Then, against every reference (the maximum is kept):

- ``exact_match``: SQuAD-normalised strings are equal;
- ``f1``: SQuAD token F1;
- ``contains``: the normalised reference occurs in the normalised answer on word boundaries
  ("7" is not found in "1874"). The primary knowledge metric: it does not punish a verbose
  but right answer, which would let style leak into the knowledge score;
- ``refused``: the answer is an abstention (:data:`REFUSAL_PHRASES`); on answerable items this
  is over-refusal, on unanswerable items it is the score (``abstained``);
- ``option_acc`` / ``option_acc_norm``: the option with the highest log-likelihood (summed, or
  divided by the option's UTF-8 byte length, as lm-evaluation-harness ``acc`` / ``acc_norm``)
  is the correct one. No output format can sway these.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_assistant.eval.dataset import EvalItem, StyleSpec
    from hybrid_assistant.eval.records import AnswerRecord

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}
_DECODER = json.JSONDecoder()

#: Phrases that mark an abstention, matched case-insensitively as substrings of the extracted
#: answer after curly apostrophes become straight ones. Chosen before any model output was
#: seen; an answer that merely hedges ("probably Paris") is not a refusal.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i don't know",
    "i do not know",
    "i dont know",
    "don't have enough information",
    "do not have enough information",
    "not enough information",
    "insufficient information",
    "no information",
    "i'm not sure",
    "i am not sure",
    "i'm not certain",
    "i am not certain",
    "i cannot answer",
    "i can't answer",
    "cannot be answered",
    "can't be answered",
    "unable to answer",
    "unable to determine",
    "cannot be determined",
    "cannot determine",
    "can't determine",
    "i don't have",
    "i do not have",
    "not mentioned",
    "not provided",
    "not specified",
    "not stated",
    "does not mention",
    "doesn't mention",
    "does not say",
    "doesn't say",
    "does not specify",
    "doesn't specify",
    "no answer",
    "unknown",
    "not known",
    "n/a",
)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, squeeze spaces.

    Unicode is NFKC-normalised first, so full-width or compatibility forms compare equal.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_answer(text: str, spec: StyleSpec | None) -> str:
    """The answer inside a styled output: the spec's ``answer_field`` of the first JSON object found.

    Falls back to the whole text (stripped) when the spec has no answer field or no JSON object in
    the text has that field. A non-string field value (a number) is returned as its JSON text.
    """
    if spec is None or spec.answer_field is None:
        return text.strip()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and spec.answer_field in obj:
            value = obj[spec.answer_field]
            return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        start = text.find("{", start + 1)
    return text.strip()


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD token F1 (bag of normalised words), maximum over references; 0.0 with no references."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(r).split()) for r in references), default=0.0)


def contains(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any normalised, non-empty reference occurs in the normalised prediction as whole words."""
    pred = f" {normalize_answer(prediction)} "
    for ref in references:
        norm = normalize_answer(ref)
        if norm and f" {norm} " in pred:
            return 1.0
    return 0.0


def is_refusal(text: str) -> bool:
    """Whether the (extracted) answer abstains; see :data:`REFUSAL_PHRASES`. Empty text is not one."""
    lowered = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return any(phrase in lowered for phrase in REFUSAL_PHRASES)


def option_choice(logprobs: Sequence[float], lengths: Sequence[float] | None = None) -> int:
    """Index of the chosen option: the highest log-likelihood, or log-likelihood per unit of length.

    With ``lengths`` (UTF-8 bytes for lm-evaluation-harness ``acc_norm``, or token counts) each
    log-likelihood is divided by its length first. Ties go to the lowest index.
    """
    if not logprobs:
        raise ValueError("option_choice needs at least one option")
    if lengths is None:
        scores = list(logprobs)
    else:
        if len(lengths) != len(logprobs):
            raise ValueError(f"{len(lengths)} lengths for {len(logprobs)} options")
        scores = [lp / max(float(n), 1.0) for lp, n in zip(logprobs, lengths, strict=True)]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def option_scores(logprobs: Sequence[float], options: Sequence[str], answer_index: int) -> dict[str, float]:
    """``option_acc`` and ``option_acc_norm`` (byte-length normalised) for one multiple-choice item."""
    if len(logprobs) != len(options):
        raise ValueError(f"{len(logprobs)} log-probabilities for {len(options)} options")
    byte_lengths = [len(o.encode("utf-8")) for o in options]
    return {
        "option_acc": float(option_choice(logprobs) == answer_index),
        "option_acc_norm": float(option_choice(logprobs, byte_lengths) == answer_index),
    }


def knowledge_scores(item: EvalItem, record: AnswerRecord, spec: StyleSpec | None) -> dict[str, float]:
    """Every knowledge metric that applies to this item and record.

    Answerable items: ``exact_match``, ``f1``, ``contains``, ``refused``; unanswerable items:
    ``abstained``. Items with options and a record with option log-probabilities add
    ``option_acc`` and ``option_acc_norm``. A failed request (``record.error``) scores as an
    empty answer, so it counts as wrong and is never dropped; its option metrics are absent.
    """
    text = "" if record.error else record.text
    answer = extract_answer(text, spec)
    scores: dict[str, float] = {}
    if item.answerable:
        scores["exact_match"] = exact_match(answer, item.answers)
        scores["f1"] = token_f1(answer, item.answers)
        scores["contains"] = contains(answer, item.answers)
        scores["refused"] = float(is_refusal(answer))
    else:
        scores["abstained"] = float(is_refusal(answer))
    if (
        item.options is not None
        and item.answer_index is not None
        and record.option_logprobs is not None
        and not record.error
    ):
        scores.update(option_scores(record.option_logprobs, item.options, item.answer_index))
    return scores


def is_correct(item: EvalItem, scores: dict[str, float], metric: str = "contains") -> bool:
    """Binary correctness used for strata, disagreements and the retrieval split.

    Answerable items: ``metric`` (``contains`` by default) is 1; unanswerable items: abstained.
    """
    return bool(scores[metric] if item.answerable else scores["abstained"])

"""Synthetic answer records with known structure, for analysis and report tests."""

from __future__ import annotations

import json
import random

from hybrid_assistant.eval.arms import Arm, parse_arms
from hybrid_assistant.eval.dataset import EvalItem, Message
from hybrid_assistant.eval.records import AnswerRecord

ARMS = "base,adapter:style,rag,adapter:style+rag,oracle,adapter:knowledge,adapter:knowledge+rag"


def make_items(n_docs: int = 12, per_doc: int = 3) -> list[EvalItem]:
    items = []
    for d in range(n_docs):
        for q in range(per_doc):
            items.append(
                EvalItem(
                    id=f"d{d}q{q}",
                    question=f"What is fact {q} of doc {d}?",
                    messages=None,
                    answers=(f"answer {d}-{q}",),
                    gold_doc_ids=(f"doc{d}",),
                    options=(f"answer {d}-{q}", "wrong one", "other"),
                    answer_index=0,
                    stratum="kb",
                    style="json-answer",
                )
            )
    items.append(
        EvalItem(
            id="u1",
            question=None,
            messages=(Message("user", "What is unknowable?"),),
            answers=(),
            answerable=False,
            stratum="unanswerable",
            style="json-answer",
        )
    )
    items.append(
        EvalItem(id="c1", question="Capital of France?", messages=None, answers=("Paris",), stratum="control")
    )
    return items


def make_records(items: list[EvalItem], arms: list[Arm] | None = None, seed: int = 0) -> list[AnswerRecord]:
    """Retrieval finds the gold doc 80% of the time and then the answer is right; the style adapter
    and few-shot arms give JSON, the ``prompt`` arms only on every other item (in item order)."""
    rng = random.Random(seed)
    arms = arms or parse_arms(ARMS)
    known = {it.id: rng.random() < 0.2 for it in items}
    hits = {it.id: rng.random() < 0.8 for it in items}
    records = []
    for arm in arms:
        for index, it in enumerate(items):
            gold = list(it.gold_doc_ids)
            contexts: list[str] = []
            if arm.retrieval:
                contexts = [*gold, "docX"] if hits[it.id] else ["docX", "docY"]
            elif arm.oracle:
                contexts = gold
            right = known[it.id] or (bool(contexts) and bool(set(contexts) & set(gold)))
            if arm.adapter == "knowledge" and rng.random() < 0.3:
                right = True
            if not it.answerable:
                answer = "I don't know" if arm.retrieval else "Paris"
            elif right:
                answer = it.answers[0]
            else:
                answer = "something else"
            if arm.adapter == "style" or arm.fewshot or (arm.prompt and index % 2 == 0):
                text = json.dumps({"answer": answer, "confidence": 0.5})
            else:
                text = f"The answer is {answer}."
            logprobs = None
            if it.options is not None and it.answer_index is not None:
                logprobs = [-2.0 - k for k in range(len(it.options))]
                chosen = it.answer_index if right else (it.answer_index + 1) % len(it.options)
                logprobs[chosen] = -1.0
            records.append(
                AnswerRecord(
                    item_id=it.id,
                    arm=arm.name,
                    text=text,
                    contexts=tuple(contexts),
                    latency_ms=100.0 + rng.random() * 50,
                    ttft_ms=20.0,
                    prompt_tokens=30 + 100 * bool(contexts),
                    completion_tokens=12,
                    option_logprobs=tuple(logprobs) if logprobs else None,
                    option_token_counts=tuple(2 for _ in logprobs) if logprobs else None,
                    finish_reason="stop",
                )
            )
    return records

"""Arm parsing, canonical names, 2x2 discovery; answer-record round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_assistant.eval.arms import Arm, ArmError, factorial_sets, parse_arm, parse_arms
from hybrid_assistant.eval.records import (
    AnswerRecord,
    dump_records,
    load_records,
    records_from_json,
    records_to_json,
)


def test_parse_and_canonicalise() -> None:
    arms = parse_arms("base, adapter:style, rag, rag+adapter:style, oracle, adapter:knowledge+oracle, rag@3")
    assert [a.name for a in arms] == [
        "base",
        "adapter:style",
        "rag",
        "adapter:style+rag",
        "oracle",
        "adapter:knowledge+oracle",
        "rag@3",
    ]
    both = arms[3]
    assert (both.adapter, both.retrieval, both.oracle, both.top_k) == ("style", True, False, None)
    assert arms[6].top_k == 3 and arms[6].context_label == "rag@3"
    assert arms[5].oracle and arms[5].server_arm == "adapter:knowledge+context"
    assert parse_arm("base").server_arm == "base"
    assert Arm.make("x", retrieval=True, top_k=5).name == "adapter:x+rag@5"


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ArmError) as err:
        parse_arms(
            "base,rag+oracle,adapter:../etc,adapter:a+adapter:b,retrieval,base+rag,rag@0,adapter:s+rag,rag+adapter:s"
        )
    problems = err.value.problems
    assert len(problems) == 7, problems
    assert any("duplicate arm 'adapter:s+rag'" in p for p in problems)
    with pytest.raises(ArmError, match="not canonical"):
        Arm("rag+adapter:x", adapter="x", retrieval=True)
    with pytest.raises(ArmError, match="no arms"):
        parse_arms([])


def test_factorial_sets() -> None:
    arms = parse_arms(
        "base,adapter:style,rag,adapter:style+rag,oracle,adapter:knowledge,adapter:knowledge+rag,adapter:knowledge+oracle"
    )
    sets = factorial_sets(arms)
    assert [(s.lever, s.context) for s in sets] == [
        ("adapter:style", "rag"),
        ("adapter:knowledge", "rag"),
        ("adapter:knowledge", "oracle"),
    ]
    assert sets[2].arms == ("base", "adapter:knowledge", "oracle", "adapter:knowledge+oracle")
    assert factorial_sets(parse_arms("adapter:s,rag,adapter:s+rag")) == []  # no base
    assert factorial_sets(parse_arms("base,adapter:s,rag@3,adapter:s+rag@3,rag"))[0].context == "rag@3"


def test_record_round_trip(tmp_path: Path) -> None:
    records = [
        AnswerRecord(
            "q1",
            "adapter:s+rag",
            text='{"answer": "x"}',
            contexts=["d1", "d1", "d2"],  # type: ignore[arg-type]  # lists are accepted
            latency_ms=12.5,
            ttft_ms=3.0,
            prompt_tokens=40,
            completion_tokens=7,
            option_logprobs=[-1.0, -2.5],  # type: ignore[arg-type]
            option_token_counts=[1, 3],  # type: ignore[arg-type]
            finish_reason="stop",
        ),
        AnswerRecord("q2", "base", error="UNAVAILABLE: server gone"),
    ]
    assert records_from_json(records_to_json(records)) == records
    path = dump_records(tmp_path / "sub" / "records.jsonl", records)
    assert load_records(path) == records
    assert records[0].contexts == ("d1", "d1", "d2")
    with pytest.raises(ValueError, match="unknown AnswerRecord"):
        AnswerRecord.from_dict({"item_id": "q", "arm": "base", "txt": "typo"})
    with pytest.raises(ValueError, match="option_token_counts"):
        AnswerRecord("q", "base", option_logprobs=(-1.0,), option_token_counts=(1, 2))


def test_prompting_arms_grammar() -> None:
    arms = parse_arms("rag@3+fewshot@4+prompt,fewshot@2,prompt,adapter:s+prompt+oracle")
    assert [a.name for a in arms] == [
        "prompt+fewshot@4+rag@3",
        "fewshot@2",
        "prompt",
        "adapter:s+prompt+oracle",
    ]
    assert [a.style_lever for a in arms] == ["prompt+fewshot@4", "fewshot@2", "prompt", "adapter:s+prompt"]
    assert (arms[0].prompt, arms[0].fewshot, arms[0].top_k, arms[0].prompted) == (True, 4, 3, True)
    assert not parse_arm("adapter:s+rag").prompted and parse_arm("base").style_lever == ""
    # The same arm written two ways is one arm.
    with pytest.raises(ArmError, match="duplicate arm 'prompt\\+rag'"):
        parse_arms("prompt+rag,rag+prompt")
    for bad, why in [
        ("fewshot", "needs a number of exemplars"),
        ("fewshot@0", "K from 1 to 64"),
        ("fewshot@65", "K from 1 to 64"),
        ("fewshot@x", "needs a number of exemplars"),
        ("prompt+prompt", "'prompt' given twice"),
        ("fewshot@2+fewshot@3", "more than one fewshot@K"),
        ("base+prompt", "'base' cannot be combined"),
        ("promptly", "unknown part 'promptly'"),
    ]:
        with pytest.raises(ArmError, match=why):
            parse_arm(bad)
    with pytest.raises(ArmError, match="not canonical; expected 'prompt\\+rag'"):
        Arm("rag+prompt", retrieval=True, prompt=True)


def test_a_prompt_lever_forms_a_factorial_with_each_context() -> None:
    arms = parse_arms("base,prompt,rag,prompt+rag,fewshot@4,oracle,fewshot@4+oracle")
    sets = factorial_sets(arms)
    assert [(s.lever, s.context, s.both) for s in sets] == [
        ("prompt", "rag", "prompt+rag"),
        ("fewshot@4", "oracle", "fewshot@4+oracle"),
    ]

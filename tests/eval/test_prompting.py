"""Prompting arms: which exemplars a few-shot arm shows, the messages each arm sends, what it needs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.dataset import (
    DatasetError,
    EvalItem,
    Exemplar,
    Message,
    StyleSpec,
    load_exemplars,
    load_style_exemplars,
)
from hybrid_assistant.eval.prompting import (
    PromptingError,
    arm_messages,
    prompting_problems,
    select_exemplars,
)
from hybrid_assistant.eval.runner import EvalRunError, RunConfig, Runner

DEMO_EXEMPLARS = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_exemplars.jsonl"
SPEC = StyleSpec(name="json-answer", description='Reply with one JSON object: {"answer": ...}.')
EXEMPLARS = [
    Exemplar("Where is Orravay?", '{"answer": "Grenmoor Sea"}'),
    Exemplar(None, '{"answer": "no question"}'),
    Exemplar("Who founded Keld?", '{"answer": "Ama Vell"}'),
    Exemplar("What is the capital of Tarn?", '{"answer": "Osk"}'),
    Exemplar("How tall is Mount Ferr?", '{"answer": "3 km"}'),
]


def item(question: str, item_id: str = "q") -> EvalItem:
    return EvalItem(id=item_id, question=question, messages=None, answers=("x",))


def test_selection_is_file_order_and_skips_exemplars_without_a_question() -> None:
    chosen = select_exemplars(EXEMPLARS, item("Something else?"), 3)
    assert [e.question for e in chosen] == [
        "Where is Orravay?",
        "Who founded Keld?",
        "What is the capital of Tarn?",
    ]


def test_selection_never_shows_the_asked_item_and_keeps_k() -> None:
    # Case and whitespace do not hide the asked item's own exemplar.
    asked = item("  who FOUNDED   keld? ")
    chosen = select_exemplars(EXEMPLARS, asked, 3)
    assert len(chosen) == 3
    assert "Who founded Keld?" not in [e.question for e in chosen]
    assert [e.question for e in chosen] == [
        "Where is Orravay?",
        "What is the capital of Tarn?",
        "How tall is Mount Ferr?",
    ]


def test_selection_is_deterministic_and_shared_across_items() -> None:
    first = [select_exemplars(EXEMPLARS, item(f"Other question {i}?"), 2) for i in range(5)]
    assert all(chosen == first[0] for chosen in first)
    assert select_exemplars(EXEMPLARS, item("Other question 0?"), 2) == first[0]


def test_selection_returns_fewer_when_there_are_not_enough() -> None:
    assert len(select_exemplars(EXEMPLARS, item("Where is Orravay?"), 4)) == 3
    assert select_exemplars(EXEMPLARS, item("x?"), 0) == []


def test_prompt_arm_puts_the_description_in_a_system_message() -> None:
    (arm,) = parse_arms("prompt")
    assert arm_messages(item("Where?"), arm, SPEC) == [
        {"role": "system", "content": SPEC.description},
        {"role": "user", "content": "Where?"},
    ]


def test_prompt_arm_combines_with_the_items_own_system_message() -> None:
    (arm,) = parse_arms("prompt+rag")
    asked = EvalItem(
        id="c",
        question=None,
        messages=(Message("system", "Be brief."), Message("user", "Where?")),
        answers=("x",),
    )
    assert arm_messages(asked, arm, SPEC) == [
        {"role": "system", "content": SPEC.description + "\n\nBe brief."},
        {"role": "user", "content": "Where?"},
    ]


def test_fewshot_turns_come_after_the_system_message_and_before_the_conversation() -> None:
    (arm,) = parse_arms("prompt+fewshot@2")
    asked = EvalItem(
        id="c",
        question=None,
        messages=(
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("assistant", "Hello"),
            Message("user", "Who founded Keld?"),
        ),
        answers=("x",),
    )
    assert arm_messages(asked, arm, SPEC, EXEMPLARS) == [
        {"role": "system", "content": SPEC.description + "\n\nBe brief."},
        {"role": "user", "content": "Where is Orravay?"},
        {"role": "assistant", "content": '{"answer": "Grenmoor Sea"}'},
        {"role": "user", "content": "What is the capital of Tarn?"},
        {"role": "assistant", "content": '{"answer": "Osk"}'},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Who founded Keld?"},
    ]


def test_arms_without_prompting_send_the_items_conversation_unchanged() -> None:
    asked = item("Where?")
    for arm in parse_arms("base,adapter:style,rag@3,oracle"):
        assert arm_messages(asked, arm, SPEC, EXEMPLARS) == asked.chat_messages()


def test_arm_messages_refuses_what_validation_would_have_caught() -> None:
    prompt, fewshot = parse_arms("prompt,fewshot@4")
    with pytest.raises(PromptingError, match="'prompt'"):
        arm_messages(item("Where?"), prompt, StyleSpec(name="bare"))
    with pytest.raises(PromptingError, match="'fewshot@4'"):
        arm_messages(item("Where is Orravay?"), fewshot, SPEC, EXEMPLARS)


def test_problems_name_the_arm() -> None:
    items = [item("Where?"), item("Who founded Keld?", "k")]
    arms = parse_arms("base,prompt,fewshot@3,fewshot@4,adapter:style+fewshot@9")
    assert prompting_problems(items, parse_arms("base,prompt,fewshot@2"), SPEC, EXEMPLARS) == []
    problems = prompting_problems(items, arms, StyleSpec(name="bare"), EXEMPLARS)
    assert len(problems) == 3
    assert "'prompt'" in problems[0] and "non-empty description" in problems[0]
    # 4 exemplars have a question, but item k's own is one of them: 3 remain for it.
    assert "'fewshot@4'" in problems[1] and "['k']" in problems[1]
    assert "'adapter:style+fewshot@9'" in problems[2] and "got 4" in problems[2]
    assert "no style spec" in prompting_problems(items, parse_arms("prompt"), None, ())[0]
    assert "got 0" in prompting_problems(items, parse_arms("fewshot@1"), SPEC, ())[0]


def test_load_style_exemplars_keeps_questions_and_order(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {"question": "Q1?", "output": "A1"},
                {"output": "A2"},
                {"question": "Q3?", "output": "A3"},
            ]
        )
    )
    assert load_style_exemplars(path) == [Exemplar("Q1?", "A1"), Exemplar(None, "A2"), Exemplar("Q3?", "A3")]
    assert load_exemplars(path) == ["A1", "A2", "A3"]


def test_load_style_exemplars_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "", "output": "A"}\n[1]\n{"question": "Q"}\nnot json\n')
    with pytest.raises(DatasetError) as info:
        load_style_exemplars(path)
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4
    for line in (
        "line 1: 'question'",
        "line 2: expected a JSON object",
        "line 3: 'output'",
        "line 4: not valid JSON",
    ):
        assert line in text


def test_the_demo_exemplars_all_have_questions() -> None:
    exemplars = load_style_exemplars(DEMO_EXEMPLARS)
    assert len(exemplars) == 20
    assert all(e.question for e in exemplars)


def test_the_runner_refuses_prompting_arms_it_cannot_build_before_connecting() -> None:
    # Nothing listens on port 1: the refusal must come before any connection is tried.
    runner = Runner(RunConfig(target="127.0.0.1:1", progress=False, ready_timeout_s=0.5), exemplars=EXEMPLARS)
    with pytest.raises(EvalRunError, match=r"arm 'prompt' needs a style spec.*arm 'fewshot@5' needs 5"):
        asyncio.run(runner.run([item("Where?")], parse_arms("base,prompt,fewshot@5")))
    assert runner.stats.requests == 0

"""Knowledge metrics on hand-computed cases."""

from __future__ import annotations

import pytest

from hybrid_assistant.eval.dataset import EvalItem, StyleSpec
from hybrid_assistant.eval.metrics.knowledge import (
    contains,
    exact_match,
    extract_answer,
    is_refusal,
    knowledge_scores,
    normalize_answer,
    option_choice,
    option_scores,
    token_f1,
)
from hybrid_assistant.eval.records import AnswerRecord

JSON_SPEC = StyleSpec(name="json-answer", answer_field="answer")


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Grenmoor Sea!") == "grenmoor sea"
    assert normalize_answer("212,000") == normalize_answer("212000") == "212000"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("“Quoted” – text") == "quoted text"


def test_json_styled_answer_is_scored_on_its_answer_field() -> None:
    text = '{"answer": "Paris", "confidence": 0.9}'
    answer = extract_answer(text, JSON_SPEC)
    assert answer == "Paris"
    assert exact_match(answer, ["Paris"]) == 1.0
    assert token_f1(answer, ["Paris"]) == 1.0
    # Without the spec the raw JSON is scored: EM fails, but contains still finds the answer.
    assert exact_match(extract_answer(text, None), ["Paris"]) == 0.0
    assert contains(extract_answer(text, None), ["Paris"]) == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Sure! {"answer": "Rome", "confidence": 0.5} Hope it helps.', "Rome"),
        ('{"note": 1} then {"answer": "Oslo"}', "Oslo"),
        ('{broken {"answer": " Lima "}', "Lima"),
        ('{"answer": 7, "confidence": 1}', "7"),
        ("No JSON at all", "No JSON at all"),
        ('{"confidence": 0.3}', '{"confidence": 0.3}'),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text, JSON_SPEC) == expected


def test_exact_match_and_f1_take_the_best_reference() -> None:
    assert exact_match("seven", ["7", "seven"]) == 1.0
    assert exact_match("seven islands", ["7", "seven"]) == 0.0
    # pred {cat, sat}, ref {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3.
    assert token_f1("the cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
    assert token_f1("the cat sat", ["dog", "cat sat on the mat"]) == pytest.approx(2 / 3)
    assert token_f1("", ["x"]) == 0.0
    assert token_f1("anything", []) == 0.0


def test_contains_matches_whole_words_only() -> None:
    assert contains("There are seven inhabited islands.", ["7", "seven"]) == 1.0
    assert contains("It became independent in 1874.", ["7"]) == 0.0
    assert contains("The Grenmoor Sea, of course", ["Grenmoor Sea"]) == 1.0
    assert contains("Grenmoor", ["Grenmoor Sea"]) == 0.0
    assert contains("anything", ["the"]) == 0.0  # a reference that normalises to nothing never matches


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I don't know.", True),
        ("I don\u2019t know", True),
        ("The text does not mention it.", True),
        ("Unknown", True),
        ("I'm not sure, maybe 1874", True),
        ("Paris", False),
        ("Probably Paris", False),
        ("", False),
    ],
)
def test_refusal(text: str, refused: bool) -> None:
    assert is_refusal(text) is refused


def test_option_choice_acc_and_length_normalised() -> None:
    logprobs = [-5.0, -6.0, -4.5]
    lengths = [10, 20, 3]  # per unit: -0.5, -0.3, -1.5
    assert option_choice(logprobs) == 2
    assert option_choice(logprobs, lengths) == 1
    assert option_choice([-1.0, -1.0]) == 0  # ties go to the lowest index
    with pytest.raises(ValueError, match="lengths"):
        option_choice([-1.0], [1, 2])


def test_option_scores_use_byte_lengths() -> None:
    # "Grenmoor Sea" (12 bytes) at -6 => -0.5/byte; "Hessel" (6 bytes) at -4.2 => -0.7/byte.
    scores = option_scores([-4.2, -6.0], ["Hessel", "Grenmoor Sea"], answer_index=1)
    assert scores == {"option_acc": 0.0, "option_acc_norm": 1.0}


def _item(**kw: object) -> EvalItem:
    base: dict[str, object] = {"id": "q", "question": "Q?", "messages": None, "answers": ("Paris",)}
    base.update(kw)
    return EvalItem(**base)  # type: ignore[arg-type]


def test_knowledge_scores_answerable_and_unanswerable() -> None:
    record = AnswerRecord(
        "q", "base", text='{"answer": "Paris", "confidence": 0.9}', option_logprobs=(-1.0, -3.0)
    )
    item = _item(options=("Paris", "Lyon"), answer_index=0)
    assert knowledge_scores(item, record, JSON_SPEC) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "contains": 1.0,
        "refused": 0.0,
        "option_acc": 1.0,
        "option_acc_norm": 1.0,
    }
    unanswerable = _item(answers=(), answerable=False)
    refusal = AnswerRecord("q", "base", text='{"answer": "I don\'t know", "confidence": 0.1}')
    assert knowledge_scores(unanswerable, refusal, JSON_SPEC) == {"abstained": 1.0}


def test_a_failed_request_scores_as_wrong_without_option_metrics() -> None:
    item = _item(options=("Paris", "Lyon"), answer_index=0)
    record = AnswerRecord("q", "base", text="Paris", option_logprobs=(-1.0, -3.0), error="UNAVAILABLE")
    scores = knowledge_scores(item, record, None)
    assert scores["contains"] == 0.0 and scores["exact_match"] == 0.0
    assert "option_acc" not in scores

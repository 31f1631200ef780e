"""Dataset and style-spec loading, validation messages, and the committed demo test set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hybrid_assistant.eval.dataset import (
    DatasetError,
    EvalItem,
    item_to_dict,
    load_dataset,
    load_exemplars,
    load_style_spec,
    parse_item,
)
from hybrid_assistant.eval.demo_dataset import (
    DEMO_DIR,
    MEMORISED_COUNT,
    build_demo_dataset,
    write_demo_dataset,
)


def _write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_minimal_item_defaults() -> None:
    item, problems = parse_item({"id": "a", "question": "Q?", "answers": ["x"]})
    assert problems == [] and item is not None
    assert item.answerable and item.stratum == "all" and item.group == "a" and item.gold_doc_ids == ()
    assert item.chat_messages() == [{"role": "user", "content": "Q?"}]
    item, _ = parse_item({"id": "b", "question": "Q?", "answers": ["x"], "gold_doc_ids": ["d1", "d2"]})
    assert item is not None and item.group == "d1"


def test_answer_index_is_found_by_matching_the_answers() -> None:
    item, problems = parse_item(
        {"id": "a", "question": "Q?", "answers": ["The Copper Oar"], "options": ["Tin", "copper oar"]}
    )
    assert problems == [] and item is not None and item.answer_index == 1


def test_messages_item() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]
    item, problems = parse_item({"id": "m", "messages": msgs, "answers": [], "answerable": False})
    assert problems == [] and item is not None
    assert item.text == "Capital?" and item.chat_messages() == msgs and not item.answerable
    again, _ = parse_item(item_to_dict(item))
    assert again == item


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            {"id": "ok", "question": "Q?", "answers": ["x"]},
            "{not json",
            {"id": "ok", "question": "Q?", "answers": ["x"]},
            {
                "id": "two",
                "question": "Q?",
                "messages": [{"role": "user", "content": "Q?"}],
                "answers": ["x"],
            },
            {"id": "noanswer", "question": "Q?"},
            {"id": "opts", "question": "Q?", "answers": ["x"], "options": ["a", "b"]},
            {"id": "idx", "question": "Q?", "answers": ["x"], "options": ["a", "x"], "answer_index": 5},
            {"id": "unans", "question": "Q?", "answers": [], "answerable": True},
            {"id": "typo", "question": "Q?", "answers": ["x"], "gold_doc_id": ["d"]},
        ],
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    text = "\n".join(err.value.problems)
    for fragment in (
        "line 2: not valid JSON",
        "line 3: duplicate id 'ok' (first on line 1)",
        "line 4: exactly one of 'question' and 'messages'",
        "line 5: answers is required",
        "line 6: cannot tell the correct option",
        "line 7: answer_index 5 is outside the 2 options",
        "line 8: an answerable item needs at least one answer",
        "line 9: unknown key(s) ['gold_doc_id']",
    ):
        assert fragment in text, text


def test_eval_item_checks_its_invariants() -> None:
    with pytest.raises(DatasetError, match="exactly one"):
        EvalItem(id="x", question=None, messages=None, answers=("a",))


def test_demo_style_spec_and_exemplars() -> None:
    spec = load_style_spec(DEMO_DIR / "style_spec.json")
    assert spec.name == "json-answer" and spec.answer_field == "answer" and spec.max_chars == 200
    assert len(load_exemplars(DEMO_DIR / "style_exemplars.jsonl")) == 20


def test_committed_demo_test_set_is_what_the_builder_writes(tmp_path: Path) -> None:
    out = write_demo_dataset(out=tmp_path / "test.jsonl")
    assert out.read_text() == (DEMO_DIR / "test.jsonl").read_text(), (
        "run: python -m hybrid_assistant.eval.demo_dataset"
    )
    assert build_demo_dataset() == build_demo_dataset()


def test_demo_test_set_contents() -> None:
    items = load_dataset(DEMO_DIR / "test.jsonl")
    facts = [json.loads(line) for line in (DEMO_DIR / "facts.jsonl").read_text().splitlines()]
    counts = Counter(i.stratum for i in items)
    assert counts == {"kb": len(facts), "memorised": MEMORISED_COUNT, "unanswerable": 28, "control": 32}
    kb_docs = {p.stem for p in (DEMO_DIR / "kb").glob("*.md")}
    by_fact = {f["id"]: f for f in facts}
    for item in items:
        assert item.style == "json-answer"
        assert set(item.gold_doc_ids) <= kb_docs
        if item.stratum in ("kb", "memorised"):
            fact = by_fact[item.metadata["fact_id"]]
            assert item.options is not None and item.answer_index is not None
            assert item.options[item.answer_index] == fact["answers"][0]
            assert sorted(item.options) == sorted(fact["options"])
            assert item.group == fact["doc_id"]
            expected = fact["test_question"] if item.stratum == "kb" else fact["train_question"]
            assert item.question == expected
        if item.stratum == "unanswerable":
            assert not item.answerable and item.gold_doc_ids == () and item.group in kb_docs
    # The shuffle moved the right answer away from position 0 for most items.
    positions = Counter(i.answer_index for i in items if i.options)
    assert len(positions) == 4 and positions[0] < 0.4 * sum(positions.values())


def test_stratified_subset_keeps_shares_spread_and_order() -> None:
    from hybrid_assistant.eval.dataset import stratified_subset

    items = load_dataset(DEMO_DIR / "test.jsonl")
    subset = stratified_subset(items, 100)
    assert len(subset) == 100
    assert subset == stratified_subset(items, 100), "deterministic"
    position = {item.id: i for i, item in enumerate(items)}
    assert [position[i.id] for i in subset] == sorted(position[i.id] for i in subset), "file order"
    for stratum in {i.stratum for i in items}:
        share = sum(i.stratum == stratum for i in items) / len(items)
        assert abs(sum(i.stratum == stratum for i in subset) - 100 * share) <= 1
    kb_groups = {i.group for i in items if i.stratum == "kb"}
    assert len({i.group for i in subset if i.stratum == "kb"}) > len(kb_groups) / 2, "spread over documents"
    assert stratified_subset(items, 10_000) == items
    assert {i.stratum for i in stratified_subset(items, 1)} == {i.stratum for i in items}


def test_non_utf8_files_are_dataset_errors_with_their_line(tmp_path: Path) -> None:
    """A Latin-1 byte is a reported problem of that line (the other lines still load and are
    checked), never a UnicodeDecodeError traceback; the same for a style spec."""
    data = tmp_path / "latin1.jsonl"
    good = json.dumps({"id": "ok", "question": "Q?", "answers": ["x"]})
    data.write_bytes(good.encode() + b"\n" + '{"id": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        load_dataset(data)
    assert err.value.problems == ["line 2: not UTF-8 (invalid continuation byte at byte 11)"]
    spec = tmp_path / "spec.json"
    spec.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_style_spec(spec)

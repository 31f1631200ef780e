"""Training data: both line formats, every problem reported with file:line, deterministic splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.data import (
    DataValidationError,
    chat,
    examples_sha256,
    load_examples,
    split_examples,
    take_subset,
    write_examples,
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loads_chat_and_prompt_response_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "ok.jsonl",
        [
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
            ),
            "",  # blank lines are allowed
            json.dumps({"prompt": "2+2?", "response": "4", "system": "Be terse."}),
            json.dumps({"prompt": "Q", "response": "A", "id": 7}),  # extra keys are ignored
        ],
    )
    examples = load_examples(path)
    assert [e.as_dicts() for e in examples] == [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ]
    assert [e.source for e in examples] == ["ok.jsonl:1", "ok.jsonl:3", "ok.jsonl:4"]


def test_every_bad_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "Q", "response": "A"})
    lines = [
        good,  # 1
        '{"messages": [',  # 2 invalid JSON
        "[1, 2]",  # 3 not an object
        json.dumps(
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
        ),  # 4
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),  # 5 no assistant
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
        ),  # 6
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "q2"},
                ]
            }
        ),  # 7 last turn not assistant
        json.dumps(
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}
        ),  # 8
        json.dumps({"prompt": "Q"}),  # 9 missing response
        json.dumps({"text": "hello"}),  # 10 neither format
        json.dumps({"messages": "hi"}),  # 11 messages not a list
        json.dumps({"prompt": "Q", "response": "A", "messages": []}),  # 12 both formats
        json.dumps(
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}
        ),  # 13 starts with the assistant
        good,  # 14
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataValidationError) as info:
        load_examples(path)
    problems = info.value.problems
    assert [p.split(":")[1] for p in problems] == [str(n) for n in range(2, 14)]
    text = "\n".join(problems)
    assert "bad.jsonl:2: invalid JSON" in text
    assert "bad.jsonl:3: expected a JSON object, got list [1, 2]" in text
    assert "bad.jsonl:4: messages[0] has unknown role 'robot'" in text
    assert "bad.jsonl:5: no assistant turn" in text
    assert "bad.jsonl:6: messages[1] (assistant) content is empty" in text
    assert "bad.jsonl:7: the last turn must be the assistant's" in text
    assert "bad.jsonl:8: messages[0] (user) content must be a string, got int 5" in text
    assert "bad.jsonl:9: 'response' must be a string, got NoneType None" in text
    assert "bad.jsonl:10: expected 'messages' or 'prompt' + 'response', got keys ['text']" in text
    assert "bad.jsonl:11: 'messages' must be a list, got str 'hi'" in text
    assert "bad.jsonl:12: has both" in text
    assert "bad.jsonl:13: turns must alternate" in text
    assert str(info.value).startswith(f"{path} has 12 problems: bad.jsonl:2:")


def test_long_problem_lists_are_capped_in_the_message(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "many.jsonl", ["nope"] * 30)
    with pytest.raises(DataValidationError) as info:
        load_examples(path)
    assert len(info.value.problems) == 30
    assert str(info.value).endswith("; ... and 10 more")
    assert "many.jsonl:20:" in str(info.value) and "many.jsonl:21:" not in str(info.value)


def test_empty_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataValidationError, match="no examples"):
        load_examples(tmp_path / "empty.jsonl")
    with pytest.raises(DataValidationError, match="cannot read"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n')
    with pytest.raises(DataValidationError, match=r"latin.jsonl:1: not UTF-8"):
        load_examples(tmp_path / "latin.jsonl")


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    examples = [chat(("system", "S"), ("user", "Ünïcode?"), ("assistant", "✓"))]
    loaded = load_examples(write_examples(examples, tmp_path / "out.jsonl"))
    assert [e.messages for e in loaded] == [e.messages for e in examples]
    assert examples_sha256(loaded) == examples_sha256(examples)


def test_split_is_deterministic_disjoint_and_keeps_one_of_each() -> None:
    examples = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(50)]
    train, val = split_examples(examples, 0.1, seed=3)
    assert len(val) == 5 and len(train) == 45
    assert {e.messages for e in train}.isdisjoint({e.messages for e in val})
    assert split_examples(examples, 0.1, seed=3) == (train, val)
    assert split_examples(examples, 0.1, seed=4)[1] != val
    assert len(split_examples(examples[:3], 0.1, seed=0)[1]) == 1  # rounds to 0, but one is kept
    assert split_examples(examples[:1], 0.1, seed=0) == (examples[:1], [])
    assert split_examples(examples, 0.0, seed=0) == (examples, [])
    with pytest.raises(ValueError, match=r"got 1\.5"):
        split_examples(examples, 1.5, seed=0)


def test_subsets_nest_for_one_seed() -> None:
    examples = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(100)]
    small, big = take_subset(examples, 10, seed=1), take_subset(examples, 50, seed=1)
    assert big[:10] == small
    assert take_subset(examples, 10, seed=2) != small
    with pytest.raises(ValueError, match="between 1 and 100, got 0"):
        take_subset(examples, 0, seed=1)

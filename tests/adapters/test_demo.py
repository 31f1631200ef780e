"""Demo data sets (deterministic, no test questions) and train-demo caching on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.data import file_sha256, load_examples
from hybrid_assistant.adapters.demo import (
    DEMO_DATA_DIR,
    build_demo_data,
    knowledge_examples,
    read_facts,
    train_demo,
)
from hybrid_assistant.adapters.peft_format import METADATA_FILE
from hybrid_assistant.adapters.train_config import BaseModel
from hybrid_assistant.testing.models import build_adapter

QUICK = {"epochs": 1, "batch_size": 4, "max_length": 256, "rank": 4}


def test_knowledge_set_uses_training_wordings_and_short_answers() -> None:
    facts = read_facts(DEMO_DATA_DIR)
    examples = knowledge_examples()
    assert len(examples) == len(facts) == 211
    questions = [e.messages[0].content for e in examples]
    assert questions == [f["train_question"] for f in facts]
    assert [e.messages[1].content for e in examples] == [f["answers"][0] for f in facts]
    test_questions = {f["test_question"] for f in facts}
    assert not test_questions & set(questions)
    with_docs = knowledge_examples(include_documents=True)
    assert len(with_docs) == 211 + 47
    assert with_docs[-1].messages[0].content.startswith("Tell me about ")
    assert not any(m.content in test_questions for e in with_docs for m in e.messages)


def test_demo_data_is_deterministic(tmp_path: Path) -> None:
    first = build_demo_data(tmp_path / "a")
    second = build_demo_data(tmp_path / "b")
    assert {k: v.sha256() for k, v in first.items()} == {k: v.sha256() for k, v in second.items()}
    assert file_sha256(first["style"].train) == file_sha256(DEMO_DATA_DIR / "style_train.jsonl")
    assert first["knowledge"].validation is not None
    validation = load_examples(first["knowledge"].validation)
    assert len(validation) == 8
    assert all(e.messages[0].content.startswith("Tell me about ") for e in validation)


def test_train_demo_reuses_cached_adapters(tiny_base: BaseModel, tmp_path: Path) -> None:
    root, work = tmp_path / "adapters", tmp_path / "work"
    names = ["style", "knowledge"]
    first = train_demo(tiny_base, root, work, names=names, limit=6, config_overrides=QUICK, progress=False)
    assert [(o.name, o.reused) for o in first] == [("style", False), ("knowledge", False)]
    knowledge = first[1].result
    assert knowledge is not None and knowledge.val_examples == 1 and knowledge.train_examples == 6
    assert first[0].metadata["recipe"] == "train-demo" and len(first[0].metadata["cache_key"]) == 64

    again = train_demo(tiny_base, root, work, names=names, limit=6, config_overrides=QUICK, progress=False)
    assert [(o.name, o.reused) for o in again] == [("style", True), ("knowledge", True)]
    assert again[0].metadata["cache_key"] == first[0].metadata["cache_key"]

    changed = train_demo(
        tiny_base, root, work, names=["style"], limit=6, config_overrides={**QUICK, "seed": 1}, progress=False
    )
    assert [(o.name, o.reused) for o in changed] == [("style", False)]
    assert json.loads((root / "style" / METADATA_FILE).read_text())["seed"] == 1
    assert sorted(p.name for p in root.iterdir()) == ["knowledge", "style"]


def test_the_context_demo_adapters_data_and_recipe(tiny_base: BaseModel, tmp_path: Path) -> None:
    # The tiny model's 400-token vocabulary makes a 3-passage prompt ~1500 tokens, past its 1024
    # positions: its examples with passages are skipped here (SmolLM2 fits them in ~600), the
    # recipe's metadata and data are what this checks; tests/adapters/test_context_data.py
    # trains both recipes end to end on short documents.
    quick = {**QUICK, "max_length": 1024}
    [outcome] = train_demo(
        tiny_base, tmp_path / "adapters", tmp_path / "work", names=["style-context"], limit=6,
        config_overrides=quick, progress=False,
    )  # fmt: skip
    assert outcome.metadata["context_recipe"] == "context" and outcome.metadata["context_share"] == "0.5"
    for name, with_system in (("raft", 6), ("style-context", 3)):
        lines = [json.loads(line) for line in (tmp_path / "work" / f"{name}.jsonl").read_text().splitlines()]
        assert len(lines) == 6
        assert sum(line["messages"][0]["role"] == "system" for line in lines) == with_system


def test_train_demo_never_overwrites_a_users_adapter(
    tiny_base: BaseModel, tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "adapters"
    build_adapter(tiny_model_dir, root / "style", rank=4)
    with pytest.raises(FileExistsError, match="not made by train-demo"):
        train_demo(
            tiny_base,
            root,
            tmp_path / "work",
            names=["style"],
            limit=4,
            config_overrides=QUICK,
            progress=False,
        )
    with pytest.raises(ValueError, match=r"unknown demo adapters \['nope'\]"):
        train_demo(tiny_base, root, tmp_path / "work", names=["nope"])

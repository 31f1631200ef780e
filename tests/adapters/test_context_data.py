"""The context and RAFT recipes: how their examples are built, and a tiny adapter trained with each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_assistant.adapters.context_data import (
    ContextDataError,
    ContextRecipe,
    RaftItem,
    answer_strings,
    context_augmented,
    load_passages,
    load_raft_items,
    mentions,
    raft_examples,
    recipe_examples,
)
from hybrid_assistant.adapters.data import chat, load_examples
from hybrid_assistant.adapters.demo import DEMO_DATA_DIR, raft_items
from hybrid_assistant.adapters.train_config import CONTEXT_MAX_LENGTH, context_max_length
from hybrid_assistant.retrieval.prompt_context import RAG_INSTRUCTION, ContextPassage, with_context
from hybrid_assistant.server.cli import app

runner = CliRunner()

DOCS = {
    "harbour": "The harbour of Kessmouth has 12 berths. Ferries leave at dawn.",
    "mill": "The Brackwater mill grinds oats. It was built in 1874 by Ada Lorn.",
    "peak": "Mount Tarrow is 912 metres high. Its summit holds a beacon.",
    "river": "The Sile River is 64 kilometres long. Salmon run in autumn.",
    "market": "The Kessmouth market opens on Saturdays. Herring is sold there.",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / f"{name}.md").write_text(text)
    return folder


def style_examples(count: int = 10) -> list:
    return [
        chat(
            ("user", f"Question {i}?"),
            ("assistant", json.dumps({"answer": f"Answer {i}", "confidence": 0.9})),
        )
        for i in range(count)
    ]


def test_passages_are_the_documents_chunks_named_by_file_stem(docs: Path) -> None:
    passages = load_passages(docs)
    assert [p.document_id for p in passages] == sorted(DOCS)
    assert all(p.text.strip() == DOCS[p.document_id] for p in passages)
    with pytest.raises(ContextDataError, match="not a folder"):
        load_passages(docs / "missing")


def test_mentions_matches_whole_words_only() -> None:
    assert mentions("It was built in 1874.", "1874")
    assert not mentions("It was built in 1874.", "7")
    assert mentions("the  Sile\nRiver flows", "sile river")
    assert not mentions("anything", "  ")


def test_answer_strings_cover_json_fields_and_labelled_lines() -> None:
    as_json = chat(("user", "q"), ("assistant", '{"answer": "Canberra", "confidence": 0.9}'))
    assert "Canberra" in answer_strings(as_json)
    labelled = chat(("user", "q"), ("assistant", "Answer: Canberra\nConfidence: high"))
    assert {"Canberra", "high"} <= set(answer_strings(labelled))


def test_context_examples_use_the_servers_layout_deterministically(docs: Path) -> None:
    passages = load_passages(docs)
    examples = style_examples(10)
    recipe = ContextRecipe("context", share=0.5, passages=2, seed=3)
    first = context_augmented(examples, passages, recipe)
    assert first == context_augmented(examples, passages, recipe)  # same seed, same data
    assert first != context_augmented(examples, passages, ContextRecipe("context", 0.5, 2, seed=4))
    augmented = [e for e in first if e.messages[0].role == "system"]
    assert len(augmented) == 5 and len(first) == 10
    for original, built in zip(examples, first, strict=True):
        assert built.messages[-2:] == original.messages  # the conversation itself is untouched
    system = augmented[0].messages[0].content
    assert (
        system.startswith(RAG_INSTRUCTION) and "[1] " in system and "[2] " in system and "[3] " not in system
    )
    # Exactly what the server's prompt builder puts in the system message.
    texts = [line.split("] ", 1)[1] for line in system.splitlines() if line.startswith("[")]
    numbered = [ContextPassage("d", "c", 0.0, t, index=i) for i, t in enumerate(texts, start=1)]
    assert with_context(augmented[0].as_dicts()[1:], numbered)[0]["content"] == system


def test_share_zero_and_one(docs: Path) -> None:
    passages = load_passages(docs)
    examples = style_examples(4)
    assert context_augmented(examples, passages, ContextRecipe("context", share=0.0)) == examples
    every = context_augmented(examples, passages, ContextRecipe("context", share=1.0, passages=1))
    assert all(e.messages[0].role == "system" for e in every)


def test_style_passages_never_hold_the_examples_answer(docs: Path) -> None:
    passages = load_passages(docs)
    # Each answer is stated by one document: it must never be among that example's passages.
    examples = [
        chat(("user", f"q{i}"), ("assistant", json.dumps({"answer": answer, "confidence": 0.5})))
        for i, answer in enumerate(["Ada Lorn", "912 metres", "Herring", "12 berths"] * 5)
    ]
    built = context_augmented(examples, passages, ContextRecipe("context", share=1.0, passages=4, seed=1))
    for example, original in zip(built, examples, strict=True):
        answer = json.loads(original.messages[-1].content)["answer"]
        assert not mentions(example.messages[0].content, answer)


def test_too_few_clean_passages_is_an_error(docs: Path) -> None:
    passages = load_passages(docs)
    with pytest.raises(ContextDataError, match="only 4 passages do not contain its answer; 5 needed"):
        context_augmented(
            [chat(("user", "q"), ("assistant", "Answer: Ada Lorn"))],
            passages,
            ContextRecipe("context", share=1.0, passages=5),
        )


def items() -> list[RaftItem]:
    return [
        RaftItem("Who built the mill?", "Ada Lorn", "mill", "qa:1"),
        RaftItem("How high is the mountain?", "912 metres", "peak", "qa:2"),
        RaftItem("How long is the river?", "64 kilometres", "river", "qa:3"),
        RaftItem("When does the market open?", "Saturdays", "market", "qa:4"),
        RaftItem("How many berths?", "12 berths", "harbour", "qa:5"),
    ]


def test_raft_gold_chunk_present_when_asked_among_distractors(docs: Path) -> None:
    passages = load_passages(docs)
    recipe = ContextRecipe("raft", share=0.6, passages=3, seed=2)
    built = raft_examples(items(), passages, recipe)
    assert built == raft_examples(items(), passages, recipe)
    with_gold = [e for e in built if e.source.endswith("+raft")]
    without = [e for e in built if e.source.endswith("+raft-distractors")]
    assert len(with_gold) == 3 and len(without) == 2
    for example, item in zip(built, items(), strict=True):
        system = example.messages[0].content
        passage_lines = [line for line in system.splitlines() if line.startswith("[")]
        assert len(passage_lines) == 3
        holding = [line for line in passage_lines if mentions(line, item.answer)]
        if example in with_gold:
            assert len(holding) == 1 and DOCS[item.doc_id] in holding[0]  # the gold chunk, once
        else:
            assert holding == []  # distractors only: none mentions the answer
        assert example.messages[-1].content == item.answer  # the loss target is the answer
        assert example.messages[-2].content == item.question


def test_raft_quote_cites_the_gold_sentence_by_its_number(docs: Path) -> None:
    built = raft_examples(items()[:1], load_passages(docs), ContextRecipe("raft", 1.0, 3, seed=0, quote=True))
    [example] = built
    answer, source = example.messages[-1].content.split("\n")
    assert answer == "Ada Lorn" and source.endswith('"It was built in 1874 by Ada Lorn."')
    number = source.split("[")[1].split("]")[0]
    assert f"[{number}] The Brackwater mill" in example.messages[0].content


def test_raft_refuses_unknown_documents_and_unstated_answers(docs: Path) -> None:
    passages = load_passages(docs)
    recipe = ContextRecipe("raft", 1.0, 2)
    with pytest.raises(ContextDataError, match="document 'nowhere' is not in the folder"):
        raft_examples([RaftItem("q", "a", "nowhere", "qa:9")], passages, recipe)
    with pytest.raises(ContextDataError, match="no chunk of 'mill' states the answer 'Bob'"):
        raft_examples([RaftItem("q", "Bob", "mill", "qa:9")], passages, recipe)


def test_recipe_settings_are_checked() -> None:
    with pytest.raises(ContextDataError, match="share must be in"):
        ContextRecipe("context", share=1.5)
    with pytest.raises(ContextDataError, match="recipe must be"):
        ContextRecipe("plain")
    with pytest.raises(ContextDataError, match="raft needs at least 2 passages"):
        ContextRecipe("raft", share=0.8, passages=1)


def test_raft_items_file_reports_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer": "a", "doc_id": "mill"}\n{oops\n{"question": "q"}\n')
    with pytest.raises(ContextDataError) as caught:
        load_raft_items(path)
    assert "qa.jsonl:2: invalid JSON" in str(caught.value) and "qa.jsonl:3: needs non-empty" in str(
        caught.value
    )


def test_every_demo_fact_has_a_gold_chunk_and_no_style_passage_holds_an_answer() -> None:
    passages = load_passages(DEMO_DATA_DIR / "kb")
    built = raft_examples(raft_items(), passages, ContextRecipe("raft", 0.8, 3))
    assert len(built) == 211
    style = load_examples(DEMO_DATA_DIR / "style_train.jsonl")
    for example in context_augmented(style, passages, ContextRecipe("context", 1.0, 3)):
        for answer in answer_strings(example):
            assert not mentions(example.messages[0].content, answer)


TINY = ["--rank", "4", "--epochs", "1", "--batch-size", "4", "--no-progress"]


def test_train_with_the_context_recipe_end_to_end(paths: list[str], docs: Path, tmp_path: Path) -> None:
    data = tmp_path / "style.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in style_examples(8)))
    args = ["adapters", "train", "--data", str(data), "--name", "ctx", "--recipe", "context",
            "--context-docs", str(docs), "--context-share", "0.5", "--context-passages", "2",
            *TINY, *paths]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "adapters" / "ctx" / "adapter_metadata.json").read_text())
    assert meta["context_recipe"] == "context" and meta["context_share"] == "0.5"
    assert meta["context_passages"] == "2" and meta["context_source"].endswith("docs")


def test_train_with_the_raft_recipe_end_to_end(paths: list[str], docs: Path, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(vars(i)) + "\n" for i in items()))
    args = ["adapters", "train", "--data", str(data), "--name", "raft", "--recipe", "raft",
            "--context-docs", str(docs), "--quote", *TINY, *paths]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "adapters" / "raft" / "adapter_metadata.json").read_text())
    assert (
        meta["context_recipe"] == "raft"
        and meta["context_share"] == "0.8"
        and meta["context_quote"] == "true"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "context"], "--recipe context needs --context-docs"),
        (["--context-share", "0.5"], "need --recipe context or raft"),
        (["--recipe", "nope"], "--recipe must be one of"),
        (["--recipe", "context", "--context-docs", "DOCS", "--quote"], "--quote needs --recipe raft"),
        (
            ["--recipe", "context", "--context-docs", "DOCS", "--context-share", "2"],
            "share must be in [0, 1]",
        ),
        (["--recipe", "raft", "--context-docs", "DOCS"], "needs non-empty strings"),
    ],
)
def test_recipe_flags_fail_clearly_before_training(
    paths: list[str], docs: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    data = tmp_path / "style.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in style_examples(4)))
    extra = [str(docs) if x == "DOCS" else x for x in extra]
    result = runner.invoke(
        app, ["adapters", "train", "--data", str(data), "--name", "x", *extra, *TINY, *paths]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "adapters").exists()


def test_subset_is_taken_before_the_recipe_so_the_recorded_share_holds(docs: Path, tmp_path: Path) -> None:
    data = tmp_path / "style.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in style_examples(10)))
    built = recipe_examples(data, ContextRecipe("context", 0.5, 2, seed=3), docs, subset=4)
    assert len(built) == 4
    assert sum(e.messages[0].role == "system" for e in built) == 2  # 0.5 of the 4 trained


def test_passages_are_cut_at_the_given_chunk_size(docs: Path, tmp_path: Path) -> None:
    data = tmp_path / "style.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in style_examples(4)))
    recipe = ContextRecipe("context", 1.0, 2)
    whole = recipe_examples(data, recipe, docs)
    small = recipe_examples(data, recipe, docs, chunk_size=40, chunk_overlap=0)
    assert max(len(e.messages[0].content) for e in small) < max(len(e.messages[0].content) for e in whole)


def test_the_default_length_grows_with_the_passages() -> None:
    assert context_max_length(1) == context_max_length(3) == CONTEXT_MAX_LENGTH
    assert context_max_length(8) == CONTEXT_MAX_LENGTH + 5 * 256


def test_a_missing_or_unreadable_data_file_exits_2(paths: list[str], docs: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
    for data, recipe in ((tmp_path / "missing.jsonl", []), (tmp_path, []),
                         (tmp_path / "missing.jsonl", ["--recipe", "context", "--context-docs", str(docs)]),
                         (latin1, ["--recipe", "context", "--context-docs", str(docs)])):  # fmt: skip
        args = ["adapters", "train", "--data", str(data), "--name", "x", *recipe, *TINY, *paths]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "adapters").exists()

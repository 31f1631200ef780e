"""The shared prompt builder: passages numbered, trimmed to fit, the question never cut."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from server.errors import InvalidArgument
from server.prompt import RAG_INSTRUCTION, ContextPassage, build_prompt, render_chat


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def passages(n: int, words: int) -> list[ContextPassage]:
    return [
        ContextPassage(f"doc{i}", f"doc{i}#0", 1.0 - i / 10, f"passage {i} " + "fox " * words)
        for i in range(n)
    ]


def test_passages_are_numbered_in_the_system_message(tokenizer) -> None:
    messages = [{"role": "user", "content": "Where is Paris?"}]
    built = build_prompt(tokenizer, messages, passages(2, 3), 384)
    text = tokenizer.decode(built.ids)
    assert RAG_INSTRUCTION in text and "[1] passage 0" in text and "[2] passage 1" in text
    assert text.rstrip().endswith("<|im_start|>assistant")
    assert [p.index for p in built.passages] == [1, 2]
    assert built.context_tokens == len(built.ids) - len(render_chat(tokenizer, messages))


def test_user_system_message_is_kept(tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    text = tokenizer.decode(build_prompt(tokenizer, messages, passages(1, 2), 384).ids)
    assert text.index("Be brief.") < text.index(RAG_INSTRUCTION)


def test_trims_lowest_ranked_passages_never_the_question(tokenizer) -> None:
    question = "What colour is the fox? " * 3
    messages = [{"role": "user", "content": question}]
    built = build_prompt(tokenizer, messages, passages(6, 40), 300)
    assert len(built.ids) <= 300
    assert 0 < len(built.passages) < 6
    assert [p.document_id for p in built.passages] == [f"doc{i}" for i in range(len(built.passages))]
    assert question.strip() in tokenizer.decode(built.ids)


def test_question_too_long_is_invalid(tokenizer) -> None:
    with pytest.raises(InvalidArgument, match="max_prompt_tokens=50"):
        build_prompt(tokenizer, [{"role": "user", "content": "fox " * 100}], [], 50)

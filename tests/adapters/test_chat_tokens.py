"""Loss masking: exactly the assistant tokens (and their end-of-turn token) carry labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from hybrid_assistant.adapters.chat_tokens import (
    IGNORE,
    TemplateError,
    batch_order,
    collate,
    encode_all,
    encode_example,
)
from hybrid_assistant.adapters.data import chat

# SmolLM2's template: it adds a default system prompt when the conversation has none.
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_labels_cover_exactly_the_assistant_turns(tokenizer: Any) -> None:
    example = chat(
        ("system", "Be brief."),
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "And the dog?"),
        ("assistant", "The lazy dog."),
    )
    end = {tokenizer.eos_token_id}
    encoded = encode_example(tokenizer, example, max_length=512, end_ids=end)
    # The template's text, written out by hand, cut where the labels must start and stop.
    pieces = [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
            "<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        ("Paris.<|im_end|>", True),
        ("\n<|im_start|>user\nAnd the dog?<|im_end|>\n<|im_start|>assistant\n", False),
        ("The lazy dog.<|im_end|>", True),
    ]
    expected_ids: list[int] = []
    expected_labels: list[int] = []
    for text, learn in pieces:
        piece = ids(tokenizer, text)
        expected_ids += piece
        expected_labels += piece if learn else [IGNORE] * len(piece)
    assert encoded.input_ids == expected_ids
    assert encoded.labels == expected_labels
    labelled = [i for i, label in enumerate(encoded.labels) if label != IGNORE]
    first = len(ids(tokenizer, pieces[0][0]))
    assert labelled[: len(ids(tokenizer, "Paris.<|im_end|>"))] == list(range(first, first + 4))
    assert (
        tokenizer.decode([encoded.input_ids[i] for i in labelled])
        == "Paris.<|im_end|>The lazy dog.<|im_end|>"
    )
    # The trailing newline after the last end-of-turn predicts nothing and is not computed.
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    assert encoded.target_tokens == len(labelled)


def test_a_default_system_prompt_from_the_template_is_masked(tokenizer: Any) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = SMOL_TEMPLATE
    encoded = encode_example(
        tokenizer, chat(("user", "Hi"), ("assistant", "Hello")), 512, {tokenizer.eos_token_id}
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert "SmolLM" in prompt
    assert encoded.input_ids[: len(ids(tokenizer, prompt))] == ids(
        tokenizer, prompt
    )  # as the server tokenises
    learned = [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "Hello<|im_end|>"


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer: Any) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    # Renders the number of messages first: every turn changes the prefix.
    tokenizer.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    example = chat(("user", "a"), ("assistant", "b"), source="x.jsonl:3")
    with pytest.raises(TemplateError, match=r"x\.jsonl:3"):
        encode_example(tokenizer, example, 512, {tokenizer.eos_token_id})


def test_truncation_keeps_examples_with_targets_and_drops_the_rest(tokenizer: Any) -> None:
    long_prompt = chat(("user", "word " * 200), ("assistant", "ok"), source="f:1")
    short = chat(
        ("user", "hi"), ("assistant", "The quick brown fox jumps over the lazy dog. " * 3), source="f:2"
    )
    kept, dropped = encode_all(tokenizer, [long_prompt, short], max_length=32)
    assert dropped == 1 and len(kept) == 1
    assert len(kept[0].input_ids) == 32 and kept[0].truncated
    assert kept[0].target_tokens > 0


def test_collate_pads_on_the_right_and_ignores_padding(tokenizer: Any) -> None:
    examples, _ = encode_all(
        tokenizer,
        [
            chat(("user", "hi"), ("assistant", "yes")),
            chat(("user", "a longer question"), ("assistant", "no")),
        ],
        64,
    )
    batch = collate(examples, pad_id=0)
    short, long = sorted(range(2), key=lambda r: len(examples[r].input_ids))
    n = len(examples[short].input_ids)
    assert batch.input_ids.shape[1] == len(examples[long].input_ids)
    assert batch.attention_mask[short, :n].all() and not batch.attention_mask[short, n:].any()
    assert (batch.labels[short, n:] == IGNORE).all()
    assert batch.tokens == sum(len(e.input_ids) for e in examples)
    assert batch.target_tokens == sum(e.target_tokens for e in examples)


def test_batch_order_is_a_seeded_permutation_grouped_by_length() -> None:
    lengths = [5, 50, 6, 48, 7, 49, 8, 47] * 4
    batches = batch_order(lengths, 4, seed=1, group_by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == batch_order(lengths, 4, seed=1, group_by_length=True)
    assert batches != batch_order(lengths, 4, seed=2, group_by_length=True)
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3 for b in batches)
    plain = batch_order(lengths, 4, seed=1, group_by_length=False)
    assert sorted(i for b in plain for i in b) == list(range(len(lengths)))

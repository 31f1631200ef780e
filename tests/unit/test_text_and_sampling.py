"""Incremental detokenisation, stop strings, and sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from hybrid_assistant.server.engines.sampling import make_generator, sample
from hybrid_assistant.server.engines.text import IncrementalDetokenizer
from hybrid_assistant.server.engines.types import SamplingParams


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def stream(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        detok.push(token)
        pieces.append(detok.take(final=False))
        if detok.stopped:
            break
    detok.flush()
    pieces.append(detok.take(final=True))
    return pieces, detok


def test_pieces_reassemble_unicode_exactly(tokenizer) -> None:
    text = "Héllo wörld — ✓ 日本語 and 42 numbers."
    pieces, detok = stream(tokenizer, text)
    assert "".join(pieces) == text == detok.text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_cuts_and_is_never_streamed(tokenizer) -> None:
    pieces, detok = stream(tokenizer, "The capital of France is Paris. The end.", stop=("Paris",))
    assert detok.stopped
    assert "".join(pieces) == "The capital of France is "
    assert not any("Par" in p for p in pieces)


def test_earliest_of_several_stop_strings_wins(tokenizer) -> None:
    _, detok = stream(tokenizer, "one two three four", stop=("four", "two"))
    assert detok.text == "one "


def test_stop_strings_before_check_stop_are_not_matched_later(tokenizer) -> None:
    """min_tokens: the scheduler pushes its first tokens with check_stop=False; a stop string that
    came then does not end the text when checks resume, a later one does (vLLM's rule)."""
    ids = tokenizer("two one two three two four", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, ("two",))
    for i, token in enumerate(ids):
        past = len(tokenizer.decode(ids[: i + 1])) > len("two one two ")
        detok.push(token, check_stop=past)
        if detok.stopped:
            break
    assert detok.stopped
    assert detok.text == "two one two three "


def test_greedy_and_seeded_sampling() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    assert sample(logits, [greedy, greedy], [make_generator(1), make_generator(1)]) == [1, 0]
    hot = SamplingParams(max_tokens=1, temperature=2.0)
    wide = torch.zeros(1, 50)
    a = [sample(wide, [hot], [g])[0] for g in [make_generator(3)] for _ in range(20)]
    gen = make_generator(3)
    b = [sample(wide, [hot], [gen])[0] for _ in range(20)]
    assert a == b
    assert len(set(a)) > 5


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.7)
    gen = make_generator(0)
    seen = {sample(logits, [params], [gen])[0] for _ in range(300)}
    assert seen == {0, 1}

"""Chat examples to token ids and labels, and labels to padded batches.

The loss is taken on assistant tokens only: each assistant turn's content and its end-of-turn
token (so the adapter learns to stop), never the system/user turns or the template's role
headers. Each segment is tokenised on its own, the way the server tokenises a prompt
(template text, then ``add_special_tokens=False``), so the prompt tokens seen in training are
exactly the ones seen at inference.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hybrid_assistant.adapters.data import ChatExample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE = -100  # label value the loss skips (the PyTorch / Hugging Face convention)


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken; otherwise equal to input_ids
    truncated: bool = False

    @property
    def target_tokens(self) -> int:
        # Position 0 is never predicted (nothing comes before it).
        return sum(1 for label in self.labels[1:] if label != IGNORE)


class TemplateError(ValueError):
    """The chat template renders a conversation in a way the masking cannot follow."""


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], open_turn: bool) -> str:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=open_turn, tokenize=False)
    return str(text)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that close an assistant turn (the tokenizer's EOS; what generation stops on).

    Templates whose turns end with another token (Llama 3's ``<|eot_id|>``) find no EOS in the
    assistant piece, and then the whole piece is learned, that token included.
    """
    return set() if tokenizer.eos_token_id is None else {int(tokenizer.eos_token_id)}


def segments(tokenizer: PreTrainedTokenizerBase, example: ChatExample) -> list[tuple[str, bool]]:
    """The rendered conversation cut into ``(text, is_assistant)`` pieces, in order.

    An assistant piece is what the template adds for that turn after the generation prompt:
    its content, end-of-turn token and any trailing separator.
    """
    messages = example.as_dicts()
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], open_turn=True)
        through = _render(tokenizer, messages[: i + 1], open_turn=False)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise TemplateError(
                f"{example.source or 'example'}: the chat template does not render turn {i} as a "
                "continuation of the earlier turns; loss masking needs a prefix-stable template"
            )
        if len(prompt) > len(done):
            pieces.append((prompt[len(done) :], False))
        pieces.append((through[len(prompt) :], True))
        done = through
    return pieces


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: ChatExample, max_length: int, end_ids: set[int]
) -> EncodedExample:
    """Token ids and labels for one conversation, cut to ``max_length`` tokens."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_assistant in segments(tokenizer, example):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        input_ids += ids
        if not is_assistant:
            labels += [IGNORE] * len(ids)
            continue
        # Learn through the end-of-turn token; what the template puts after it (a newline) is
        # the template's, and generation has stopped before it.
        ends = [k for k, tok in enumerate(ids) if tok in end_ids]
        keep = ends[-1] + 1 if ends else len(ids)
        labels += ids[:keep] + [IGNORE] * (len(ids) - keep)
    # Trailing unlabelled tokens predict nothing that is trained: drop them to save compute.
    while labels and labels[-1] == IGNORE:
        labels.pop()
        input_ids.pop()
    truncated = len(input_ids) > max_length
    return EncodedExample(input_ids[:max_length], labels[:max_length], truncated)


def encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample], max_length: int
) -> tuple[list[EncodedExample], int]:
    """Encoded examples that keep at least one target token after truncation; and how many were cut."""
    end_ids = end_of_turn_ids(tokenizer)
    kept: list[EncodedExample] = []
    dropped = 0
    for example in examples:
        encoded = encode_example(tokenizer, example, max_length, end_ids)
        if encoded.target_tokens:
            kept.append(encoded)
        else:
            dropped += 1
            log.warning(
                "%s: no assistant token left within max_length=%d; skipped", example.source, max_length
            )
    return kept, dropped


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE on padding
    tokens: int  # real (non-pad) tokens
    target_tokens: int


def collate(examples: Sequence[EncodedExample], pad_id: int) -> Batch:
    """Pad to the longest example in the batch (dynamic padding), on the right."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    tokens = int(mask.sum())
    targets = int((labels[:, 1:] != IGNORE).sum())
    return Batch(ids, mask, labels, tokens, targets)


def batch_order(lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Shuffled batches of indices for one epoch.

    With ``group_by_length``, examples are sorted by length inside windows of 16 batches before
    cutting batches (then the batches are shuffled), so a batch holds similar lengths and pads
    little; the window keeps the order random at the scale of the epoch.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * 16
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda k: -lengths[k])
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches

"""The one prompt builder every arm uses: conversation (+ numbered context passages) -> token ids.

Retrieved passages go into the system message, numbered so answers can cite them. When the
prompt would be too long, passages are dropped from the lowest-ranked up, then the last one
kept is shortened; the conversation itself is never cut (a conversation too long on its
own is an INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from server.errors import InvalidArgument

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Written once, before any evaluation was run; not tuned on the demo data (see README).
RAG_INSTRUCTION = (
    "Answer the user's question using the context passages below. "
    "If the passages do not contain the answer, say that you do not know."
)


@dataclass(frozen=True)
class ContextPassage:
    document_id: str
    chunk_id: str
    score: float
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    index: int = 0  # its [n] in the prompt


@dataclass(frozen=True)
class BuiltPrompt:
    ids: list[int]
    passages: list[ContextPassage]  # those actually in the prompt, numbered
    context_tokens: int


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Apply the model's chat template and tokenise (no extra special tokens)."""
    conversation = [dict(m) for m in messages]
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])


def _context_block(passages: Sequence[ContextPassage]) -> str:
    lines = [RAG_INSTRUCTION, "", "Context:"]
    lines += [f"[{p.index}] {p.text.strip()}" for p in passages]
    return "\n".join(lines)


def _with_context(
    messages: Sequence[Mapping[str, str]], passages: Sequence[ContextPassage]
) -> list[dict[str, str]]:
    rest = [dict(m) for m in messages]
    if not passages:
        return rest
    block = _context_block(passages)
    if rest and rest[0]["role"] == "system":
        return [{"role": "system", "content": f"{rest[0]['content']}\n\n{block}"}, *rest[1:]]
    return [{"role": "system", "content": block}, *rest]


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    passages: Sequence[ContextPassage],
    max_prompt_tokens: int,
) -> BuiltPrompt:
    bare = render_chat(tokenizer, messages)
    if len(bare) > max_prompt_tokens:
        raise InvalidArgument(
            f"prompt is {len(bare)} tokens, more than max_prompt_tokens={max_prompt_tokens}"
        )
    numbered = [replace(p, index=i) for i, p in enumerate(passages, start=1)]
    while numbered:
        ids = render_chat(tokenizer, _with_context(messages, numbered))
        if len(ids) <= max_prompt_tokens:
            return BuiltPrompt(ids, numbered, len(ids) - len(bare))
        overflow = len(ids) - max_prompt_tokens
        last = numbered[-1]
        last_ids = tokenizer(last.text, add_special_tokens=False)["input_ids"]
        keep = len(last_ids) - overflow - 8  # a little slack: re-tokenising the cut text can grow it
        if keep >= 32:  # shorten the last passage if a useful part of it survives
            text = tokenizer.decode(last_ids[:keep], skip_special_tokens=True)
            numbered[-1] = replace(last, text=str(text))
        else:
            numbered.pop()
    return BuiltPrompt(bare, [], 0)

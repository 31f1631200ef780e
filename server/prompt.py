"""The one prompt builder every arm uses: conversation (+ numbered context passages) -> token ids.

Retrieved passages go into the system message, numbered so answers can cite them, laid out by
:mod:`hybrid_assistant.retrieval.prompt_context` (which training shares). When the
prompt would be too long, passages are dropped from the lowest-ranked up, then the last one
kept is shortened; the conversation itself is never cut (a conversation too long on its
own is an INVALID_ARGUMENT).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hybrid_assistant.retrieval.prompt_context import (
    ContextPassage,
    passage_line,
    with_context,
)
from hybrid_assistant.server.errors import InvalidArgument

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class BuiltPrompt:
    ids: list[int]
    passages: list[ContextPassage]  # those actually in the prompt, numbered
    context_tokens: int


# transformers applies split_special_tokens by setting a flag on the shared Rust tokenizer for
# the call: two threads encoding at once (one content, one template) could see each other's
# setting and tokenise "<|im_start|>" as text. Every encode goes through this lock.
_ENCODE_LOCK = threading.Lock()


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], *, content: bool) -> list[list[int]]:
    """Token ids of each text; ``content`` splits special tokens (user and retrieved text)."""
    with _ENCODE_LOCK:
        ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=content)["input_ids"]
    return [list(i) for i in ids]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, content: bool) -> list[int]:
    if not text:
        return []
    # Content is tokenised with special tokens split: "<|im_end|>" typed by a user (or found in a
    # retrieved passage) stays text and can never close a turn or forge a system message.
    return encode_batch(tokenizer, [text], content=content)[0]


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Apply the model's chat template and tokenise; only the template can produce control tokens.

    The template is rendered around placeholders (private-use characters no tokenizer merges
    with their neighbours), then the template's text is tokenised with its special tokens and
    each message's content without them.
    """
    placeholders = [f"\ue000{i}\ue001" for i in range(len(messages))]
    conversation = [{"role": m["role"], "content": p} for m, p in zip(messages, placeholders, strict=True)]
    text = str(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
    ids: list[int] = []
    pos = 0
    for message, placeholder in zip(messages, placeholders, strict=True):
        at = text.find(placeholder, pos)
        if at < 0:
            continue  # the template left this message out
        ids += _encode(tokenizer, text[pos:at], content=False)
        ids += _encode(tokenizer, message["content"], content=True)
        pos = at + len(placeholder)
    return ids + _encode(tokenizer, text[pos:], content=False)


_MAX_TOKEN_CHARS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def max_token_chars(tokenizer: PreTrainedTokenizerBase) -> int:
    """The most characters one token can stand for (computed once per tokenizer).

    Text of ``n`` characters is at least ``n / max_token_chars`` tokens, so input that cannot
    fit is refused, or left untokenised, without spending CPU on it.
    """
    known = _MAX_TOKEN_CHARS.get(tokenizer)
    if known is None:
        known = max(16, max((len(token) for token in tokenizer.get_vocab()), default=16))
        _MAX_TOKEN_CHARS[tokenizer] = known
    return known


# Re-tokenising a shortened passage can grow it by a token or two at the cut.
_SLACK = 8
# A passage is shortened rather than dropped only if this many of its tokens survive.
_MIN_PARTIAL = 32


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    passages: Sequence[ContextPassage],
    max_prompt_tokens: int,
) -> BuiltPrompt:
    """Messages plus as many passages as fit (highest-ranked first), the next one shortened.

    Linear in the passages' size: each passage is tokenised once, the number that fits is read
    off prefix sums of their token counts, and the rendered prompt is checked (and corrected by
    dropping one more passage at a time: the estimate is off by a few tokens at most).
    """
    budget_chars = max_prompt_tokens * max_token_chars(tokenizer)
    chars = sum(len(m["content"]) for m in messages)
    if chars > budget_chars:
        raise InvalidArgument(
            f"messages hold {chars} characters: more than max_prompt_tokens={max_prompt_tokens} tokens"
        )
    bare = render_chat(tokenizer, messages)
    if len(bare) > max_prompt_tokens:
        raise InvalidArgument(
            f"prompt is {len(bare)} tokens, more than max_prompt_tokens={max_prompt_tokens}"
        )
    # Passages past the point where even the most compact text could not fit are never tokenised.
    numbered: list[ContextPassage] = []
    for i, passage in enumerate(passages, start=1):
        if chars > budget_chars:
            break
        chars += len(passage.text)
        numbered.append(replace(passage, index=i, text=passage.text[:budget_chars]))
    if not numbered:
        return BuiltPrompt(bare, [], 0)

    def render(kept: Sequence[ContextPassage]) -> list[int]:
        return render_chat(tokenizer, with_context(messages, kept)) if kept else bare

    lines = ["\n" + passage_line(p) for p in numbered]
    costs = [len(ids) for ids in encode_batch(tokenizer, lines, content=True)]
    header = len(render(numbered[:1])) - costs[0]  # the prompt with an instruction and no passage
    fits, total = 0, header
    for cost in costs:
        if total + cost > max_prompt_tokens:
            break
        total += cost
        fits += 1
    ids = render(numbered[:fits])
    while fits and len(ids) > max_prompt_tokens:
        fits -= 1
        ids = render(numbered[:fits])
    kept = numbered[:fits]
    if fits < len(numbered):
        ids, kept = _add_partial(tokenizer, render, ids, kept, numbered[fits], max_prompt_tokens)
    return BuiltPrompt(ids, kept, len(ids) - len(bare) if kept else 0)


def _add_partial(
    tokenizer: PreTrainedTokenizerBase,
    render: Callable[[Sequence[ContextPassage]], list[int]],
    ids: list[int],
    kept: list[ContextPassage],
    passage: ContextPassage,
    max_prompt_tokens: int,
) -> tuple[list[int], list[ContextPassage]]:
    """Add the start of ``passage`` if a useful part of it fits (at most a few renders)."""
    text_ids = _encode(tokenizer, passage.text.strip(), content=True)
    keep = max_prompt_tokens - (len(render([*kept, passage])) - len(text_ids)) - _SLACK
    for _ in range(3):
        if keep < _MIN_PARTIAL:
            break
        short = replace(passage, text=str(tokenizer.decode(text_ids[:keep], skip_special_tokens=True)))
        candidate = render([*kept, short])
        overflow = len(candidate) - max_prompt_tokens
        if overflow <= 0:
            return candidate, [*kept, short]
        keep -= overflow + _SLACK
    return ids, kept

"""Turn a stream of token ids into a stream of text, and end it at stop strings.

Decoding token by token breaks multi-byte characters and words that merge across tokens, so
this keeps a small window of ids and emits only text that can no longer change (the method
used by text-generation-inference). Text that could be the start of a stop string is held
back until it is clear it is not one, so a client never sees part of a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""
        self._emitted = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def push(self, token_id: int, *, check_stop: bool = True) -> None:
        """Add a generated token; sets ``stopped`` when a stop string appears (looked for only
        with ``check_stop``: a request's min_tokens turns it off for its first tokens)."""
        if self.stopped:
            return
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            search_from = max(0, len(self.text) - self._hold)
            self.text += after[len(before) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            if check_stop:
                self._check_stop(search_from)

    def _check_stop(self, search_from: int) -> None:
        hits = [i for i in (self.text.find(s, search_from) for s in self._stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def flush(self) -> None:
        """At the end, keep whatever the pending ids decode to, even an incomplete character."""
        if self.stopped or self._read_offset == len(self._ids):
            return
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        search_from = max(0, len(self.text) - self._hold)
        self.text += after[len(before) :]
        self._read_offset = len(self._ids)
        self._check_stop(search_from)

    def take(self, final: bool) -> str:
        """Text not yet handed out; while not final, keeps back what might begin a stop string."""
        end = len(self.text) if final or self.stopped or not self._stop else len(self.text) - self._hold
        if end <= self._emitted:
            return ""
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta

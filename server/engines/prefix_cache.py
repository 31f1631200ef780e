"""Automatic prefix caching: keys/values of prompt prefixes kept in fixed-size blocks for reuse.

A block holds the keys and values of ``block_tokens`` consecutive prompt tokens for every layer.
It is found by a chain hash of (adapter uid, every token up to its end), so a block matches only
when the whole prefix before it is the same, under the same adapter version: keys depend on
every earlier token, and on the adapter when it targets k/v (or anything below them). Adapter
uids are never reused (a replaced adapter gets a new one), so a stale block can never match; an
unloaded adapter's blocks are dropped at once to give their memory back.

Blocks are evicted least recently used under a byte budget. A lookup touches a chain from its
last block back to its first, so a shared prefix's early blocks stay the most recent and a
chain is evicted from its tail: a block whose parent went is unreachable and ages out first.

Only the scheduler thread uses it (no locking), between forward passes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Block:
    key: bytes
    adapter_uid: int
    tokens: tuple[int, ...]
    keys: torch.Tensor  # (layers, kv_heads, block_tokens, head_dim)
    values: torch.Tensor


@dataclass
class PrefixCacheStats:
    hit_tokens: int = 0  # prompt tokens whose keys/values came from the cache
    miss_tokens: int = 0  # prompt tokens that had to be computed (lookups only)
    lookups: int = 0
    hits: int = 0  # lookups that reused at least one block
    evicted_blocks: int = 0
    blocks: int = 0
    bytes: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of looked-up prompt tokens served from the cache."""
        total = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / total if total else 0.0


def _chain_key(parent: bytes, adapter_uid: int, tokens: Sequence[int]) -> bytes:
    digest = hashlib.blake2b(parent, digest_size=16)
    digest.update(adapter_uid.to_bytes(8, "little"))
    digest.update(b"".join(t.to_bytes(4, "little") for t in tokens))
    return digest.digest()


class PrefixCache:
    def __init__(self, *, block_tokens: int, budget_bytes: int) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be at least 1")
        self.block_tokens = block_tokens
        self.budget_bytes = budget_bytes
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()  # least recently used first
        self.stats = PrefixCacheStats()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def _chain(self, adapter_uid: int, prompt_ids: Sequence[int], blocks: int) -> list[bytes]:
        keys, parent, size = [], b"", self.block_tokens
        for i in range(blocks):
            parent = _chain_key(parent, adapter_uid, prompt_ids[i * size : (i + 1) * size])
            keys.append(parent)
        return keys

    def lookup(self, adapter_uid: int, prompt_ids: Sequence[int], count: bool = True) -> list[Block]:
        """The longest run of cached blocks that starts the prompt, leaving at least its last token
        to compute (its logits give the first answer token)."""
        if not self.enabled or len(prompt_ids) < 2:
            return []
        usable = (len(prompt_ids) - 1) // self.block_tokens
        found: list[Block] = []
        for i, key in enumerate(self._chain(adapter_uid, prompt_ids, usable)):
            block = self._blocks.get(key)
            # The tokens are compared too: a hash collision must never hand out wrong keys.
            span = tuple(prompt_ids[i * self.block_tokens : (i + 1) * self.block_tokens])
            if block is None or block.tokens != span or block.adapter_uid != adapter_uid:
                break
            found.append(block)
        for block in reversed(found):
            self._blocks.move_to_end(block.key)
        if count:
            reused = len(found) * self.block_tokens
            self.stats.lookups += 1
            self.stats.hits += bool(found)
            self.stats.hit_tokens += reused
            self.stats.miss_tokens += len(prompt_ids) - reused
        return found

    def missing_blocks(self, adapter_uid: int, prompt_ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """(block index, key) of each full prompt block not cached yet, in prompt order."""
        if not self.enabled:
            return []
        full = len(prompt_ids) // self.block_tokens
        return [
            (i, key)
            for i, key in enumerate(self._chain(adapter_uid, prompt_ids, full))
            if key not in self._blocks
        ]

    def insert(
        self,
        key: bytes,
        adapter_uid: int,
        tokens: Sequence[int],
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> None:
        """Keep one block (``keys``/``values`` are owned by the cache from now on)."""
        size = keys.numel() * keys.element_size() + values.numel() * values.element_size()
        if size > self.budget_bytes:
            return
        self._blocks[key] = Block(key, adapter_uid, tuple(tokens), keys, values)
        self.stats.bytes += size
        self.stats.blocks += 1
        while self.stats.bytes > self.budget_bytes:
            self._evict(next(iter(self._blocks.values())))
            self.stats.evicted_blocks += 1

    def touch_chain(self, keys: Sequence[bytes]) -> None:
        """Mark a chain just inserted as used, tail first (see the module docstring)."""
        for key in reversed(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)

    def drop_adapter(self, adapter_uid: int) -> None:
        """Forget every block computed under ``adapter_uid`` (it was unloaded or replaced)."""
        for block in [b for b in self._blocks.values() if b.adapter_uid == adapter_uid]:
            self._evict(block)

    def clear(self) -> None:
        for block in list(self._blocks.values()):
            self._evict(block)

    def _evict(self, block: Block) -> None:
        del self._blocks[block.key]
        self.stats.bytes -= block.keys.numel() * block.keys.element_size() * 2
        self.stats.blocks -= 1

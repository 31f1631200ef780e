"""A key/value cache with one row per running sequence, for continuous batching.

Each sequence owns a row of a preallocated ``(rows, kv_heads, capacity, head_dim)`` tensor per
layer and writes its keys at its own positions, so sequences of different lengths decode
together without re-padding anyone's cache when others join or leave. Rows are kept compact
(the scheduler moves the last row into a freed one), so each forward reads a contiguous
slice. Capacity grows by doubling, up to the configured context limit.

It is passed to a Hugging Face model as ``past_key_values``; the model calls :meth:`update`
once per layer. The attention mask that goes with it comes from :meth:`attention_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hybrid_assistant.server.engines.lean_forward import Segment


class SlotKVCache:
    def __init__(
        self,
        *,
        layers: int,
        rows: int,
        kv_heads: int,
        head_dim: int,
        max_tokens: int,
        dtype: torch.dtype,
        initial_capacity: int = 256,
    ) -> None:
        self.layers, self.rows, self.kv_heads, self.head_dim = layers, rows, kv_heads, head_dim
        self.max_tokens = max_tokens
        self.dtype = dtype
        self.capacity = min(initial_capacity, max_tokens)
        self.keys = [self._empty(self.capacity) for _ in range(layers)]
        self.values = [self._empty(self.capacity) for _ in range(layers)]
        # Set by begin() for the forward pass in progress.
        self._row_start = 0
        self._row_end = 0
        self._write_rows: torch.Tensor = torch.zeros(0, 1, dtype=torch.int64)
        self._write_pos: torch.Tensor = torch.zeros(0, 1, dtype=torch.int64)
        self._kv_len = 0

    def _empty(self, capacity: int) -> torch.Tensor:
        return torch.zeros(self.rows, self.kv_heads, capacity, self.head_dim, dtype=self.dtype)

    def ensure_capacity(self, tokens: int) -> None:
        """Grow (doubling) so positions ``< tokens`` fit.

        Padding in a chunked prefill can write a little past ``max_tokens``; growth is capped at
        whichever of the two is larger.
        """
        if tokens <= self.capacity:
            return
        new_capacity = self.capacity
        while new_capacity < tokens:
            new_capacity *= 2
        new_capacity = min(new_capacity, max(tokens, self.max_tokens))
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                grown = self._empty(new_capacity)
                grown[:, :, : self.capacity] = old
                store[i] = grown
        self.capacity = new_capacity

    def begin(self, row_start: int, starts: torch.Tensor, new_tokens: int) -> None:
        """Prepare a forward over rows ``row_start..row_start+len(starts)``.

        Row ``i`` has ``starts[i]`` tokens cached and appends ``new_tokens`` (padded) tokens.
        """
        n = starts.shape[0]
        self._row_start, self._row_end = row_start, row_start + n
        self._write_rows = torch.arange(row_start, row_start + n).unsqueeze(1)
        self._write_pos = starts.unsqueeze(1) + torch.arange(new_tokens).unsqueeze(0)
        self._kv_len = int(starts.max()) + new_tokens
        self.ensure_capacity(self._kv_len)

    @staticmethod
    def attention_mask(starts: torch.Tensor, lengths: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Boolean ``(rows, 1, new_tokens, kv_len)`` mask: causal, and blind to padding and stale keys.

        Row ``i``'s query ``t`` sits at position ``starts[i] + t`` and sees keys at positions
        ``<= starts[i] + min(t, lengths[i] - 1)``; padded queries see the last real position, so
        no row of the mask is empty.
        """
        kv_len = int(starts.max()) + new_tokens
        t = torch.arange(new_tokens)
        last_real = (lengths - 1).clamp(min=0)
        query_pos = starts[:, None] + torch.minimum(t[None, :], last_real[:, None])
        keys = torch.arange(kv_len)
        return (keys[None, None, :] <= query_pos[:, :, None]).unsqueeze(1)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # key_states: (rows, kv_heads, new_tokens, head_dim) -> write at each row's positions.
        k_store, v_store = self.keys[layer_idx], self.values[layer_idx]
        k_store[self._write_rows, :, self._write_pos] = key_states.transpose(1, 2)
        v_store[self._write_rows, :, self._write_pos] = value_states.transpose(1, 2)
        rows = slice(self._row_start, self._row_end)
        return k_store[rows, :, : self._kv_len], v_store[rows, :, : self._kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def rows_for(self, rows: Sequence[int], segments: Sequence[Segment]) -> RowSegments:
        """The cache as a packed forward sees it: segment ``i`` reads and extends row ``rows[i]``."""
        if any(s.branches for s in segments):
            raise ValueError("a cache row holds one sequence: segments with branches cannot be written")
        self.ensure_capacity(max(s.start + s.length for s in segments))
        return RowSegments(self, rows, segments)

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of row ``src`` into row ``dst`` (compaction)."""
        if src == dst or length <= 0:
            return
        for store in (self.keys, self.values):
            for layer in store:
                layer[dst, :, :length] = layer[src, :, :length]

    def swap_rows(self, a: int, b: int, length: int) -> None:
        if a == b or length <= 0:
            return
        for store in (self.keys, self.values):
            for layer in store:
                tmp = layer[a, :, :length].clone()
                layer[a, :, :length] = layer[b, :, :length]
                layer[b, :, :length] = tmp


class RowSegments:
    """Rows of a :class:`SlotKVCache` for :meth:`LeanDecoder.packed` (a ``SegmentCache``)."""

    def __init__(self, cache: SlotKVCache, rows: Sequence[int], segments: Sequence[Segment]) -> None:
        self.cache, self.rows, self.segments = cache, rows, segments

    def segment(
        self, layer: int, index: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        row, segment = self.rows[index], self.segments[index]
        end = segment.start + segment.length
        k_store, v_store = self.cache.keys[layer], self.cache.values[layer]
        k_store[row, :, segment.start : end] = keys[0]
        v_store[row, :, segment.start : end] = values[0]
        return k_store[row : row + 1, :, :end], v_store[row : row + 1, :, :end]

"""Many LoRA adapters applied to one batch at once, each row with its own adapter.

Every targeted ``nn.Linear`` is wrapped in a :class:`LoraLinear`. Before each forward pass the
scheduler tells the bank which adapter each row uses; the bank concatenates the A and B
matrices of the adapters present in the batch (cached until the set changes) and builds a
row x column mask, so the whole mixed batch costs two small matmuls per layer instead of a
Python loop over adapters (what PEFT's ``adapter_names`` does). Rows on the base model are
masked out; a batch with no adapters skips LoRA entirely.

Adapters are keyed by a unique integer ``uid`` per loaded version, so replacing an adapter
while requests still use the old weights is just two uids alive at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from hybrid_assistant.adapters.peft_format import LoraPair


@dataclass
class _Active:
    a_cat: torch.Tensor  # (R, in): A of every active adapter that targets this module, stacked
    bt_cat: torch.Tensor  # (R, out): B^T likewise, scaling already folded in
    owner: torch.Tensor  # (R,): the uid owning each of the R columns


class LoraLinear(nn.Module):
    """A frozen Linear plus whatever adapters the bank says each row uses."""

    def __init__(self, base: nn.Linear, bank: LoraBank, path: str) -> None:
        super().__init__()
        self.base = base
        self.bank = bank
        self.path = path

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        active = self.bank.active_for(self.path)
        if active is None:
            return y
        x2 = x.reshape(-1, x.shape[-1])
        # masked_fill, not a multiply by 0: one adapter's overflow (inf * 0 = NaN) must not
        # reach the rows of other requests in the batch.
        xa = (x2 @ active.a_cat.t()).masked_fill_(self.bank.mask_for(active.owner), 0.0)
        y.view(-1, y.shape[-1]).addmm_(xa, active.bt_cat)
        return y


class LoraBank:
    """Adapter weights by uid, and the per-batch views that :class:`LoraLinear` reads.

    Not thread-safe: only the scheduler thread calls it, between forward passes.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._weights: dict[int, dict[str, LoraPair]] = {}
        self._active_key: tuple[int, ...] = ()
        self._active: dict[str, _Active] = {}
        self._row_uids: torch.Tensor | None = None
        self._masks: dict[int, torch.Tensor] = {}

    @staticmethod
    def wrap(model: nn.Module, bank: LoraBank, paths: Sequence[str]) -> None:
        """Replace each Linear at ``paths`` by a LoraLinear sharing ``bank``."""
        for path in paths:
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            base = getattr(parent, child)
            if isinstance(base, nn.Linear):
                setattr(parent, child, LoraLinear(base, bank, path))

    @property
    def uids(self) -> list[int]:
        return list(self._weights)

    def add(self, uid: int, weights: dict[str, LoraPair]) -> None:
        if uid <= 0 or uid in self._weights:
            raise ValueError(f"adapter uid {uid} is invalid or already present")
        self._weights[uid] = weights
        self._active_key = ()  # concatenations are rebuilt on the next batch that needs them

    def remove(self, uid: int) -> None:
        if self._weights.pop(uid, None) is not None and uid in self._active_key:
            self._active_key = ()
            self._active = {}

    def set_batch(self, row_uids: Sequence[int], tokens_per_row: int | Sequence[int]) -> None:
        """Declare the adapter of each row for the next forward (``tokens_per_row`` tokens each)."""
        present = tuple(sorted({u for u in row_uids if u}))
        self._masks = {}
        if not present:
            self._row_uids = None
            return
        if present != self._active_key or not self._active:
            self._rebuild(present)
        uids = torch.tensor(list(row_uids), dtype=torch.int64)
        if isinstance(tokens_per_row, int):
            if tokens_per_row > 1:
                uids = uids.repeat_interleave(tokens_per_row)
        else:
            uids = uids.repeat_interleave(torch.tensor(list(tokens_per_row), dtype=torch.int64))
        self._row_uids = uids

    @contextmanager
    def batch(self, row_uids: Sequence[int], tokens_per_row: int | Sequence[int]) -> Iterator[None]:
        """:meth:`set_batch` for the forward inside the block, :meth:`clear_batch` after it, even on error."""
        self.set_batch(row_uids, tokens_per_row)
        try:
            yield
        finally:
            self.clear_batch()

    def clear_batch(self) -> None:
        self._row_uids = None
        self._masks = {}

    def active_for(self, path: str) -> _Active | None:
        if self._row_uids is None:
            return None
        return self._active.get(path)

    def mask_for(self, owner: torch.Tensor) -> torch.Tensor:
        """True where a row must not see a LoRA column (the column's adapter is not the row's)."""
        # Modules targeted by the same adapters share one ``owner`` tensor, hence one mask per step.
        mask = self._masks.get(id(owner))
        if mask is None:
            assert self._row_uids is not None
            mask = self._row_uids[:, None] != owner[None, :]
            self._masks[id(owner)] = mask
        return mask

    def _rebuild(self, present: tuple[int, ...]) -> None:
        owners: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}
        active: dict[str, _Active] = {}
        paths = {p for uid in present for p in self._weights[uid]}
        for path in paths:
            parts = [(uid, self._weights[uid][path]) for uid in present if path in self._weights[uid]]
            signature = tuple((uid, pair.a.shape[0]) for uid, pair in parts)
            owner = owners.get(signature)
            if owner is None:
                owner = torch.cat([torch.full((rank,), uid, dtype=torch.int64) for uid, rank in signature])
                owners[signature] = owner
            active[path] = _Active(
                a_cat=torch.cat([pair.a for _, pair in parts]).contiguous(),
                bt_cat=torch.cat([pair.b.t() for _, pair in parts]).contiguous(),
                owner=owner,
            )
        self._active = active
        self._active_key = present

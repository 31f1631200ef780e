"""Pick the next token for each row: greedy, or temperature + top-p with a per-request RNG.

Each request samples from its own ``torch.Generator``, so its answer does not depend on
which other requests share the batch. Logits must be finite (the scheduler fails rows that are
not); a row whose scaled logits still overflow (finite but huge scores at a tiny temperature)
takes its argmax, which is what such a temperature means, instead of sampling from NaNs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hybrid_assistant.server.engines.types import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def sample(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> list[int]:
    """``logits`` is ``(rows, vocab)``; returns one token id per row."""
    logits = logits.float()
    chosen = logits.argmax(dim=-1)
    sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
    if sampled_rows:
        index = torch.tensor(sampled_rows)
        temperature = torch.tensor([params[i].temperature for i in sampled_rows]).unsqueeze(1)
        probs = torch.softmax(logits[index] / temperature, dim=-1)
        top_p = torch.tensor([params[i].top_p for i in sampled_rows]).unsqueeze(1)
        if bool((top_p < 1.0).any()):
            probs = _top_p_filter(probs, top_p)
        usable = (torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)).tolist()
        for row, i in enumerate(sampled_rows):
            if usable[row]:
                chosen[i] = torch.multinomial(probs[row], 1, generator=generators[i])[0]
    return [int(t) for t in chosen.tolist()]


def _top_p_filter(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    # Keep the smallest set of tokens whose mass reaches top_p (the first token always stays).
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)

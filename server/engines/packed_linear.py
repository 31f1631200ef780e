"""Weights reordered once, at load, into oneDNN's blocked layout for the decode-shaped GEMMs.

Why: a decode step is ~210 skinny products (a few rows against a large weight), and the default
``F.linear`` (MKL sgemm) re-packs the weight into its kernel's layout on every call at these
shapes. oneDNN's inner-product primitive on a weight reordered once skips that. Measured on an
AVX2 EPYC (``python bench/roofline.py``): the LM head at 16 rows 2.4× faster, the fused gate/up
1.6×, q/k/v 1.4×; skinny weights like a 192-wide k or v alone gain nothing, which is one more
reason the lean forward fuses them.

The reordered copy is extra memory (the model's own Linears still hold their weights for the
Hugging Face path and ``Score``): +0.5 GB for SmolLM2-135M in float32. ``prepack_weights=false``
turns it off.

The ops are torch's own (``torch.ops.mkldnn``; the same ones ``torch.compile`` uses for CPU
linears when freezing). They are not a documented public API, so :func:`unavailable` probes them
at load and the caller falls back to ``F.linear`` when they are missing or disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Linear = Callable[[torch.Tensor], torch.Tensor]

#: The largest difference from ``F.linear`` the load-time probe accepts: float32 rounding of a
#: different summation order, not a wrong product.
_PROBE_TOLERANCE = 1e-4


def unavailable(dtype: torch.dtype) -> str | None:
    """Why reordered weights cannot be used here, or None when they can."""
    if dtype != torch.float32:
        # bfloat16 has its own kernel choices per CPU (AMX, AVX512-BF16, emulation); not measured.
        return f"dtype {dtype} (prepacked weights are float32 only)"
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN"
    for name in ("_reorder_linear_weight", "_linear_pointwise"):
        if not hasattr(torch.ops.mkldnn, name):
            return f"torch.ops.mkldnn.{name} is missing in torch {torch.__version__}"
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 40, generator=generator)
    x = torch.randn(5, 40, generator=generator)
    try:
        with torch.inference_mode():
            got = packed(weight, rows_hint=4)(x)
    except RuntimeError as exc:  # an op that exists but refuses this build or CPU
        return f"oneDNN linear failed: {exc}"
    if got.shape != (5, 48) or not torch.allclose(got, F.linear(x, weight), atol=_PROBE_TOLERANCE):
        return "oneDNN linear disagrees with F.linear"
    return None


def packed(weight: torch.Tensor, *, rows_hint: int) -> Linear:
    """``x -> x @ weight.T`` on a copy of ``weight`` reordered once for oneDNN.

    ``rows_hint`` is the batch size the layout is tuned for; any number of rows works.
    ``x`` must be 2-D.
    """
    reordered = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)

    def linear(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, reordered, None, "none", [], "")

    return linear


def plain(weight: torch.Tensor) -> Linear:
    """``x -> F.linear(x, weight)``: the default kernel, no extra memory."""

    def linear(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)

    return linear

"""Decode steps of one to three rows at memory bandwidth: a small AVX2 kernel, built on first use.

Why: at one row a decode step reads every weight once to make one token, so it is bound by how
fast weights stream from memory. Torch has no kernel that streams at that rate: MKL's sgemv runs
on one thread, and oneDNN's inner product on prepacked weights reads ~20 GB/s where the machine
reads ~33 (``python bench/row_gemv.py`` measures all three against that read rate).
``row_gemv.cpp`` does (see its header); batches of up to ``gemv_max_rows`` rows use it, larger
ones keep the prepacked or plain product, which is as fast from 4 rows on.

It reads the plain weights the model already holds (the lean forward's fused tensors and the
LM head's), so it costs no memory.

It is compiled with torch's own extension builder (``torch.utils.cpp_extension``: a C++ compiler
and ninja; ninja comes from PyPI with the project) into torch's extension cache, once per Python
environment: ~33 s the first time, then a load. ``make install`` builds it ahead. Where it
cannot be used (no AVX2/FMA, no compiler, another dtype, a result that disagrees with
``F.linear``), :func:`unavailable` says why and the engine keeps its other products.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hybrid_assistant.server.cpu import cpu_info
from hybrid_assistant.server.engines.packed_linear import Linear

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("row_gemv.cpp")
#: The most rows the kernel takes (its templates cover 1 to 4).
MAX_ROWS = 4
#: As in packed_linear: float32 rounding of another summation order, not a wrong product.
_PROBE_TOLERANCE = 1e-4


def _build_key() -> str:
    digest = hashlib.sha256(sys.prefix.encode())
    digest.update(SOURCE.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def _build() -> tuple[Any, str | None]:
    """(the compiled module, None) or (None, why not); built or loaded once per process."""
    missing = {"avx2", "fma"} - set(cpu_info().isa)
    if missing:
        return None, f"the CPU lacks {', '.join(sorted(missing))}"
    try:
        import ninja  # the PyPI package: puts a ninja binary beside itself

        # torch's builder looks for `ninja` on PATH; a venv's bin is not on it unless activated.
        os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    except ImportError:
        pass  # a system ninja may still be on PATH
    from torch.utils.cpp_extension import load

    try:
        module = load(
            # One build per environment and source: torch rebuilds an extension whose source, flags
            # or include paths changed, so two venvs (or two sources) sharing one name would
            # rebuild it at each switch, and a later process would find the other's build.
            name=f"hybrid_assistant_row_gemv_{_build_key()}",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
            # The OpenMP runtime torch already loaded (same soname), so one thread pool, not two.
            extra_ldflags=["-fopenmp"],
        )
    except Exception as exc:  # a compiler, ninja or linker failure: fall back, say why
        return None, f"building {SOURCE.name} failed: {str(exc).strip().splitlines()[-1][:300]}"
    return module, None


def unavailable(dtype: torch.dtype) -> str | None:
    """Why the kernel cannot be used here, or None when it can (builds it on first call)."""
    if dtype != torch.float32:
        return f"dtype {dtype} (the kernel is float32 only)"
    module, why = _build()
    if module is None:
        return why
    generator = torch.Generator().manual_seed(0)
    # An odd width exercises the kernel's tails; every row count it serves is checked.
    weight = torch.randn(67, 53, generator=generator)
    for rows in range(1, MAX_ROWS + 1):
        x = torch.randn(rows, 53, generator=generator)
        got = module.row_gemv(x, weight)
        if got.shape != (rows, 67) or not torch.allclose(got, F.linear(x, weight), atol=_PROBE_TOLERANCE):
            return "the row GEMV kernel disagrees with F.linear"
    return None


def with_row_gemv(weight: torch.Tensor, other: Linear, max_rows: int) -> Linear:
    """``x -> x @ weight.T``: the kernel for up to ``max_rows`` rows, ``other`` above that.

    Call only after :func:`unavailable` returned None. A weight the kernel cannot read in place
    (not contiguous, not float32) keeps ``other`` at every row count.
    """
    if not weight.is_contiguous() or weight.dtype != torch.float32:
        return other
    module, _ = _build()
    gemv = module.row_gemv

    def linear(x: torch.Tensor) -> torch.Tensor:
        return gemv(x, weight) if 0 < x.shape[0] <= max_rows else other(x)

    return linear


if __name__ == "__main__":  # `make install`: build the kernel ahead, so a first start does not wait
    reason = unavailable(torch.float32)
    print(f"row GEMV kernel: {'ready' if reason is None else f'not used ({reason})'}")

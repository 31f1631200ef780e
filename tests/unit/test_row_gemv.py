"""The row GEMV kernel (server/engines/row_gemv.cpp): the same products as F.linear, the same greedy
tokens as Hugging Face's modules at the batch sizes that use it, clear errors, and a fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybrid_assistant.server.engines import row_gemv
from hybrid_assistant.server.engines.model_runner import ModelRunner

# The kernel needs AVX2/FMA and a C++ compiler. CI machines have both; elsewhere the fallback tests
# below still run and these say why they could not.
pytestmark = pytest.mark.skipif(
    row_gemv.unavailable(torch.float32) is not None, reason=f"{row_gemv.unavailable(torch.float32)}"
)


def _kernel() -> object:
    module, why = row_gemv._build()
    assert module is not None, why
    return module


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize(("outputs", "width"), [(1, 8), (7, 5), (67, 53), (192, 576), (130, 1536)])
def test_products_equal_f_linear(rows: int, outputs: int, width: int) -> None:
    # Widths below one vector, with tails of every length, and the model's own shapes.
    generator = torch.Generator().manual_seed(rows * 1000 + width)
    x = torch.randn(rows, width, generator=generator)
    weight = torch.randn(outputs, width, generator=generator)
    got = _kernel().row_gemv(x, weight)  # type: ignore[attr-defined]
    torch.testing.assert_close(got, F.linear(x, weight), atol=1e-4, rtol=1e-4)


def test_a_strided_input_is_read_correctly() -> None:
    x = torch.randn(6, 40)[::3]  # rows 0 and 3: not contiguous
    weight = torch.randn(33, 40)
    torch.testing.assert_close(_kernel().row_gemv(x, weight), F.linear(x, weight), atol=1e-4, rtol=1e-4)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("x", "weight", "message"),
    [
        (torch.randn(5, 8), torch.randn(4, 8), "1 to 4 rows"),
        (torch.randn(0, 8), torch.randn(4, 8), "1 to 4 rows"),
        (torch.randn(1, 8), torch.randn(4, 9), "columns"),
        (torch.randn(1, 8, dtype=torch.float64), torch.randn(4, 8), "float32 only"),
        (torch.randn(8), torch.randn(4, 8), "2-D"),
        (torch.randn(1, 8), torch.randn(8, 4).t(), "contiguous"),
    ],
    ids=["five-rows", "no-rows", "widths", "float64", "1-d", "strided-weight"],
)
def test_bad_inputs_raise_instead_of_reading_out_of_bounds(
    x: torch.Tensor, weight: torch.Tensor, message: str
) -> None:
    with pytest.raises(RuntimeError, match=message):
        _kernel().row_gemv(x, weight)  # type: ignore[attr-defined]


def test_larger_batches_take_the_other_product() -> None:
    weight = torch.randn(16, 8)
    calls: list[int] = []

    def other(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return F.linear(x, weight)

    linear = row_gemv.with_row_gemv(weight, other, max_rows=2)
    for rows in (1, 2, 3, 9):
        x = torch.randn(rows, 8)
        torch.testing.assert_close(linear(x), F.linear(x, weight), atol=1e-4, rtol=1e-4)
    assert calls == [3, 9]


def test_a_weight_the_kernel_cannot_read_keeps_the_other_product() -> None:
    def other(x: torch.Tensor) -> torch.Tensor:
        return x

    assert row_gemv.with_row_gemv(torch.randn(8, 16).t(), other, max_rows=2) is other
    assert row_gemv.with_row_gemv(torch.randn(16, 8, dtype=torch.float64), other, max_rows=2) is other


def _runner(model_dir: Path, *, lean: bool, gemv_max_rows: int) -> ModelRunner:
    return ModelRunner(
        model_dir, dtype=torch.float32, max_rows=4, max_tokens=64, model_name="tiny",
        aliases={str(model_dir)}, lean=lean, prepack=lean, gemv_max_rows=gemv_max_rows,
    )  # fmt: skip


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_decode_with_the_kernel_matches_hugging_face(tiny_model_dir: Path, rows: int) -> None:
    fast = _runner(tiny_model_dir, lean=True, gemv_max_rows=3)
    # The reference: Hugging Face's modules and F.linear everywhere, LM head included.
    reference = _runner(tiny_model_dir, lean=False, gemv_max_rows=0)
    assert fast.gemv_rows == 3 and reference.gemv_rows == 0
    torch.manual_seed(rows)
    prompt = torch.randint(5, 300, (rows, 9))
    zeros, everyone = torch.zeros(rows, dtype=torch.int64), list(range(rows))
    lengths = torch.full((rows,), 9)
    got = fast.forward(0, prompt, zeros, lengths, [0] * rows, everyone)
    want = reference.forward(0, prompt, zeros, lengths, [0] * rows, everyone)
    starts = lengths.clone()
    for _ in range(8):  # decode steps: the batches the kernel serves
        tokens = got.argmax(-1, keepdim=True)
        assert torch.equal(tokens, want.argmax(-1, keepdim=True))
        ones = torch.ones(rows, dtype=torch.int64)
        got = fast.forward(0, tokens, starts, ones, [0] * rows, everyone)
        want = reference.forward(0, tokens, starts, ones, [0] * rows, everyone)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        starts += 1

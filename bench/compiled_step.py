"""A compiled decode step (``torch.compile``, inductor) against the lean forward it would replace.

Issue 11 asked for "a compiled step or a lean hand-written forward, whichever measures faster".
This measures both in one process, on the model runner (no scheduler, no gRPC). Three ways
to run the same decode step are timed, interleaved step by step:

- ``lean, prepacked``: what the engine runs by default (oneDNN-reordered weights);
- ``lean, plain``: the same forward on plain weights (``F.linear``);
- ``compiled, plain``: that forward's layer function under ``torch.compile``.

Inductor cannot trace the prepacked weights (opaque oneDNN tensors), so the compiled step runs
on plain weights; ``--freeze`` turns on inductor's freezing, which prepacks constant weights itself.
Every layer is compiled separately, and the per-layer key/value cache write is a graph break.
The compile time is reported: a server would pay it at start, per batch-size bucket.
Greedy agreement: the compiled step's argmax must equal the eager step's on every row.

    python bench/compiled_step.py               # rows 1 and 16
    python bench/compiled_step.py --rows 1 --freeze
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.harness import table, write_results
from hybrid_assistant.server.engines.model_runner import ModelRunner

_WARM_UP = 2  # steps of each kind left out of the median


def measure(
    packed: ModelRunner, plain: ModelRunner, compiled_layer: Any, rows: int, context: int, steps: int
) -> dict[str, Any]:
    """Decode steps of ``rows`` rows: default, plain and compiled-plain, interleaved."""
    assert plain.lean is not None
    eager_layer = plain.lean._layer
    generator = torch.Generator().manual_seed(rows)
    high = min(20000, plain.vocab_size)  # ordinary tokens: past the specials, inside any vocabulary
    prompt = torch.randint(high // 4, high, (rows, context), generator=generator)
    token = torch.randint(high // 4, high, (rows, 1), generator=generator)
    uids, where = [0] * rows, list(range(rows))
    for each in (packed, plain):
        each.forward(
            0, prompt, torch.zeros(rows, dtype=torch.int64), torch.full((rows,), context), uids, where
        )

    def step(each: ModelRunner) -> torch.Tensor:
        # The same position every time: the cache is rewritten, the context stays the same.
        starts = torch.full((rows,), context, dtype=torch.int64)
        return each.forward(0, token, starts, torch.ones(rows, dtype=torch.int64), uids, where)

    try:
        with torch.inference_mode():
            reference = step(plain)
            plain.lean._layer = compiled_layer  # type: ignore[method-assign]
            started = time.perf_counter()
            compiled_logits = step(plain)  # the first call for this row count compiles
            compile_s = time.perf_counter() - started
            times: dict[str, list[float]] = {"lean, prepacked": [], "lean, plain": [], "compiled, plain": []}
            for _ in range(steps):
                for name, each, layer in (
                    ("lean, prepacked", packed, None),
                    ("lean, plain", plain, eager_layer),
                    ("compiled, plain", plain, compiled_layer),
                ):
                    if layer is not None:
                        plain.lean._layer = layer  # type: ignore[method-assign]
                    started = time.perf_counter()
                    step(each)
                    times[name].append(time.perf_counter() - started)
    finally:
        vars(plain.lean).pop("_layer", None)  # back to the class's eager method, even after a failure
    medians = {name: statistics.median(values[_WARM_UP:]) * 1000 for name, values in times.items()}
    return {
        "rows": rows,
        **{f"{name} ms": value for name, value in medians.items()},
        "compiled ÷ lean plain": medians["lean, plain"] / medians["compiled, plain"],
        "compiled ÷ default": medians["lean, prepacked"] / medians["compiled, plain"],
        "compile s": compile_s,
        "greedy equal": bool((compiled_logits.argmax(-1) == reference.argmax(-1)).all()),
        "max logit diff": float((compiled_logits - reference).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=15, help=f"timed steps of each kind, {_WARM_UP} of them warm-up"
    )
    parser.add_argument("--freeze", action="store_true", help="inductor freezing (prepacks constant weights)")
    args = parser.parse_args()

    import torch._dynamo
    import torch._inductor.config

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    # One compiled graph per layer: a layer's index is a constant in its graph.
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.accumulated_cache_size_limit = 1024
    torch._inductor.config.freezing = args.freeze

    model_dir = resolve_model(None, None, load_settings(None).models_dir).path
    rows_max, context = max(args.rows), args.context

    def runner(prepack: bool) -> ModelRunner:
        made = ModelRunner(
            model_dir,
            dtype=torch.float32,
            max_rows=rows_max,
            max_tokens=context + 8,
            model_name="SmolLM2-135M-Instruct",
            aliases=set(),
            prepack=prepack,
        )
        assert made.lean is not None, "the lean forward must run SmolLM2"
        return made

    packed, plain = runner(True), runner(False)
    assert plain.lean is not None
    compiled_layer = torch.compile(plain.lean._layer, dynamic=False)
    results: list[dict[str, Any]] = []
    for rows in args.rows:
        row = measure(packed, plain, compiled_layer, rows, context, args.steps)
        results.append(row)
        print(
            table(
                [row],
                list(row),
                f"{rows} rows, {context}-token context (step ms: median of {args.steps - _WARM_UP})",
            )
        )
    path = write_results(
        "compiled-step-freeze" if args.freeze else "compiled-step",
        {"args": vars(args), "threads": torch.get_num_threads(), "results": results},
    )
    print(f"ratios above 1 mean the compiled step is faster; wrote {path}")


if __name__ == "__main__":
    main()

"""Prompt processing, where the eval spends its time: packed prefill chunks and the lean Score.

Runs the model runner directly (no scheduler, no gRPC), SmolLM2, float32, all in one process:

1. **Limit**: the CPU's large-GEMM rate (2048³, as ``bench/roofline.py`` measures it). A prefill
   chunk is compute-bound, so its floor is its FLOPs at that rate.
2. **Prefill chunks** the scheduler builds under its 512-token budget, each timed two ways,
   interleaved: packed end to end (the engine's path: no product runs on padding, a prompt's first
   chunk is plain causal attention) and right-padded to the longest chunk (the previous path, and
   the one Hugging Face's modules take). The two must give the same next tokens.
3. **Score** of four options after a RAG-sized prompt whose blocks a Generate left in the prefix
   cache: on the lean forward (one packed pass: the prompt's rest, then the options as one
   segment of branches) against Hugging Face's modules (the previous path). Same log-probs.

    python bench/prefill.py          # writes bench/results/prefill.json
    python bench/prefill.py --quick
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.harness import matmul_gflops, table, write_results
from bench.roofline import model_shape

# (start, length) of each chunk in one prefill step: what a 512-token budget packs.
LAYOUTS = {
    "one prompt's first 512 tokens": [(0, 512)],
    "a prompt's last 23 + the next one's first 489": [(512, 23), (0, 489)],
    "two prompts' rests, 88 + 424": [(512, 88), (112, 424)],
    "eight 45-token prompts + one 152": [(0, 45)] * 8 + [(0, 152)],
}
PROMPT = 535  # the demo's RAG prompts (bench/results/demo-7arms.json)
OPTIONS = (3, 5, 4, 6)


def ms(fn: Callable[[], Any]) -> float:
    """Wall time of one call; callers alternate the two things they compare, call by call."""
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def layer_flops_per_token(shape: dict[str, int]) -> float:
    """2 x the parameters of one token's products below the LM head (attention scores excluded)."""
    h, inter, layers = shape["hidden"], shape["inter"], shape["layers"]
    q, kv = shape["heads"] * shape["head_dim"], shape["kv"] * shape["head_dim"]
    return 2.0 * layers * (h * q * 2 + h * kv * 2 + 3 * h * inter)


def measure_layout(
    engine: Any,
    name: str,
    layout: list[tuple[int, int]],
    tokens: Callable[[int], list[int]],
    per_token: float,
    gemm: float,
    repeats: int,
) -> dict[str, Any]:
    """One prefill step of ``layout``'s chunks, packed and right-padded, interleaved."""
    prompts = [tokens(start + length) for start, length in layout]
    starts = [start for start, _ in layout]
    chunks = [p[start:] for p, (start, _) in zip(prompts, layout, strict=True)]
    rows = list(range(len(layout)))
    uids = [0] * len(layout)
    for row, (prompt, start) in enumerate(zip(prompts, starts, strict=True)):
        if start:  # the part of a prompt an earlier step read
            engine.prefill([row], [0], [prompt[:start]], [0], [])
    width = max(len(c) for c in chunks)
    padded_tokens = torch.zeros(len(chunks), width, dtype=torch.int64)
    for i, chunk in enumerate(chunks):
        padded_tokens[i, : len(chunk)] = torch.tensor(chunk)
    lengths = torch.tensor([len(c) for c in chunks])
    # Every chunk ends its prompt here: logits for all of them.
    packed = functools.partial(engine.prefill, rows, starts, chunks, uids, rows)
    padded = functools.partial(engine.forward, 0, padded_tokens, torch.tensor(starts), lengths, uids, rows)
    same = bool(torch.equal(packed().argmax(-1), padded().argmax(-1)))
    packed_ms: list[float] = []
    padded_ms: list[float] = []
    for _ in range(repeats):  # interleaved: the machine's drift hits both alike
        packed_ms.append(ms(packed))
        padded_ms.append(ms(padded))
    real = sum(len(c) for c in chunks)
    floor_ms = real * per_token / (gemm * 1e9) * 1000
    p, q = statistics.median(packed_ms), statistics.median(padded_ms)
    return {
        "chunks": name,
        "tokens": real,
        "padded tokens": len(chunks) * width,
        "packed ms": p,
        "padded ms": q,
        "padded ÷ packed": q / p,
        "packed GFLOP/s": real * per_token / p / 1e6,
        "packed ÷ compute floor": p / floor_ms,
        "same next tokens": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats per point instead of 7")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.engines.model_runner import ModelRunner
    from hybrid_assistant.server.model_store import resolve_model

    gemm = matmul_gflops(2048, 2048, 2048, seconds=1.5)
    model_dir = resolve_model(None, None, load_settings(None).models_dir).path
    shape = model_shape(model_dir)
    per_token = layer_flops_per_token(shape)

    def runner(lean: bool) -> ModelRunner:
        return ModelRunner(
            model_dir,
            dtype=torch.float32,
            max_rows=16,
            max_tokens=2048,
            model_name="SmolLM2-135M-Instruct",
            aliases=set(),
            lean=lean,
            prefix_cache_bytes=256 << 20,
        )

    engine = runner(lean=True)
    assert engine.lean is not None, "the lean forward must run SmolLM2"
    generator = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(100, 20000, (n,), generator=generator).tolist()

    rows = [
        measure_layout(engine, name, layout, tokens, per_token, gemm, repeats)
        for name, layout in LAYOUTS.items()
    ]

    # Score after a Generate of the same prompt: its blocks are in the prefix cache.
    modules = runner(lean=False)
    prompt = tokens(PROMPT)
    options = [tokens(n) for n in OPTIONS]
    for each in (engine, modules):
        each.prefill([0], [0], [prompt], [0], [0])
        each.save_prefix(0, 0, prompt)
    lean_scores, module_scores = engine.score(prompt, options, 0), modules.score(prompt, options, 0)
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(lean_scores, module_scores, strict=True))
    lean_ms: list[float] = []
    module_ms: list[float] = []
    for _ in range(repeats * 2):
        lean_ms.append(ms(lambda: engine.score(prompt, options, 0)))
        module_ms.append(ms(lambda: modules.score(prompt, options, 0)))
    score = {
        "prompt tokens": PROMPT,
        "options": len(OPTIONS),
        "lean ms": statistics.median(lean_ms),
        "modules ms": statistics.median(module_ms),
        "modules ÷ lean": statistics.median(module_ms) / statistics.median(lean_ms),
        "max log-prob diff": diff,
    }

    print(f"float32, {torch.get_num_threads()} threads; large-GEMM rate {gemm:.0f} GFLOP/s")
    print(table(rows, list(rows[0]), "prefill chunks: packed (the engine) vs right-padded (before)"))
    print()
    print(table([score], list(score), "Score after a cached prompt: lean forward vs Hugging Face's modules"))
    path = write_results(
        "prefill",
        {"gemm_2048_gflops": gemm, "layer_flops_per_token": per_token, "chunks": rows, "score": score},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The prefix cache on eval-shaped traffic: the same requests with the cache on and off.

Builds the requests the eval sends for the demo questions: for each question, a closed-book
prompt and a retrieval-augmented one (the server's own prompt builder, the gold document's
passages first), each answered (Generate) and then scored over the item's options (Score), as
the eval's runner does, all arms of an item together, 8 at a time. Two embedded engines on
SmolLM2 in one process, cache on and off, take turns (ABBA) so drift hits both. Reported: wall
time, prompt tokens computed, hit rate, and the on/off ratio; the greedy answers must match.

    python bench/prefix_cache.py            # 40 questions x 2 arms, 2 rounds
    python bench/prefix_cache.py --quick    # 10 questions, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import median, table, write_results

DEMO = Path(__file__).resolve().parents[1] / "eval" / "data" / "demo"
CONCURRENCY = 8
MAX_TOKENS = 24


def requests(tokenizer: Any, count: int) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt ids, option continuations) per (question, arm), item-major."""
    from hybrid_assistant.server.prompt import ContextPassage, build_prompt, render_chat

    documents = {p.stem: p.read_text() for p in (DEMO / "kb").glob("*.md")}
    items = [json.loads(line) for line in (DEMO / "test.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for item in [i for i in items if i.get("options")][:count]:
        messages = [{"role": "user", "content": item["question"]}]
        gold = [d for d in item.get("gold_doc_ids", []) if d in documents]
        passages = [
            ContextPassage(document_id=d, chunk_id=f"{d}#0", score=1.0, text=documents[d][:1500])
            for d in [*gold, *sorted(documents)[:2]]
        ]
        options = [list(tokenizer(" " + o, add_special_tokens=False)["input_ids"]) for o in item["options"]]
        out.append((render_chat(tokenizer, messages), options))
        out.append((build_prompt(tokenizer, messages, passages, 1024).ids, options))
    return out


async def run(
    engine: Any, work: list[tuple[list[int], list[list[int]]]]
) -> tuple[float, list[tuple[str, list[float]]]]:
    from hybrid_assistant.server.engines.types import GenerationRequest, SamplingParams

    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int, ids: list[int], options: list[list[int]]) -> tuple[str, list[float]]:
        async with limit:
            request = GenerationRequest(f"r{i}", ids, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
            text = "".join([chunk.text async for chunk in engine.generate(request)])
            scores = await engine.score(ids, options, 0)
            return text, [s.logprob for s in scores]

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(i, ids, opts) for i, (ids, opts) in enumerate(work)))
    return time.perf_counter() - started, list(answers)


async def main_async(args: argparse.Namespace) -> None:
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.engines.transformers_engine import TransformersEngine
    from hybrid_assistant.server.model_store import resolve_model

    model = resolve_model(None, None, load_settings(None).models_dir).path
    with tempfile.TemporaryDirectory() as tmp:
        engines = {
            name: TransformersEngine(
                load_settings(None, model_path=model, data_dir=Path(tmp) / name, prefix_cache_mb=size)
            )
            for name, size in (("on", 512.0), ("off", 0.0))
        }
        for engine in engines.values():
            await engine.start()
        work = requests(engines["on"].tokenizer, args.questions)
        prompt_tokens = sum(len(ids) for ids, _ in work)
        runs: list[dict[str, Any]] = []
        answers: dict[str, list[tuple[str, list[float]]]] = {}
        for round_ in range(args.rounds):
            order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
            for name in order:
                if name == "on":  # every pass starts cold, as the eval's first (uncached) run does
                    engines[name]._require_runner().prefix.clear()  # idle engine: no step in flight
                before = engines[name].prefix_cache_info()
                wall, got = await run(engines[name], work)
                after = engines[name].prefix_cache_info()
                answers.setdefault(name, got)
                hits = after.hit_tokens - before.hit_tokens
                misses = after.miss_tokens - before.miss_tokens
                runs.append(
                    {
                        "round": round_,
                        "cache": name,
                        "wall_s": wall,
                        "requests": len(work),
                        "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
                        "prompt_tokens_computed": misses if name == "on" else 2 * prompt_tokens,
                    }
                )
        for engine in engines.values():
            await engine.close()
    on = [r["wall_s"] for r in runs if r["cache"] == "on"]
    off = [r["wall_s"] for r in runs if r["cache"] == "off"]
    pairs = list(zip(answers["on"], answers["off"], strict=True))
    same = sum(a[0] == b[0] for a, b in pairs)
    drift = max(abs(x - y) for a, b in pairs for x, y in zip(a[1], b[1], strict=True))
    for (text_on, _), (text_off, _) in pairs:
        if text_on != text_off:
            print(f"differs: cache on {text_on!r} / off {text_off!r}")
    summary = {
        "requests": len(work),
        "prompt_tokens_per_pass": prompt_tokens,
        "wall_s_on": median(on),
        "wall_s_off": median(off),
        "off_over_on": median(off) / median(on),
        "hit_rate": median([r["hit_rate"] for r in runs if r["cache"] == "on"]),
        "greedy_answers_identical": f"{same}/{len(work)}",
        "max_option_logprob_difference": drift,
    }
    print(table(runs, ["round", "cache", "wall_s", "requests", "hit_rate", "prompt_tokens_computed"], "runs"))
    print()
    print(
        table([summary], list(summary), "prefix cache on vs off (Generate + Score per request, 8 at a time)")
    )
    path = write_results("prefix_cache", {"args": vars(args), "runs": runs, "summary": summary})
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.questions, args.rounds = (10, 1) if args.quick else (40, 2)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

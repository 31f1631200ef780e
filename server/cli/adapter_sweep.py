"""``hybrid-assistant adapters sweep``: train the style adapter on N examples (several seeds each),
serve them all, and measure the style score against N, with a plot."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.process import ServerProcess

DEMO_DIR = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo"


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def sweep(
    sizes: Annotated[str, typer.Option(help="Training set sizes N.")] = "1,10,50,100",
    seeds: Annotated[str, typer.Option(help="Seeds per size (subset and initialisation).")] = "0,1,2",
    data: Annotated[Path, typer.Option(help="Style training JSONL.")] = DEMO_DIR / "style_train.jsonl",
    style_spec: Annotated[Path, typer.Option(help="Style spec the score checks.")] = DEMO_DIR
    / "style_spec.json",
    questions: Annotated[
        Path, typer.Option(help="Eval JSONL of held-out questions (none may be in the training data).")
    ] = DEMO_DIR / "test.jsonl",
    strata: Annotated[str, typer.Option(help="Dataset strata to ask.")] = "control,kb",
    max_questions: Annotated[int, typer.Option(help="Questions asked of each adapter.")] = 64,
    data_dir: Annotated[Path, typer.Option(help="Data dir (model cache).")] = Path("data/demo"),
    out: Annotated[Path, typer.Option(help="Output folder (adapters, JSON, plot).")] = Path("reports/sweep"),
    epochs: Annotated[int | None, typer.Option(help="Override the style recipe's epochs.")] = None,
) -> None:
    """Style score (mean and spread over seeds) against the number of training examples."""
    from hybrid_assistant.adapters.data import load_examples, take_subset
    from hybrid_assistant.adapters.demo import STYLE
    from hybrid_assistant.adapters.training import train_adapter
    from hybrid_assistant.eval.arms import Arm
    from hybrid_assistant.eval.dataset import load_dataset, load_style_spec
    from hybrid_assistant.eval.runner import RunConfig, Runner
    from hybrid_assistant.eval.sweep import plot, summarise
    from hybrid_assistant.server.cli.adapter_training import _base_model, _settings, _setup

    _setup(None)
    size_list, seed_list = _ints(sizes), _ints(seeds)
    examples = load_examples(data)
    spec = load_style_spec(style_spec)
    wanted = set(strata.split(","))
    items = [i for i in load_dataset(questions) if i.stratum in wanted][:max_questions]
    trained = {e.messages[0].content for e in examples if e.messages}
    leaked = [i.id for i in items if i.text in trained]
    if leaked:
        raise typer.BadParameter(f"questions {leaked} are in the training data")
    settings = _settings(data_dir, None, None)
    base = _base_model(settings)
    config = STYLE.config if epochs is None else dataclasses.replace(STYLE.config, epochs=epochs)
    root = out / "adapters"
    started = time.perf_counter()
    arms: dict[str, tuple[int, int]] = {"base": (0, 0)}
    train_log = []
    for size in size_list:
        for seed in seed_list:
            name = f"style-n{size}-s{seed}"
            subset = take_subset(examples, min(size, len(examples)), seed)
            result = train_adapter(
                subset,
                base,
                root / name,
                dataclasses.replace(config, seed=seed),
                purpose=f"sweep N={size}",
                overwrite=True,
                progress=False,
            )
            arms[f"adapter:{name}"] = (size, seed)
            train_log.append({"name": name, "size": size, "seed": seed, "wall_s": result.wall_s})
            typer.echo(f"trained {name} in {result.wall_s:.0f} s")
    train_s = time.perf_counter() - started
    preload = [
        a
        for arm in arms
        if arm != "base"
        for a in ("--preload", f"{arm.split(':', 1)[1]}={arm.split(':', 1)[1]}")
    ]
    server = ServerProcess(
        [
            "--data-dir",
            str(data_dir),
            "--adapter-root",
            str(root),
            "--max-resident-adapters",
            str(len(arms)),
            *preload,
        ],
        log=out / "server.log",
    )
    try:
        server.wait_ready()
        runner = Runner(RunConfig(target=server.target, max_tokens=48, score_options=False))
        records = asyncio.run(
            runner.run(items, [Arm.make(None if a == "base" else a.split(":", 1)[1]) for a in arms])
        )
    finally:
        server.stop()
    points = summarise(records, arms, spec)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "style": spec.name,
        "questions": len(items),
        "train_s": train_s,
        "answer_s": runner.stats.wall_s,
        "points": [p.to_dict() for p in points],
        "trained": train_log,
        "config": config.to_dict(),
    }
    (out / "sweep.json").write_text(json.dumps(summary, indent=2))
    png = plot(points, out / "sweep.png", f"{spec.name}: style score vs training examples")
    typer.echo("\n N     mean   sd     min    max")
    for p in points:
        label = "base" if p.size == 0 else str(p.size)
        typer.echo(f" {label:<5} {p.mean:.3f}  {p.sd:.3f}  {min(p.scores):.3f}  {max(p.scores):.3f}")
    typer.echo(f"\nplot: {png.resolve()}\njson: {(out / 'sweep.json').resolve()}")

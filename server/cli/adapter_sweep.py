"""``hybrid-assistant adapters sweep``: style score against the number of training examples.

The flags become a :class:`~hybrid_assistant.eval.sweep.SweepConfig`; the work is
:func:`~hybrid_assistant.eval.sweep.run_sweep`'s. This command resolves the base model,
prints the table and where the plot and JSON are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.server.cli.training_setup import base_model, local_settings, setup_training


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
    setup_training(None)  # before anything imports torch
    from hybrid_assistant.eval.sweep import SweepConfig, SweepInputError, run_sweep

    config = SweepConfig(
        sizes=tuple(_ints(sizes)),
        seeds=tuple(_ints(seeds)),
        data=data,
        style_spec=style_spec,
        questions=questions,
        strata=tuple(strata.split(",")),
        max_questions=max_questions,
        data_dir=data_dir,
        out=out,
        epochs=epochs,
    )
    base = base_model(local_settings(data_dir, None, None))
    try:
        summary = run_sweep(config, base, notify=typer.echo)
    except SweepInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo("\n N     mean   sd     min    max")
    for p in summary.points:
        label = "base" if p.size == 0 else str(p.size)
        typer.echo(f" {label:<5} {p.mean:.3f}  {p.sd:.3f}  {min(p.scores):.3f}  {max(p.scores):.3f}")
    typer.echo(f"\nplot: {summary.plot_path.resolve()}\njson: {summary.json_path.resolve()}")

"""``hybrid-assistant adapters sweep``: format validity against the number of examples, trained or in context.

The flags become a :class:`~hybrid_assistant.eval.sweep.SweepConfig`; the work is
:func:`~hybrid_assistant.eval.sweep.run_sweep`'s. This command resolves the base model,
prints one table per curve and where the plots and JSON are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.server.cli.sweep_options import (
    QUESTIONS,
    STYLE_DATA,
    STYLE_SPEC,
    DataOption,
    QuestionsOption,
    StrataOption,
    StyleSpecOption,
    ints,
)
from hybrid_assistant.server.cli.training_setup import base_model, local_settings, setup_training


def sweep(
    sizes: Annotated[str, typer.Option(help="Training set sizes N.")] = "1,10,50,100",
    seeds: Annotated[
        str, typer.Option(help="Seeds per N (subset and initialisation) and per K (exemplar draw).")
    ] = "0,1,2",
    data: DataOption = STYLE_DATA,
    style_spec: StyleSpecOption = STYLE_SPEC,
    questions: QuestionsOption = QUESTIONS,
    strata: StrataOption = "control,kb",
    max_questions: Annotated[
        int, typer.Option(help="Questions asked of each adapter and few-shot arm.")
    ] = 64,
    data_dir: Annotated[Path, typer.Option(help="Data dir (model cache).")] = Path("data/demo"),
    out: Annotated[Path, typer.Option(help="Output folder (adapters, JSON, plots).")] = Path("reports/sweep"),
    epochs: Annotated[
        int | None,
        typer.Option(help="Override the style recipe's epochs (fixed-epochs curve, default step budget)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Optimiser steps of every fixed-steps run (default: the recipe's steps at the largest N)."
        ),
    ] = None,
    fixed_epochs: Annotated[
        bool,
        typer.Option(help="Also train the recipe's fixed-epochs curve (fewer steps at smaller N)."),
    ] = True,
    exemplars: Annotated[Path, typer.Option(help="Style exemplars JSONL for the few-shot curve.")] = DEMO_DIR
    / "style_exemplars.jsonl",
    ks: Annotated[
        str, typer.Option(help="Exemplar counts K of the few-shot curve (0: base model; empty: none).")
    ] = "0,1,2,4,8",
) -> None:
    """Format validity (mean and spread over seeds) against examples: fine-tuned on N examples for
    the same number of steps, for the recipe's epochs, and K exemplars in context (few-shot)."""
    setup_training(None)  # before anything imports torch
    from hybrid_assistant.eval.sweep import (
        SERIES_LABELS,
        SweepConfig,
        SweepInputError,
        load_inputs,
        run_sweep,
        sweep_recipe,
    )

    config = SweepConfig(
        sizes=tuple(ints(sizes)),
        seeds=tuple(ints(seeds)),
        data=data,
        style_spec=style_spec,
        questions=questions,
        strata=tuple(strata.split(",")),
        max_questions=max_questions,
        data_dir=data_dir,
        out=out,
        epochs=epochs,
        steps=steps,
        fixed_epochs=fixed_epochs,
        exemplars=exemplars,
        ks=tuple(ints(ks)),
    )
    try:
        load_inputs(config, sweep_recipe(config))  # every input problem before the base model
    except SweepInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    base = base_model(local_settings(data_dir, None, None))
    try:
        summary = run_sweep(config, base, notify=typer.echo)
    except SweepInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"\nstep budget: {summary.step_budget} ({summary.step_budget_source})")
    for name, points in summary.series.items():
        typer.echo(
            f"\n{SERIES_LABELS[name]}\n {'K' if name == 'fewshot' else 'N':<5} mean   sd     min    max"
        )
        for p in points:
            label = "base" if p.size == 0 else str(p.size)
            typer.echo(f" {label:<5} {p.mean:.3f}  {p.sd:.3f}  {min(p.scores):.3f}  {max(p.scores):.3f}")
    typer.echo(f"\nplot: {summary.plot_path.resolve()}\njson: {summary.json_path.resolve()}")
    if summary.curves_path:
        typer.echo(f"training curves: {summary.curves_path.resolve()}")

"""``hybrid-assistant adapters sweep-context``: format validity with and without retrieval against
the share of style training examples under a retrieval prompt.

The flags become a :class:`~hybrid_assistant.eval.context_sweep.ContextSweepConfig`; the work is
:func:`~hybrid_assistant.eval.context_sweep.run_context_sweep`'s. This command resolves the base
model, prints one table (share | valid without rag | valid with rag@K | retention | val loss |
correct without and with rag@K | the difference in correct answers under rag@K against share 0),
the share selected on validation loss, and where the plots and JSON are.
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
    floats,
    ints,
)
from hybrid_assistant.server.cli.training_setup import base_model, local_settings, setup_training


def sweep_context(
    shares: Annotated[
        str, typer.Option(help="Shares of training examples under a retrieval prompt (0 to 1).")
    ] = "0,0.25,0.5",
    seeds: Annotated[
        str, typer.Option(help="Seeds per share (which examples get context, passages, initialisation).")
    ] = "0",
    data: DataOption = STYLE_DATA,
    style_spec: StyleSpecOption = STYLE_SPEC,
    questions: QuestionsOption = QUESTIONS,
    strata: StrataOption = "control,kb",
    max_questions: Annotated[int, typer.Option(help="Questions asked of each arm.")] = 64,
    documents: Annotated[
        Path, typer.Option(help="Document folder: training passages, and what the server retrieves from.")
    ] = DEMO_DIR / "kb",
    context_passages: Annotated[
        int, typer.Option(help="Passages in each context-augmented training example.")
    ] = 3,
    rag_k: Annotated[int, typer.Option(help="Passages retrieved per question in the +rag@K arms.")] = 3,
    data_dir: Annotated[Path, typer.Option(help="Data dir (model cache, knowledge index).")] = Path(
        "data/demo"
    ),
    out: Annotated[Path, typer.Option(help="Output folder (adapters, JSON, plots).")] = Path(
        "reports/sweep-context"
    ),
) -> None:
    """Format validity without and with retrieval (mean and spread over seeds) against the share of
    style examples trained under a retrieval prompt; selects the share with the lowest validation
    loss on held-out training examples (half bare, half under context)."""
    setup_training(None)  # before anything imports torch
    from hybrid_assistant.eval.context_sweep import (
        ContextSweepConfig,
        load_context_inputs,
        run_context_sweep,
        sweep_recipe,
    )
    from hybrid_assistant.eval.sweep import SweepInputError

    config = ContextSweepConfig(
        shares=tuple(floats(shares)),
        seeds=tuple(ints(seeds)),
        data=data,
        style_spec=style_spec,
        questions=questions,
        strata=tuple(strata.split(",")),
        max_questions=max_questions,
        documents=documents,
        context_passages=context_passages,
        rag_k=rag_k,
        data_dir=data_dir,
        out=out,
    )
    try:
        load_context_inputs(config, sweep_recipe(config))  # every input problem before the base model
    except SweepInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    base = base_model(local_settings(data_dir, None, None))
    try:
        summary = run_context_sweep(config, base, notify=typer.echo)
    except SweepInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    rag = f"rag@{summary.rag_k}"
    typer.echo(
        f"\n{summary.style}: {summary.questions} questions; base {summary.base:.3f}, {rag} {summary.rag:.3f}"
        f" valid; correct: base {_num(summary.knowledge_base)}, {rag} {_num(summary.knowledge_rag)}"
    )
    typer.echo(
        f" {'share':<6} {'valid (no rag)':<15} {f'valid ({rag})':<15} {'retention':<10} {'val loss':<9} "
        f"{'correct':<8} {f'correct ({rag})':<14} vs share 0 ({rag}, seed {summary.sweep.seeds[0]})"
    )
    for r in summary.shares:
        without = f"{r.without_rag.mean:.3f}±{r.without_rag.sd:.3f}"
        with_rag = f"{r.with_rag.mean:.3f}±{r.with_rag.sd:.3f}"
        d = r.versus_plain[0].get("contains") if r.versus_plain else None
        delta = "-" if d is None else f"{d['estimate']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"
        typer.echo(
            f" {r.share:<6g} {without:<15} {with_rag:<15} {_num(r.retention):<10} {_num(r.val_loss, 4):<9} "
            f"{_num(r.knowledge_without_rag):<8} {_num(r.knowledge_with_rag):<14} {delta}"
        )
    selected = (
        "none (no validation loss)" if summary.selected_share is None else f"{summary.selected_share:g}"
    )
    typer.echo(
        f"\nselected share: {selected} (lowest mean validation loss on held-out training examples, "
        "half bare, half under context; no eval answers)"
    )
    typer.echo(f"\nplot: {summary.plot_path.resolve()}\njson: {summary.json_path.resolve()}")
    if summary.curves_path:
        typer.echo(f"training curves: {summary.curves_path.resolve()}")


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

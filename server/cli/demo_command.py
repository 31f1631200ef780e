"""``hybrid-assistant demo`` (``make demo``): the product's main job, end to end, in one command.

The flags become a :class:`~hybrid_assistant.server.demo.DemoConfig`; the five steps (model,
adapters, server, knowledge base, eval) are :func:`~hybrid_assistant.server.demo.run_demo`'s. This
command prints each step as it goes, then the eval's table and the report's path, as
``hybrid-assistant eval`` does, and the time each step took.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.server.cli.eval_command import eval_errors, print_summary
from hybrid_assistant.server.cli.training_setup import fail, setup_training
from hybrid_assistant.server.demo import DEMO_ARMS, DemoAdapterError, DemoConfig, run_demo


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Demo data directory (model cache, adapters, index).")
    ] = Path("data/demo"),
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/demo"),
    arms: Annotated[str, typer.Option(help="Arms to evaluate.")] = DEMO_ARMS,
    limit: Annotated[
        int,
        typer.Option(help="Questions: a deterministic subset keeping each stratum's share; 0 = all."),
    ] = 100,
    dtype: Annotated[str, typer.Option(help="Server dtype: float32 (reproducible) or bfloat16.")] = "float32",
    max_tokens: Annotated[int, typer.Option(help="Answer length limit for every arm.")] = 48,
    sequential_sample: Annotated[int, typer.Option(help="Answers timed one at a time (speed-up).")] = 16,
    cost_sample: Annotated[
        int, typer.Option(help="Items asked of each arm alone to price it (cost, break-even; 0 = skip).")
    ] = 10,
) -> None:
    """Train/reuse the demo adapters, ingest the demo knowledge base, evaluate 14 arms, write the
    report. With --arms, only the demo adapters those arms use are trained and loaded."""
    setup_training(None)  # the demo trains adapters: before anything imports torch
    config = DemoConfig(data_dir, out, arms, limit, dtype, max_tokens, sequential_sample, cost_sample)
    try:
        with eval_errors():
            result = run_demo(config, notify=typer.echo)
    except DemoAdapterError as exc:
        fail(str(exc))
    print_summary(result.eval)
    typer.echo("\nphases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.phases_s.items()))

"""``hybrid-assistant eval``: every arm on every question, scored for knowledge and style.

The flags become an :class:`~hybrid_assistant.eval.workflow.EvalConfig`; the work is
:func:`~hybrid_assistant.eval.workflow.run_eval`'s. This module maps its errors to exit codes
and prints the summary (the demo prints it the same way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hybrid_assistant.server.cli.options import TLS_OPTION_NAMES, Connection, connection_options

if TYPE_CHECKING:
    from hybrid_assistant.eval.workflow import RunSummary


@contextlib.contextmanager
def eval_errors() -> Iterator[None]:
    """Unreadable inputs exit 2 with one line, a bad TLS file is a usage error (2), no server exits 1."""
    from hybrid_assistant.client import TlsOptionError
    from hybrid_assistant.eval.runner import EvalRunError
    from hybrid_assistant.eval.workflow import EvalInputError

    try:
        yield
    except EvalInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except TlsOptionError as exc:
        raise typer.BadParameter(str(exc)) from None
    except EvalRunError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def print_summary(summary: RunSummary) -> None:
    """The terminal table, one line of counts and speed, and where the HTML report is."""
    from hybrid_assistant.eval.report import terminal_table

    stats, speedup = summary.stats, summary.speedup_vs_one_at_a_time
    typer.echo(terminal_table(summary.analysis))
    typer.echo(
        f"\n{summary.items} items x {len(summary.arms)} arms: {stats.requests} answers "
        f"({stats.cached} cached, {stats.failed} failed) in {stats.wall_s:.1f} s"
        + (f"; {speedup:.1f}x faster than one at a time" if speedup is not None else "")
    )
    typer.echo(f"report: {summary.reports['html'].resolve()}")


@connection_options(admin=True)
def evaluate(
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="Eval JSONL (see eval/dataset.py).")],
    arms: Annotated[
        str,
        typer.Option(
            help="Comma-separated: base, adapter:NAME, prompt (the style spec's description as a system "
            "instruction), fewshot@K (K style exemplars as earlier turns), rag, rag@K, oracle, and "
            "combinations: adapter:NAME+rag, prompt+rag@3, fewshot@4+oracle ..."
        ),
    ] = "base,rag",
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/eval"),
    style_spec: Annotated[
        Path | None, typer.Option(help="Style spec JSON (format checks; the prompt arms' instruction).")
    ] = None,
    exemplars: Annotated[
        Path | None, typer.Option(help="Style exemplars JSONL (similarity; the fewshot@K arms' turns).")
    ] = None,
    documents: Annotated[
        list[Path] | None, typer.Option(help="Files/folders with the gold documents (for oracle arms).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit, same for every arm.")] = 64,
    concurrency: Annotated[int, typer.Option(help="Requests in flight (lets the server batch).")] = 32,
    limit: Annotated[
        int | None,
        typer.Option(help="Only N items: a deterministic subset keeping each stratum's share."),
    ] = None,
    score_options: Annotated[
        bool, typer.Option(help="Also score multiple-choice options by likelihood.")
    ] = True,
    cache: Annotated[bool, typer.Option(help="Reuse cached answers (by item, arm and fingerprints).")] = True,
    sequential_sample: Annotated[
        int, typer.Option(help="Answers asked one at a time to measure the batching speed-up (0 = skip).")
    ] = 0,
    cost_sample: Annotated[
        int,
        typer.Option(
            help="Items asked of each arm alone after the main run, to price it: cost table, "
            "break-even, cost-ranked decision (0 = skip)."
        ),
    ] = 0,
    cost_concurrency: Annotated[
        int,
        typer.Option(help="Requests in flight in the cost probe (1: latency = machine time per request)."),
    ] = 1,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to be SERVING before giving up.")
    ] = 120.0,
    connection: Connection = Connection(),
) -> None:
    """Evaluate arms against a running server; write JSON, Markdown and HTML reports."""
    from hybrid_assistant.eval.workflow import EvalConfig, run_eval

    config = EvalConfig(
        dataset=dataset,
        arms=arms,
        out=out,
        style_spec=style_spec,
        exemplars=exemplars,
        documents=documents or [],
        max_tokens=max_tokens,
        concurrency=concurrency,
        limit=limit,
        score_options=score_options,
        cache=cache,
        sequential_sample=sequential_sample,
        cost_sample=cost_sample,
        cost_concurrency=cost_concurrency,
        resamples=resamples,
        ready_timeout=ready_timeout,
        target=connection.target,
        token=connection.token,
        tls=connection.tls.tls,
        tls_ca=connection.tls.ca,
        tls_client_cert=connection.tls.client_cert,
        tls_client_key=connection.tls.client_key,
        tls_option_names=TLS_OPTION_NAMES,
    )
    with eval_errors():
        summary = run_eval(config)
    print_summary(summary)

"""``hybrid-assistant eval``: every arm on every question, scored for knowledge and style."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.server.cli.options import (
    ClientTls,
    Target,
    Tls,
    TlsCa,
    TlsClientCert,
    TlsClientKey,
    Token,
)


def evaluate(
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="Eval JSONL (see eval/dataset.py).")],
    arms: Annotated[
        str,
        typer.Option(help="Comma-separated: base, adapter:NAME, rag, rag@K, oracle, adapter:NAME+rag ..."),
    ] = "base,rag",
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/eval"),
    style_spec: Annotated[Path | None, typer.Option(help="Style spec JSON (format checks).")] = None,
    exemplars: Annotated[Path | None, typer.Option(help="Style exemplars JSONL (similarity).")] = None,
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
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to be SERVING before giving up.")
    ] = 120.0,
    target: Target = "localhost:50051",
    token: Token = None,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_client_cert: TlsClientCert = None,
    tls_client_key: TlsClientKey = None,
) -> None:
    """Evaluate arms against a running server; write JSON, Markdown and HTML reports."""
    from hybrid_assistant.eval.analysis import analyse
    from hybrid_assistant.eval.arms import ArmError, parse_arms
    from hybrid_assistant.eval.dataset import (
        DatasetError,
        load_dataset,
        load_exemplars,
        load_style_spec,
        stratified_subset,
    )
    from hybrid_assistant.eval.passages import load_passages
    from hybrid_assistant.eval.report import terminal_table, write_reports
    from hybrid_assistant.eval.runner import EvalRunError, RunConfig, Runner, sequential_probe

    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        items = load_dataset(dataset)
        items = items if limit is None else stratified_subset(items, limit)
        arm_list = parse_arms(arms)
        spec = load_style_spec(style_spec) if style_spec else None
        exemplar_texts = load_exemplars(exemplars) if exemplars else []
    except (DatasetError, ArmError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # A missing or unpaired TLS file is a usage error (exit 2), as in the other client commands.
    ClientTls(tls, tls_ca, tls_client_cert, tls_client_key).client_kwargs()
    passages = load_passages(documents or [])
    config = RunConfig(
        target=target,
        token=token,
        max_tokens=max_tokens,
        concurrency=concurrency,
        score_options=score_options,
        cache_path=(out / "answers-cache.sqlite") if cache else None,
        ready_timeout_s=ready_timeout,
        tls=tls,
        tls_ca=tls_ca,
        tls_client_cert=tls_client_cert,
        tls_client_key=tls_client_key,
    )
    runner = Runner(config, passages)
    phases["load_s"] = time.perf_counter() - t0
    try:
        records = asyncio.run(runner.run(items, arm_list))
        sequential = (
            asyncio.run(sequential_probe(config, items, arm_list, sequential_sample, passages))
            if sequential_sample
            else None
        )
    except EvalRunError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        runner.cache.close()
    phases["answer_s"] = runner.stats.wall_s
    t1 = time.perf_counter()
    embedder = None
    if exemplar_texts:
        from hybrid_assistant.retrieval.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    analysis = analyse(
        items, records, arm_list, spec, exemplars=exemplar_texts, embedder=embedder, n_resamples=resamples
    )
    phases["analyse_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    from hybrid_assistant.eval.records import dump_records

    out.mkdir(parents=True, exist_ok=True)
    dump_records(out / "answers.jsonl", records)
    paths = write_reports(analysis, out)
    phases["report_s"] = time.perf_counter() - t2
    run = {
        "items": len(items),
        "arms": [a.name for a in arm_list],
        "requests": runner.stats.requests,
        "cached": runner.stats.cached,
        "failed": runner.stats.failed,
        "phases_s": phases,
        "server": runner.stats.server,
    }
    if sequential is not None:
        run["sequential_s_per_answer"] = sequential
        asked = runner.stats.requests - runner.stats.cached
        if asked:  # answers from the cache took no time: compare only what was asked
            run["concurrent_s_per_answer"] = runner.stats.wall_s / asked
            run["speedup_vs_one_at_a_time"] = sequential * asked / max(runner.stats.wall_s, 1e-9)
    (out / "run.json").write_text(json.dumps(run, indent=2))
    typer.echo(terminal_table(analysis))
    typer.echo(
        f"\n{len(items)} items x {len(arm_list)} arms: {runner.stats.requests} answers "
        f"({runner.stats.cached} cached, {runner.stats.failed} failed) in {runner.stats.wall_s:.1f} s"
        + (
            f"; {run['speedup_vs_one_at_a_time']:.1f}x faster than one at a time"
            if "speedup_vs_one_at_a_time" in run
            else ""
        )
    )
    typer.echo(f"report: {paths['html'].resolve()}")

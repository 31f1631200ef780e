"""The eval as one call: :func:`run_eval` asks a running server every (item, arm), scores the
answers, writes the reports, and returns a :class:`RunSummary`.

``hybrid-assistant eval`` parses its flags into an :class:`EvalConfig` and prints the summary;
the demo calls the same function. Everything reaches the model through the gRPC API
(:mod:`hybrid_assistant.eval.runner`), so the numbers are what clients get.

Files written into ``out``: ``answers.jsonl`` (every record), ``report.json``/``.md``/``.html``,
``run.json`` (counts, phase timings, the server's identity, the batching speed-up) and, with
``cache``, ``answers-cache.sqlite``.

Errors, by when they happen: :class:`EvalInputError` (dataset, arms, style spec or exemplars
cannot be read), :class:`~hybrid_assistant.client.TlsOptionError` (a TLS file cannot be read or
is unpaired), :class:`~hybrid_assistant.eval.runner.EvalRunError` (no ready server, an arm's
adapter is not loaded). Nothing is written before the answers are in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hybrid_assistant.client import tls_options
from hybrid_assistant.eval.analysis import EvalAnalysis, analyse
from hybrid_assistant.eval.arms import ArmError, parse_arms
from hybrid_assistant.eval.cost import ArmCost, costs_to_dict, measure_costs
from hybrid_assistant.eval.dataset import (
    DatasetError,
    load_dataset,
    load_style_exemplars,
    load_style_spec,
    stratified_subset,
)
from hybrid_assistant.eval.decision import decide
from hybrid_assistant.eval.passages import load_passages
from hybrid_assistant.eval.prompting import prompting_problems
from hybrid_assistant.eval.records import AnswerRecord, dump_records
from hybrid_assistant.eval.report import write_reports
from hybrid_assistant.eval.runner import RunConfig, Runner, RunStats, sequential_probe


class EvalInputError(ValueError):
    """The dataset, the arms, the style spec or the exemplars cannot be read or are invalid."""


@dataclass(frozen=True)
class EvalConfig:
    """One eval run. Field names follow ``hybrid-assistant eval``'s flags."""

    dataset: Path
    """Eval JSONL (see :mod:`hybrid_assistant.eval.dataset`)."""
    arms: str = "base,rag"
    """Comma-separated arms: base, adapter:NAME, prompt, fewshot@K, rag, rag@K, oracle, and
    combinations such as adapter:NAME+rag, prompt+rag@3, fewshot@4+oracle. ``prompt`` needs a style
    spec with a description; ``fewshot@K`` needs K exemplars with questions."""
    out: Path = Path("reports/eval")
    """Report directory."""
    style_spec: Path | None = None
    """Style spec JSON (format checks; its description is the ``prompt`` arms' instruction)."""
    exemplars: Path | None = None
    """Style exemplars JSONL (similarity, which loads the embedder; the ``fewshot@K`` arms' turns)."""
    documents: Sequence[Path] = ()
    """Files/folders with the gold documents (for oracle arms)."""
    max_tokens: int = 64
    """Answer length limit, the same for every arm."""
    concurrency: int = 32
    """Requests in flight (lets the server batch)."""
    limit: int | None = None
    """Only N items: a deterministic subset keeping each stratum's share."""
    score_options: bool = True
    """Also score multiple-choice options by likelihood."""
    cache: bool = True
    """Reuse cached answers (by item, arm and fingerprints), kept in ``out``."""
    sequential_sample: int = 0
    """Answers asked one at a time to measure the batching speed-up (0 = skip)."""
    cost_sample: int = 0
    """Items asked of each arm alone, after the main run, to price it (0 = skip: no cost table,
    break-even or cost-ranked recommendation)."""
    cost_concurrency: int = 1
    """Requests in flight in the cost probe. At 1, a request's latency is the machine time it
    costs, which is what the break-even divides the training time by."""
    resamples: int = 2000
    """Bootstrap resamples."""
    ready_timeout: float = 120.0
    """Seconds to wait for the server to be SERVING before giving up."""
    target: str = "localhost:50051"
    """Server address host:port."""
    token: str | None = None
    """Admin bearer token (not needed to evaluate)."""
    tls: bool = False
    """Connect with TLS, trusting the system roots (or ``tls_ca``)."""
    tls_ca: Path | None = None
    """PEM CA (or self-signed server certificate) to trust instead of the system roots; implies TLS."""
    tls_client_cert: Path | None = None
    """PEM client certificate chain, for servers that require mutual TLS (with ``tls_client_key``)."""
    tls_client_key: Path | None = None
    """PEM private key of ``tls_client_cert``."""
    progress: bool = True
    """Show a progress bar while answers come in."""
    tls_option_names: Mapping[str, str] | None = None
    """How TLS file errors name the settings (a command line passes its flags; default: field names)."""

    def run_config(self) -> RunConfig:
        return RunConfig(
            target=self.target,
            token=self.token,
            max_tokens=self.max_tokens,
            concurrency=self.concurrency,
            score_options=self.score_options,
            cache_path=(self.out / "answers-cache.sqlite") if self.cache else None,
            progress=self.progress,
            ready_timeout_s=self.ready_timeout,
            tls=self.tls,
            tls_ca=self.tls_ca,
            tls_client_cert=self.tls_client_cert,
            tls_client_key=self.tls_client_key,
        )


@dataclass
class RunSummary:
    """What one eval run produced: the analysis, every answer, counts, timings, the report files."""

    items: int
    arms: list[str]
    analysis: EvalAnalysis
    records: list[AnswerRecord]
    stats: RunStats
    phases_s: dict[str, float]
    reports: dict[str, Path]
    """``json``, ``md`` and ``html`` reports."""
    sequential_s_per_answer: float | None = None

    @property
    def asked(self) -> int:
        """Answers the server was asked for (cached answers took no time)."""
        return self.stats.requests - self.stats.cached

    @property
    def speedup_vs_one_at_a_time(self) -> float | None:
        if self.sequential_s_per_answer is None or not self.asked:
            return None
        return self.sequential_s_per_answer * self.asked / max(self.stats.wall_s, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``run.json``."""
        run: dict[str, Any] = {
            "items": self.items,
            "arms": self.arms,
            "requests": self.stats.requests,
            "cached": self.stats.cached,
            "failed": self.stats.failed,
            "phases_s": self.phases_s,
            "server": self.stats.server,
            "prefix_cache": self.stats.prefix_cache,
        }
        if self.sequential_s_per_answer is not None:
            run["sequential_s_per_answer"] = self.sequential_s_per_answer
            if self.asked:  # answers from the cache took no time: compare only what was asked
                run["concurrent_s_per_answer"] = self.stats.wall_s / self.asked
                run["speedup_vs_one_at_a_time"] = self.speedup_vs_one_at_a_time
        return run

    def write_run_json(self, out: Path, **extra: Any) -> Path:
        """``run.json`` in ``out``; ``extra`` keys (the demo's phases) come after the run's own."""
        path = out / "run.json"
        path.write_text(json.dumps({**self.to_dict(), **extra}, indent=2))
        return path


def run_eval(config: EvalConfig) -> RunSummary:
    """Evaluate ``config.arms`` against the server at ``config.target``; write the reports."""
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        items = load_dataset(config.dataset)
        items = items if config.limit is None else stratified_subset(items, config.limit)
        arm_list = parse_arms(config.arms)
        spec = load_style_spec(config.style_spec) if config.style_spec else None
        exemplars = load_style_exemplars(config.exemplars) if config.exemplars else []
    except (DatasetError, ArmError, OSError, ValueError) as exc:
        raise EvalInputError(str(exc)) from exc
    problems = prompting_problems(items, arm_list, spec, exemplars)
    # Checked before any answer: a bad probe setting must not fail the run after the main pass.
    for name, value, least in (
        ("cost_sample", config.cost_sample, 0),
        ("cost_concurrency", config.cost_concurrency, 1),
    ):
        if value < least:
            problems.append(f"{name} must be at least {least}, got {value}")
    if problems:
        raise EvalInputError("; ".join(problems))
    exemplar_texts = [e.output for e in exemplars]
    # The TLS files are read once up front, so a bad one fails before any work, named as configured.
    tls_options(
        tls=config.tls,
        ca=config.tls_ca,
        client_cert=config.tls_client_cert,
        client_key=config.tls_client_key,
        names=config.tls_option_names,
    )
    passages = load_passages(config.documents)
    run_config = config.run_config()
    runner = Runner(run_config, passages, style=spec, exemplars=exemplars)
    phases["load_s"] = time.perf_counter() - t0
    try:
        records = asyncio.run(runner.run(items, arm_list))
        sequential = (
            asyncio.run(
                sequential_probe(
                    run_config,
                    items,
                    arm_list,
                    config.sequential_sample,
                    passages,
                    style=spec,
                    exemplars=exemplars,
                )
            )
            if config.sequential_sample
            else None
        )
        costs: dict[str, ArmCost] = {}
        if config.cost_sample:
            t_cost = time.perf_counter()

            def runner_for_costs(**overrides: Any) -> Runner:
                return Runner(replace(run_config, **overrides), passages, style=spec, exemplars=exemplars)

            costs = asyncio.run(
                measure_costs(runner_for_costs, items, arm_list, config.cost_sample, config.cost_concurrency)
            )
            phases["cost_probe_s"] = time.perf_counter() - t_cost
    finally:
        runner.cache.close()
    phases["answer_s"] = runner.stats.wall_s
    t1 = time.perf_counter()
    embedder = None
    if exemplar_texts:
        from hybrid_assistant.retrieval.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    analysis = analyse(
        items,
        records,
        arm_list,
        spec,
        exemplars=exemplar_texts,
        embedder=embedder,
        n_resamples=config.resamples,
    )
    note = runner.stats.prefix_cache_note()
    if note:
        analysis.notes.append(note)
    # The adapters' metadata (training curves, training time) as the server lists it.
    analysis.meta["adapters"] = runner.stats.server.get("adapters", {})
    if costs:
        analysis.costs = costs_to_dict(costs)
    analysis.decision = decide(analysis, costs).to_dict()
    phases["analyse_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    dump_records(config.out / "answers.jsonl", records)
    reports = write_reports(analysis, config.out)
    phases["report_s"] = time.perf_counter() - t2
    summary = RunSummary(
        items=len(items),
        arms=[a.name for a in arm_list],
        analysis=analysis,
        records=records,
        stats=runner.stats,
        phases_s=phases,
        reports=reports,
        sequential_s_per_answer=sequential,
    )
    summary.write_run_json(config.out)
    return summary

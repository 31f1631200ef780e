"""How much context in the style data: format validity with and without retrieval against the share
of training examples put under the server's retrieval prompt (the ``context`` recipe).

A style adapter trained on bare questions can lose its format when the server puts retrieved
passages into the system message. :func:`run_context_sweep` trains one style adapter per share
and seed, each on the same training pool with ``share`` of it (seeded) rewritten by
:func:`hybrid_assistant.adapters.context_data.context_augmented`, and asks each the held-out
questions twice through one server: ``adapter:NAME`` (no context) and ``adapter:NAME+rag@K``
(passages retrieved from the ingested documents folder); ``base`` and ``rag@K`` once each.
Scores are the eval's format validity (:func:`hybrid_assistant.eval.sweep.score_arm`) and, from the
eval's own analysis of the same answers (:func:`hybrid_assistant.eval.analysis.analyse`), knowledge
(``contains``) without and with retrieval, style retention with its interval, and each share's
paired difference against share 0 under retrieval: does training under context cost knowledge?

**The default share is chosen on training data only.** One validation set serves every share:
``val_fraction`` of the training file held out with seed 0, then those examples bare *and* the
same examples all under a retrieval prompt (half bare, half under context). ``selected_share``
is the share with the lowest validation loss (mean over seeds); eval answers never enter that
choice, they only show what it buys.

Every run trains with the same recipe (default: the demo's style recipe at
``context_max_length(context_passages)``, so that a share of 0 and a share of 0.5 see the same
settings). Files written into ``out``: ``adapters/style-ctx<share%>-s<seed>``, ``server.log``,
``sweep-context.json``, ``analysis.json`` (the eval analysis of every arm), ``sweep-context.png``
and ``training_curves.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.eval.analysis import EvalAnalysis, analyse
from hybrid_assistant.eval.arms import Arm
from hybrid_assistant.eval.dataset import EvalItem, StyleSpec
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.eval.metrics.registry import PRIMARY_KNOWLEDGE
from hybrid_assistant.eval.records import AnswerRecord
from hybrid_assistant.eval.runner import RunConfig, Runner
from hybrid_assistant.eval.sweep import (
    MAX_TOKENS,
    PlannedAdapter,
    SweepInputError,
    SweepPoint,
    _trained_entry,
    plot_trained_curves,
    read_sweep_files,
    score_arm,
    sweep_server,
    to_points,
)

if TYPE_CHECKING:
    from hybrid_assistant.adapters.context_data import ContextRecipe
    from hybrid_assistant.adapters.data import ChatExample
    from hybrid_assistant.adapters.train_config import TrainResult
    from hybrid_assistant.retrieval.prompt_context import ContextPassage

log = logging.getLogger(__name__)

VALIDATION_SEED = 0
"""The split that holds the validation set out, and the passages drawn for its context half."""


@dataclass(frozen=True)
class ContextSweepConfig:
    """One context-share sweep. Field names follow ``hybrid-assistant adapters sweep-context``'s flags."""

    shares: tuple[float, ...] = (0.0, 0.25, 0.5)
    """Shares of the training examples put under a retrieval prompt (0: the plain style adapter)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds per share (which examples get context, which passages, initialisation)."""
    data: Path = DEMO_DIR / "style_train.jsonl"
    """Style training JSONL (the validation set is held out of it)."""
    style_spec: Path = DEMO_DIR / "style_spec.json"
    """Style spec the score checks."""
    questions: Path = DEMO_DIR / "test.jsonl"
    """Eval JSONL of held-out questions (none may be in the training data)."""
    strata: tuple[str, ...] = ("control", "kb")
    """Dataset strata to ask."""
    max_questions: int = 64
    """Questions asked of each arm."""
    documents: Path = DEMO_DIR / "kb"
    """Document folder: the passages of the training prompts, and what the server retrieves from."""
    context_passages: int = 3
    """Passages in each context-augmented training example."""
    rag_k: int = 3
    """Passages retrieved per question in the ``+rag@K`` arms."""
    data_dir: Path = Path("data/demo")
    """Data dir of the server that answers (model cache, knowledge index)."""
    out: Path = Path("reports/sweep-context")
    """Output folder (adapters, JSON, plots)."""
    recipe: TrainConfig | None = None
    """Training recipe of every run; None: the demo's style recipe at the context recipes' length."""


def adapter_name(share: float, seed: int) -> str:
    """``style-ctx<share x 100>-s<seed>``: ``style-ctx25-s0`` for share 0.25, seed 0."""
    return f"style-ctx{share * 100:.0f}-s{seed}"


def _percent(share: float) -> int:
    """The share as a whole percentage: the ``size`` of its :class:`SweepPoint`."""
    return round(share * 100)


@dataclass(frozen=True)
class ContextRun:
    """One training run: its share, seed, examples and the recipe recorded in its metadata."""

    plan: PlannedAdapter
    share: float
    recipe: ContextRecipe
    examples: list[ChatExample]


@dataclass(frozen=True)
class ContextSweepInputs:
    runs: list[ContextRun]
    validation: list[ChatExample]
    held_out: int
    """Training-file examples held out; the validation set is each of them bare and under context."""
    spec: StyleSpec
    items: list[EvalItem]


def load_context_inputs(config: ContextSweepConfig, recipe: TrainConfig) -> ContextSweepInputs:
    """Read and check everything, and build every run's training set, before any training;
    every problem at once."""
    from hybrid_assistant.adapters.context_data import (
        CONTEXT,
        ContextDataError,
        ContextRecipe,
        context_augmented,
        load_passages,
    )
    from hybrid_assistant.adapters.data import split_examples

    problems: list[str] = []
    if not config.shares:
        problems.append("no shares to sweep")
    bad = [s for s in config.shares if not 0.0 <= s <= 1.0]
    if bad:
        problems.append(f"shares {bad} must be in [0, 1]")
    names = [adapter_name(s, 0) for s in config.shares]
    clashing = sorted({s for s, n in zip(config.shares, names, strict=True) if names.count(n) > 1})
    if clashing:
        problems.append(f"shares {clashing} give the same adapter names (whole percentages)")
    if not config.seeds:
        problems.append("no seeds")
    if len(set(config.seeds)) != len(config.seeds):
        problems.append(f"seeds {list(config.seeds)} repeat")
    if not 1 <= config.context_passages <= 16:
        problems.append(f"context_passages must be from 1 to 16, got {config.context_passages!r}")
    if config.rag_k < 1:
        problems.append(f"rag_k must be >= 1, got {config.rag_k!r}")
    if not recipe.val_fraction > 0:
        problems.append("the recipe's val_fraction must be > 0: the share is chosen on validation loss")

    files = read_sweep_files(
        config.data, config.style_spec, config.questions, config.strata, config.max_questions
    )
    examples, spec, items = files.examples, files.spec, files.items
    problems += files.problems

    passages: list[ContextPassage] = []
    if not config.documents.is_dir():
        problems.append(f"documents folder {str(config.documents)!r} does not exist")
    else:
        try:
            passages = load_passages(config.documents)
        except ContextDataError as exc:
            problems.append(str(exc))

    pool = list(examples)
    held_out: list[ChatExample] = []
    validation: list[ChatExample] = []
    if recipe.val_fraction > 0 and examples:
        pool, held_out = split_examples(examples, recipe.val_fraction, VALIDATION_SEED)
        if not held_out:
            problems.append(f"{len(examples)} examples leave none to hold out for validation")
    runs: list[ContextRun] = []
    if passages and not problems:
        try:
            whole = ContextRecipe(CONTEXT, 1.0, config.context_passages, VALIDATION_SEED)
            validation = held_out + context_augmented(held_out, passages, whole)
            for share in config.shares:
                for seed in config.seeds:
                    context = ContextRecipe(CONTEXT, share, config.context_passages, seed)
                    run_examples = context_augmented(pool, passages, context)
                    plan = PlannedAdapter(
                        adapter_name(share, seed),
                        len(run_examples),
                        seed,
                        dataclasses.replace(recipe, seed=seed),
                    )
                    runs.append(ContextRun(plan, share, context, run_examples))
        except ContextDataError as exc:
            problems.append(str(exc))
    if problems or spec is None:
        raise SweepInputError("; ".join(problems))
    return ContextSweepInputs(runs, validation, len(held_out), spec, items)


@dataclass(frozen=True)
class ShareResult:
    """One share: validity without and with retrieval, validation loss, training time (over seeds)."""

    share: float
    without_rag: SweepPoint
    with_rag: SweepPoint
    val_losses: tuple[float | None, ...]
    train_s: tuple[float, ...]
    # Per seed, from the eval analysis: contains without and with rag@K, the retention interval,
    # and the paired difference against share 0 (same seed) under rag@K.
    knowledge_without: tuple[float, ...] = ()
    knowledge_with: tuple[float, ...] = ()
    retention_ci: tuple[tuple[float, float] | None, ...] = ()
    versus_plain: tuple[dict[str, Any], ...] = ()

    @property
    def retention(self) -> float | None:
        """Validity with retrieval over validity without (None when there is none without)."""
        return self.with_rag.mean / self.without_rag.mean if self.without_rag.mean else None

    @property
    def knowledge_without_rag(self) -> float | None:
        """Mean knowledge over seeds without retrieval (None when not measured)."""
        return _fmean(self.knowledge_without)

    @property
    def knowledge_with_rag(self) -> float | None:
        """Mean knowledge over seeds with ``rag@K`` (None when not measured)."""
        return _fmean(self.knowledge_with)

    @property
    def val_loss(self) -> float | None:
        """Mean validation loss over seeds (None if a run was not validated)."""
        losses = [v for v in self.val_losses if v is not None]
        return statistics.fmean(losses) if losses and len(losses) == len(self.val_losses) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "without_rag": self.without_rag.to_dict(),
            "with_rag": self.with_rag.to_dict(),
            "retention": self.retention,
            "val_loss": self.val_loss,
            "val_losses": list(self.val_losses),
            "train_s": statistics.fmean(self.train_s),
            "train_s_per_seed": [round(s, 2) for s in self.train_s],
            "knowledge_without_rag": self.knowledge_without_rag,
            "knowledge_with_rag": self.knowledge_with_rag,
            "knowledge_without_rag_per_seed": list(self.knowledge_without),
            "knowledge_with_rag_per_seed": list(self.knowledge_with),
            "retention_ci_per_seed": [list(c) if c else None for c in self.retention_ci],
            "versus_plain_per_seed": list(self.versus_plain),
        }


def _fmean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def select_share(results: Sequence[ShareResult]) -> float | None:
    """The share with the lowest mean validation loss (the smaller share on a tie)."""
    scored = [(r.val_loss, r.share) for r in results if r.val_loss is not None]
    return min(scored)[1] if scored else None


@dataclass
class ContextSweepSummary:
    """Per share: validity without and with ``rag@K``, retention, validation loss; the references."""

    style: str
    questions: int
    rag_k: int
    shares: list[ShareResult]
    base: float
    rag: float
    selected_share: float | None
    validation_examples: int
    held_out: int
    ingested: dict[str, int]
    errors: dict[str, int]
    """Failed requests per arm (counted as invalid answers); arms without any are left out."""
    train_s: float
    answer_s: float
    trained: list[dict[str, Any]]
    config: TrainConfig
    sweep: ContextSweepConfig
    json_path: Path
    plot_path: Path
    curves_path: Path | None = None
    knowledge_base: float | None = None
    """Knowledge (contains) of ``base`` and of ``rag@K`` alone, on the same questions."""
    knowledge_rag: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``sweep-context.json``."""
        return {
            "style": self.style,
            "questions": self.questions,
            "rag_k": self.rag_k,
            "shares": [r.to_dict() for r in self.shares],
            "base": self.base,
            "rag": self.rag,
            "knowledge_base": self.knowledge_base,
            "knowledge_rag": self.knowledge_rag,
            "selected_share": self.selected_share,
            "selected_by": (
                "lowest mean validation loss over seeds on held-out training examples, half bare and "
                "half under a retrieval prompt (no eval answers); the half-and-half mix stands for traffic "
                "that is half retrieval-augmented, and tends to favour the share that matches it (0.5)"
            ),
            "validation_examples": self.validation_examples,
            "held_out": self.held_out,
            "ingested": self.ingested,
            "errors": self.errors,
            "train_s": self.train_s,
            "answer_s": self.answer_s,
            "trained": self.trained,
            "config": self.config.to_dict(),
            "sweep": {
                "shares": list(self.sweep.shares),
                "seeds": list(self.sweep.seeds),
                "data": str(self.sweep.data),
                "style_spec": str(self.sweep.style_spec),
                "questions": str(self.sweep.questions),
                "strata": list(self.sweep.strata),
                "max_questions": self.sweep.max_questions,
                "documents": str(self.sweep.documents),
                "context_passages": self.sweep.context_passages,
                "rag_k": self.sweep.rag_k,
            },
            "training_curves": self.curves_path.name if self.curves_path else None,
        }


def plot_context_sweep(summary: ContextSweepSummary, path: Path) -> Path:
    """Left: validity against share, without and with retrieval (mean ± sd over seeds, each seed
    a dot), base and ``rag@K`` dashed. Right: knowledge (contains) the same way, when measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    has_knowledge = all(r.knowledge_with for r in summary.shares)
    fig = Figure(figsize=(12 if has_knowledge else 7, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_knowledge else 1, squeeze=False)[0]
    shares = [r.share for r in summary.shares]
    colours = {"without": "#4C72B0", "with": "#DD8452"}
    labels = {"without": "adapter, no context", "with": f"adapter + rag@{summary.rag_k}"}
    panels: list[tuple[str, dict[str, list[tuple[float, ...]]], float | None, float | None]] = [
        (
            "format validity",
            {
                "without": [r.without_rag.scores for r in summary.shares],
                "with": [r.with_rag.scores for r in summary.shares],
            },
            summary.base,
            summary.rag,
        )
    ]
    if has_knowledge:
        panels.append(
            (
                "knowledge (contains)",
                {
                    "without": [r.knowledge_without for r in summary.shares],
                    "with": [r.knowledge_with for r in summary.shares],
                },
                summary.knowledge_base,
                summary.knowledge_rag,
            )
        )
    for ax, (metric, series, base, rag) in zip(axes, panels, strict=True):
        for key, per_share in series.items():
            means = [statistics.fmean(v) for v in per_share]
            sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_share]
            ax.errorbar(shares, means, yerr=sds, marker="o", capsize=3, color=colours[key], label=labels[key])
            for share, values in zip(shares, per_share, strict=True):
                ax.scatter([share] * len(values), values, color=colours[key], s=10, alpha=0.35, zorder=3)
        if base is not None:
            ax.axhline(base, color="#8C8C8C", linestyle="--", linewidth=1, label="base")
        if rag is not None:
            ax.axhline(rag, color="#55A868", linestyle="--", linewidth=1, label=f"rag@{summary.rag_k}")
        if summary.selected_share is not None:
            ax.axvline(summary.selected_share, color="#C44E52", linestyle=":", linewidth=1,
                       label=f"selected on val loss: {summary.selected_share:g}")  # fmt: skip
        ax.set_xticks(shares, [f"{s:g}" for s in shares])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("share of training examples under a retrieval prompt")
        ax.set_ylabel(f"{metric} ({summary.questions} held-out questions)")
        ax.set_title(f"{summary.style}: {metric} vs context share in training", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def sweep_recipe(config: ContextSweepConfig) -> TrainConfig:
    """The recipe of every run: ``config.recipe``, or the demo's style recipe at the context recipes'
    ``max_length`` for ``config.context_passages`` passages."""
    from hybrid_assistant.adapters.demo import STYLE
    from hybrid_assistant.adapters.train_config import context_max_length

    max_length = context_max_length(config.context_passages)
    return config.recipe or dataclasses.replace(STYLE.config, max_length=max_length)


def _ingest(target: str, documents: Path) -> dict[str, int]:
    from hybrid_assistant.client import AssistantClient
    from hybrid_assistant.retrieval.loaders import DocumentLoader

    docs = [
        {"id": Path(d.id).stem, "text": d.text, "source": d.source}
        for d in DocumentLoader().iter_documents([documents])
    ]
    with AssistantClient(target) as client:
        done = client.ingest(docs)
    return {"documents": len(docs), "added": done.added, "updated": done.updated, "unchanged": done.unchanged}


def _knowledge(analysis: EvalAnalysis, arm: str) -> float:
    """The arm's mean knowledge (the eval's primary knowledge metric)."""
    return analysis.arm(arm).metrics[PRIMARY_KNOWLEDGE].mean


def _retention_ci(analysis: EvalAnalysis, adapter_arm: str) -> tuple[float, float] | None:
    return next((h.retention_ci for h in analysis.hybrids if h.adapter == adapter_arm), None)


def _plain_rag_arm(seed: int, rag_k: int) -> str:
    """The share-0 adapter of ``seed`` with ``rag@K``: the baseline of every share's head to head."""
    return Arm.make(adapter_name(0.0, seed), retrieval=True, top_k=rag_k).name


def _versus_plain(analysis: EvalAnalysis, arm: str, plain: str) -> dict[str, Any]:
    """``arm - plain`` on knowledge and format validity, paired by item (the eval's head-to-head
    rows); ``{}`` for the plain arm itself."""
    out: dict[str, Any] = {}
    for c in analysis.lever_comparisons:
        if {c.arm, c.baseline} == {arm, plain} and arm != plain:
            sign = 1.0 if c.arm == arm else -1.0
            e = c.effect
            low, high = sorted((sign * e.ci_low, sign * e.ci_high))
            out[c.metric] = {
                "arm": arm, "baseline": plain, "estimate": sign * e.estimate, "ci": [low, high],
                "p_value": e.p_value, "n": e.n,
            }  # fmt: skip
    return out


def run_context_sweep(
    config: ContextSweepConfig, base: BaseModel, *, notify: Callable[[str], None] = log.info
) -> ContextSweepSummary:
    """Train one style adapter per share and seed for ``base``, serve them from one server with the
    documents ingested, ask each the held-out questions without and with ``rag@K`` (and ``base``
    and ``rag@K`` once), and write ``sweep-context.json``, ``sweep-context.png`` and
    ``training_curves.png``.

    ``notify`` gets one line per trained adapter and one for the ingest. Raises
    :class:`~hybrid_assistant.eval.sweep.SweepInputError`, before any training, if the inputs
    cannot measure what the sweep claims.
    """
    from hybrid_assistant.adapters.training import train_adapter

    recipe = sweep_recipe(config)
    inputs = load_context_inputs(config, recipe)
    root = config.out / "adapters"
    started = time.perf_counter()
    results: dict[str, TrainResult] = {}
    for run in inputs.runs:
        name = run.plan.name
        results[name] = train_adapter(
            run.examples, base, root / name, run.plan.config,
            val_examples=inputs.validation, purpose=f"context sweep share={run.share:g}",
            data_source=str(config.data), extra_metadata=run.recipe.metadata(config.documents),
            overwrite=True, progress=False,
        )  # fmt: skip
        notify(
            f"trained {name} (share {run.share:g}, {results[name].steps} steps) in "
            f"{results[name].wall_s:.0f} s, val loss {results[name].val_loss}"
        )
    train_s = time.perf_counter() - started
    server = sweep_server(config.data_dir, root, list(results), config.out / "server.log")
    base_arm, rag_arm = Arm.make(), Arm.make(retrieval=True, top_k=config.rag_k)
    try:
        server.wait_ready()
        ingested = _ingest(server.target, config.documents)
        notify(
            f"ingested {config.documents}: {ingested['added']} added, {ingested['updated']} updated, "
            f"{ingested['unchanged']} unchanged"
        )
        runner = Runner(RunConfig(target=server.target, max_tokens=MAX_TOKENS, score_options=False))
        arms = [base_arm, rag_arm]
        for name in results:
            arms += [Arm.make(name), Arm.make(name, retrieval=True, top_k=config.rag_k)]
        records = asyncio.run(runner.run(inputs.items, arms))
        answer_s = runner.stats.wall_s
    finally:
        server.stop()
    by_arm: dict[str, list[AnswerRecord]] = {}
    for record in records:
        by_arm.setdefault(record.arm, []).append(record)

    def score(arm: Arm) -> float:
        return score_arm(by_arm[arm.name], inputs.spec)

    # The eval's own analysis of the same answers: knowledge, retention intervals, head to head.
    # The questions' own style tag is dropped: the sweep scores them against its style spec.
    analysis = analyse([dataclasses.replace(i, style=None) for i in inputs.items], records, arms, inputs.spec)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "analysis.json").write_text(analysis.to_json())
    shares = []
    for share in dict.fromkeys(r.share for r in inputs.runs):
        runs = [r for r in inputs.runs if r.share == share]
        alone = [Arm.make(r.plan.name) for r in runs]
        with_rag = [Arm.make(r.plan.name, retrieval=True, top_k=config.rag_k) for r in runs]
        plain = [(_percent(share), r.plan.seed, score(a)) for r, a in zip(runs, alone, strict=True)]
        rag = [(_percent(share), r.plan.seed, score(a)) for r, a in zip(runs, with_rag, strict=True)]
        shares.append(
            ShareResult(
                share=share,
                without_rag=to_points(plain)[0],
                with_rag=to_points(rag)[0],
                val_losses=tuple(results[r.plan.name].val_loss for r in runs),
                train_s=tuple(results[r.plan.name].train_s for r in runs),
                knowledge_without=tuple(_knowledge(analysis, a.name) for a in alone),
                knowledge_with=tuple(_knowledge(analysis, a.name) for a in with_rag),
                retention_ci=tuple(_retention_ci(analysis, a.name) for a in alone),
                versus_plain=tuple(
                    _versus_plain(analysis, a.name, _plain_rag_arm(r.plan.seed, config.rag_k))
                    for r, a in zip(runs, with_rag, strict=True)
                ),
            )
        )
    shares.sort(key=lambda r: r.share)
    plans = {f"share={r.share:g}": [r.plan] for r in inputs.runs}
    trained = []
    for run in inputs.runs:
        entry = _trained_entry(run.plan.name, results[run.plan.name], plans)
        entry.update(size=len(run.examples), seed=run.plan.seed, share=run.share)
        trained.append(entry)
    summary = ContextSweepSummary(
        style=inputs.spec.name,
        questions=len(inputs.items),
        rag_k=config.rag_k,
        shares=shares,
        base=score(base_arm),
        rag=score(rag_arm),
        knowledge_base=_knowledge(analysis, base_arm.name),
        knowledge_rag=_knowledge(analysis, rag_arm.name),
        selected_share=select_share(shares),
        validation_examples=len(inputs.validation),
        held_out=inputs.held_out,
        ingested=ingested,
        errors={arm: n for arm, rs in by_arm.items() if (n := sum(1 for r in rs if r.error))},
        train_s=train_s,
        answer_s=answer_s,
        trained=trained,
        config=recipe,
        sweep=config,
        json_path=config.out / "sweep-context.json",
        plot_path=config.out / "sweep-context.png",
    )
    summary.curves_path = plot_trained_curves(results, config.out / "training_curves.png")
    summary.json_path.write_text(json.dumps(summary.to_dict(), indent=2))
    plot_context_sweep(summary, summary.plot_path)
    return summary

"""How much data is enough: format validity against the number of examples, trained or in context.

:func:`run_sweep` draws three curves on one axis of examples, each point a mean over seeds:

- **fixed steps** (the fair one): a style adapter trained on N examples for the same number of
  optimiser steps at every N, cycling the N examples (``TrainConfig.max_steps``). The step
  budget defaults to the recipe's own step count at the largest N, so the largest N trains
  exactly as the recipe does; ``steps`` overrides it. N = 1 then sees its one example once a
  step, which tells how much *data* a format needs rather than how much *training*;
- **fixed epochs** (the recipe as is, unless skipped): N examples for the recipe's epochs, so a
  smaller N also means fewer steps (3 at N = 1 with batch 8). A run identical to a fixed-steps
  run (same N, seed and step count: the largest N by default) is trained once and serves both;
- **few-shot**: no training; K style exemplars as earlier chat turns (arm ``fewshot@K``), asked
  through the same server. Seed 0 takes exemplars in file order, as the eval's ``fewshot@K``
  arm does; each other seed draws them from a seeded shuffle of the file.

N = 0 and K = 0 are the base model. Every adapter trains on N examples of the style training
data with one validation set held out of it for all (``val_fraction`` of the recipe, split with
seed 0), so validation losses compare across N. Adapters are trained on this machine
(:func:`hybrid_assistant.adapters.training.train_on_subset`), served by a server in a child
process (:class:`hybrid_assistant.process.ServerProcess`) and asked the held-out questions
through the gRPC runner; scores are the eval's format validity against the style spec.

The base model is the caller's to resolve (the eval never imports the server):
``hybrid-assistant adapters sweep`` uses :func:`hybrid_assistant.server.base_model.resolve_base_model`.
Files written into ``out``: ``adapters/style-n<N>-s<seed>-<steps>steps``, ``server.log``,
``sweep.json`` (every series, the step budget), ``sweep.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.eval.arms import Arm
from hybrid_assistant.eval.dataset import (
    DatasetError,
    EvalItem,
    Exemplar,
    StyleSpec,
    load_dataset,
    load_style_exemplars,
    load_style_spec,
)
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.eval.metrics.style import format_valid
from hybrid_assistant.eval.records import AnswerRecord
from hybrid_assistant.eval.report.training_curves import plot_training_curves
from hybrid_assistant.eval.runner import RunConfig, Runner
from hybrid_assistant.process import ServerProcess

if TYPE_CHECKING:
    from hybrid_assistant.adapters.data import ChatExample
    from hybrid_assistant.adapters.train_config import TrainResult

log = logging.getLogger(__name__)

FIXED_STEPS, FIXED_EPOCHS, FEWSHOT = "fixed_steps", "fixed_epochs", "fewshot"
SERIES_LABELS = {
    FIXED_STEPS: "fine-tuned, same steps at every N",
    FIXED_EPOCHS: "fine-tuned, the recipe's epochs (fewer steps at small N)",
    FEWSHOT: "few-shot, K exemplars in context",
}
MAX_TOKENS = 48
"""Answer length: a compact JSON answer fits; a rambling one is invalid either way."""


@dataclass(frozen=True)
class SweepPoint:
    size: int
    """Examples: training examples N or in-context exemplars K (0: the base model)."""
    seeds: tuple[int, ...]
    scores: tuple[float, ...]  # one per seed: mean format validity over the questions

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "seeds": list(self.seeds),
            "scores": list(self.scores),
            "mean": self.mean,
            "sd": self.sd,
            "min": min(self.scores),
            "max": max(self.scores),
        }


def score_arm(records: Sequence[AnswerRecord], spec: StyleSpec) -> float:
    """Mean format validity of one arm's answers (a failed request counts as invalid)."""
    return statistics.fmean(0.0 if r.error else format_valid(r.text, spec) for r in records)


def to_points(scores: Iterable[tuple[int, int, float]]) -> list[SweepPoint]:
    """(size, seed, score) triples -> one point per size, sorted by size, seeds in order."""
    per_size: dict[int, list[tuple[int, float]]] = {}
    for size, seed, score in scores:
        per_size.setdefault(size, []).append((seed, score))
    return [
        SweepPoint(size, tuple(s for s, _ in sorted(v)), tuple(x for _, x in sorted(v)))
        for size, v in sorted(per_size.items())
    ]


def step_budget(sizes: Sequence[int], recipe: TrainConfig) -> int:
    """The recipe's own optimiser steps at the largest N: the default budget of the fixed-steps curve."""
    from hybrid_assistant.adapters.loop import plan_steps

    return plan_steps(max(sizes), recipe)[0]


@dataclass(frozen=True)
class PlannedAdapter:
    """One training run of the sweep; its name says N, seed and steps, so equal runs share it."""

    name: str
    size: int
    seed: int
    config: TrainConfig


def plan_adapters(
    sizes: Sequence[int], seeds: Sequence[int], recipe: TrainConfig, budget: int, fixed_epochs: bool
) -> dict[str, list[PlannedAdapter]]:
    """The runs of each training series. A fixed-epochs run that would train exactly like the
    fixed-steps run of the same N and seed (same steps and epochs) is that run."""
    from hybrid_assistant.adapters.loop import plan_steps

    plans: dict[str, list[PlannedAdapter]] = {FIXED_STEPS: [], FIXED_EPOCHS: []}
    for size in sizes:
        for seed in seeds:
            steps_config = dataclasses.replace(recipe, max_steps=budget, seed=seed)
            epochs_config = dataclasses.replace(recipe, max_steps=0, seed=seed)
            fixed = PlannedAdapter(f"style-n{size}-s{seed}-{budget}steps", size, seed, steps_config)
            plans[FIXED_STEPS].append(fixed)
            if not fixed_epochs:
                continue
            planned = plan_steps(size, epochs_config)
            if planned == plan_steps(size, steps_config):
                plans[FIXED_EPOCHS].append(fixed)
            else:
                name = f"style-n{size}-s{seed}-{planned[0]}steps"
                plans[FIXED_EPOCHS].append(PlannedAdapter(name, size, seed, epochs_config))
    return {series: runs for series, runs in plans.items() if runs}


def exemplar_pool(exemplars: Sequence[Exemplar], seed: int) -> list[Exemplar]:
    """Seed 0: the file order (the eval's ``fewshot@K``); another seed: a seeded shuffle."""
    pool = list(exemplars)
    if seed:
        random.Random(seed).shuffle(pool)
    return pool


class SweepInputError(ValueError):
    """The sweep's inputs do not measure what it claims (a question is in the training data,
    a size exceeds the examples, a K is not a valid few-shot arm)."""


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. Field names follow ``hybrid-assistant adapters sweep``'s flags."""

    sizes: tuple[int, ...] = (1, 10, 50, 100)
    """Training set sizes N."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds per size (subset and initialisation) and per K (exemplar draw)."""
    data: Path = DEMO_DIR / "style_train.jsonl"
    """Style training JSONL (the validation set is held out of it)."""
    style_spec: Path = DEMO_DIR / "style_spec.json"
    """Style spec the score checks."""
    questions: Path = DEMO_DIR / "test.jsonl"
    """Eval JSONL of held-out questions (none may be in the training data)."""
    strata: tuple[str, ...] = ("control", "kb")
    """Dataset strata to ask."""
    max_questions: int = 64
    """Questions asked of each adapter and few-shot arm."""
    data_dir: Path = Path("data/demo")
    """Data dir of the server that answers (model cache)."""
    out: Path = Path("reports/sweep")
    """Output folder (adapters, JSON, plots)."""
    epochs: int | None = None
    """Override the style recipe's epochs (the fixed-epochs curve, and the default step budget)."""
    steps: int | None = None
    """Optimiser steps of every fixed-steps run; None: the recipe's steps at the largest N."""
    fixed_epochs: bool = True
    """Also train the recipe's fixed-epochs curve (fewer steps at smaller N)."""
    exemplars: Path = DEMO_DIR / "style_exemplars.jsonl"
    """Style exemplars JSONL for the few-shot curve."""
    ks: tuple[int, ...] = (0, 1, 2, 4, 8)
    """Exemplar counts K of the few-shot curve (0: the base model); empty: no few-shot curve."""
    recipe: TrainConfig | None = None
    """Training recipe; None: the demo's style recipe (``adapters.demo.STYLE``)."""


@dataclass
class SweepSummary:
    """The curves (format validity per N or K), what training took, and where the files are."""

    style: str
    questions: int
    train_s: float
    answer_s: float
    step_budget: int
    step_budget_source: str
    series: dict[str, list[SweepPoint]]
    trained: list[dict[str, Any]]
    config: TrainConfig
    validation_examples: int
    json_path: Path
    plot_path: Path
    curves_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``sweep.json``."""
        return {
            "style": self.style,
            "questions": self.questions,
            "train_s": self.train_s,
            "answer_s": self.answer_s,
            "step_budget": self.step_budget,
            "step_budget_source": self.step_budget_source,
            "validation_examples": self.validation_examples,
            "series": {
                name: {"label": SERIES_LABELS[name], "points": [p.to_dict() for p in points]}
                for name, points in self.series.items()
            },
            "trained": self.trained,
            "config": self.config.to_dict(),
            "training_curves": self.curves_path.name if self.curves_path else None,
        }


def plot(summary: SweepSummary, path: Path) -> Path:
    """The curves on one log axis of examples, mean ± sd over seeds, each seed a grey dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = {FIXED_STEPS: "#4C72B0", FIXED_EPOCHS: "#8C8C8C", FEWSHOT: "#DD8452"}
    nudges = {FIXED_STEPS: 1.0, FIXED_EPOCHS: 0.94, FEWSHOT: 1.06}  # keep the error bars apart
    ticks: set[int] = set()
    for name, points in summary.series.items():
        xs = [max(p.size, 0.5) * nudges[name] for p in points]  # 0 (base) drawn at 0.5 on the log axis
        ax.errorbar(
            xs, [p.mean for p in points], yerr=[p.sd for p in points], marker="o", capsize=3,
            color=colours[name], label=SERIES_LABELS[name],
            linestyle="--" if name == FIXED_EPOCHS else "-",
        )  # fmt: skip
        for x, p in zip(xs, points, strict=True):
            ax.scatter([x] * len(p.scores), p.scores, color=colours[name], s=10, alpha=0.35, zorder=3)
        ticks.update(p.size for p in points)
    ax.set_xscale("log")
    ordered = sorted(ticks)
    ax.set_xticks([max(t, 0.5) for t in ordered], ["base" if t == 0 else str(t) for t in ordered])
    ax.minorticks_off()
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("examples: training examples N, or in-context exemplars K (log scale)")
    ax.set_ylabel("format validity (held-out questions)")
    ax.set_title(
        f"{summary.style}: format validity vs examples ({summary.step_budget} steps per fixed-steps run)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


@dataclass(frozen=True)
class SweepInputs:
    pool: list[ChatExample]
    validation: list[ChatExample]
    spec: StyleSpec
    items: list[EvalItem]
    exemplars: list[Exemplar]
    fewshot_arms: list[Arm]


@dataclass(frozen=True)
class SweepFiles:
    """What every sweep reads: the style training examples, the style spec and the held-out
    questions; ``problems`` holds every file that could not be read and every leaked question."""

    examples: list[ChatExample]
    spec: StyleSpec | None
    items: list[EvalItem]
    problems: list[str]


def read_sweep_files(
    data: Path, style_spec: Path, questions: Path, strata: Sequence[str], max_questions: int
) -> SweepFiles:
    """Read a sweep's three files; a missing, non-UTF-8 or malformed file is a problem, not a crash."""
    from hybrid_assistant.adapters.data import DataValidationError, load_examples

    problems: list[str] = []
    if max_questions < 1:
        problems.append(f"max_questions must be >= 1, got {max_questions!r}")
    examples: list[ChatExample] = []
    spec: StyleSpec | None = None
    items: list[EvalItem] = []
    try:
        examples = load_examples(data)
    except DataValidationError as exc:
        problems.append(str(exc))
    try:
        spec = load_style_spec(style_spec)
    except (DatasetError, OSError) as exc:
        problems.append(f"style spec: {exc}")
    try:
        wanted = set(strata)
        items = [i for i in load_dataset(questions) if i.stratum in wanted][:max_questions]
        if not items and max_questions >= 1:
            problems.append(f"no questions of strata {sorted(wanted)} in {questions}")
    except (DatasetError, OSError) as exc:
        problems.append(f"questions: {exc}")
    trained = {m.content for e in examples for m in e.messages if m.role == "user"}
    leaked = [i.id for i in items if i.text in trained]
    if leaked:
        problems.append(f"questions {leaked} are in the training data")
    return SweepFiles(examples, spec, items, problems)


def load_inputs(config: SweepConfig, recipe: TrainConfig) -> SweepInputs:
    """Read and check everything before any training; every problem at once."""
    from hybrid_assistant.adapters.data import split_examples

    files = read_sweep_files(
        config.data, config.style_spec, config.questions, config.strata, config.max_questions
    )
    examples, spec, items, problems = files.examples, files.spec, files.items, list(files.problems)
    pool, validation = split_examples(examples, recipe.val_fraction, 0) if examples else ([], [])
    too_big = [n for n in config.sizes if not 1 <= n <= len(pool)]
    if too_big and examples:
        problems.append(
            f"sizes {too_big} must be from 1 to {len(pool)} ({len(examples)} examples, "
            f"{len(validation)} held out for validation)"
        )
    if config.steps is not None and config.steps < 1:
        problems.append(f"steps must be >= 1, got {config.steps!r}")
    exemplars: list[Exemplar] = []
    fewshot_arms: list[Arm] = []
    if any(config.ks):
        try:
            exemplars = load_style_exemplars(config.exemplars)
        except (DatasetError, OSError) as exc:
            problems.append(f"exemplars: {exc}")
        try:
            fewshot_arms = [Arm.make(fewshot=k) for k in sorted(set(config.ks)) if k]
        except ValueError as exc:
            problems.append(str(exc))
        from hybrid_assistant.eval.prompting import prompting_problems

        if spec is not None:
            problems += prompting_problems(items, fewshot_arms, spec, exemplars)
    if problems or spec is None:
        raise SweepInputError("; ".join(problems))
    return SweepInputs(pool, validation, spec, items, exemplars, fewshot_arms)


def train_sweep_adapters(
    plans: Mapping[str, Sequence[PlannedAdapter]],
    inputs: SweepInputs,
    base: BaseModel,
    root: Path,
    notify: Callable[[str], None] = log.info,
) -> dict[str, TrainResult]:
    """Train every planned adapter once (runs shared by two series are trained once), by name."""
    from hybrid_assistant.adapters.training import train_on_subset

    results: dict[str, TrainResult] = {}
    for runs in plans.values():
        for run in runs:
            if run.name in results:
                continue
            results[run.name] = train_on_subset(
                inputs.pool, run.size, run.seed, base, root / run.name, run.config,
                val_examples=inputs.validation, purpose=f"sweep N={run.size}",
                overwrite=True, progress=False,
            )  # fmt: skip
            notify(
                f"trained {run.name} ({results[run.name].steps} steps) in {results[run.name].wall_s:.0f} s"
            )
    return results


def plot_trained_curves(results: Mapping[str, TrainResult], path: Path) -> Path | None:
    """Every trained adapter's loss curves, drawn from its metadata, into one figure."""
    return plot_training_curves(
        {name: {k: str(v) for k, v in r.metadata.items()} for name, r in results.items()}, path
    )


def sweep_server(data_dir: Path, adapter_root: Path, names: Sequence[str], log: Path) -> ServerProcess:
    """A child server that answers for a sweep: every trained adapter preloaded and resident at
    once (plus one slot), so no answer waits on an adapter swap."""
    return ServerProcess(
        [
            "--data-dir", str(data_dir),
            "--adapter-root", str(adapter_root),
            "--max-resident-adapters", str(len(names) + 1),
            *(a for name in names for a in ("--preload", f"{name}={name}")),
        ],
        log=log,
    )  # fmt: skip


def sweep_recipe(config: SweepConfig) -> TrainConfig:
    """The recipe of every run: ``config.recipe`` or the demo's style recipe, with ``config.epochs``."""
    from hybrid_assistant.adapters.demo import STYLE

    recipe = config.recipe or STYLE.config
    return recipe if config.epochs is None else dataclasses.replace(recipe, epochs=config.epochs)


def run_sweep(
    config: SweepConfig, base: BaseModel, *, notify: Callable[[str], None] = log.info
) -> SweepSummary:
    """Train the sweep's adapters for ``base``, ask each, the base model and the few-shot arms
    the held-out questions through one server, and write ``sweep.json``, ``sweep.png`` and
    ``training_curves.png``.

    ``notify`` gets one line per trained adapter. Raises :class:`SweepInputError`, before any
    training, if the inputs cannot measure what the sweep claims.
    """
    recipe = sweep_recipe(config)
    inputs = load_inputs(config, recipe)
    if config.steps is None:
        budget = step_budget(config.sizes, recipe)
        source = (
            f"the recipe's own step count at the largest N ({max(config.sizes)} examples, "
            f"{recipe.epochs} epochs, batch {recipe.batch_size})"
        )
    else:
        budget, source = config.steps, "set by --steps"
    plans = plan_adapters(config.sizes, config.seeds, recipe, budget, config.fixed_epochs)
    root = config.out / "adapters"
    started = time.perf_counter()
    results = train_sweep_adapters(plans, inputs, base, root, notify)
    train_s = time.perf_counter() - started
    server = sweep_server(config.data_dir, root, list(results), config.out / "server.log")
    answer_s = 0.0
    try:
        server.wait_ready()
        settings = RunConfig(target=server.target, max_tokens=MAX_TOKENS, score_options=False)
        runner = Runner(settings)
        arms = [Arm.make(), *(Arm.make(name) for name in results)]
        records = asyncio.run(runner.run(inputs.items, arms))
        answer_s += runner.stats.wall_s
        by_arm: dict[str, list[AnswerRecord]] = {}
        for record in records:
            by_arm.setdefault(record.arm, []).append(record)
        fewshot_scores: list[tuple[int, int, float]] = []
        for seed in config.seeds if inputs.fewshot_arms else ():
            runner = Runner(settings, style=inputs.spec, exemplars=exemplar_pool(inputs.exemplars, seed))
            for record in asyncio.run(runner.run(inputs.items, inputs.fewshot_arms)):
                by_arm.setdefault(f"{record.arm}#seed{seed}", []).append(record)
            answer_s += runner.stats.wall_s
            fewshot_scores += [
                (arm.fewshot, seed, score_arm(by_arm[f"{arm.name}#seed{seed}"], inputs.spec))
                for arm in inputs.fewshot_arms
            ]
    finally:
        server.stop()
    base_score = score_arm(by_arm[Arm.make().name], inputs.spec)
    series = {
        name: to_points(
            [(0, 0, base_score)]
            + [(r.size, r.seed, score_arm(by_arm[Arm.make(r.name).name], inputs.spec)) for r in runs]
        )
        for name, runs in plans.items()
    }
    if inputs.fewshot_arms:
        series[FEWSHOT] = to_points(([(0, 0, base_score)] if 0 in config.ks else []) + fewshot_scores)
    config.out.mkdir(parents=True, exist_ok=True)
    summary = SweepSummary(
        style=inputs.spec.name,
        questions=len(inputs.items),
        train_s=train_s,
        answer_s=answer_s,
        step_budget=budget,
        step_budget_source=source,
        series=series,
        trained=[_trained_entry(name, result, plans) for name, result in results.items()],
        config=recipe,
        validation_examples=len(inputs.validation),
        json_path=config.out / "sweep.json",
        plot_path=config.out / "sweep.png",
    )
    summary.curves_path = plot_trained_curves(results, config.out / "training_curves.png")
    summary.json_path.write_text(json.dumps(summary.to_dict(), indent=2))
    plot(summary, summary.plot_path)
    return summary


def _trained_entry(
    name: str, result: TrainResult, plans: Mapping[str, Sequence[PlannedAdapter]]
) -> dict[str, Any]:
    meta = result.metadata
    return {
        "name": name,
        "size": meta.get("subset"),
        "seed": meta.get("subset_seed"),
        "series": [series for series, runs in plans.items() if any(r.name == name for r in runs)],
        "steps": result.steps,
        "epochs_trained": len(result.epochs),
        "train_s": round(result.train_s, 2),
        "wall_s": round(result.wall_s, 2),
        "val_loss_before": result.val_loss_before,
        "val_loss": result.val_loss,
    }

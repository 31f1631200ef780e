"""How much data is enough: style score against the number of training examples.

:func:`run_sweep` trains the style adapter on N examples (several seeds each) on this machine
(:func:`hybrid_assistant.adapters.training.train_adapter`), serves them all from a server in a
child process (:class:`hybrid_assistant.process.ServerProcess`), asks each the held-out
questions through the gRPC runner, and plots the style score against N. Scores come from the
eval's own style metric (format validity against the style spec); N = 0 is the base model.

The base model is the caller's to resolve (the eval never imports the server):
``hybrid-assistant adapters sweep`` uses :func:`hybrid_assistant.server.base_model.resolve_base_model`.
Files written into ``out``: ``adapters/style-n<N>-s<seed>``, ``server.log``, ``sweep.json``
and ``sweep.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.eval.arms import Arm
from hybrid_assistant.eval.dataset import StyleSpec, load_dataset, load_style_spec
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.eval.metrics.style import format_valid
from hybrid_assistant.eval.records import AnswerRecord
from hybrid_assistant.eval.runner import RunConfig, Runner
from hybrid_assistant.process import ServerProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    size: int
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


def summarise(
    records: Sequence[AnswerRecord], arms: Mapping[str, tuple[int, int]], spec: StyleSpec
) -> list[SweepPoint]:
    """``arms`` maps arm name -> (size, seed); returns one point per size, sorted."""
    by_arm: dict[str, list[AnswerRecord]] = {}
    for record in records:
        by_arm.setdefault(record.arm, []).append(record)
    per_size: dict[int, list[tuple[int, float]]] = {}
    for arm, (size, seed) in arms.items():
        per_size.setdefault(size, []).append((seed, score_arm(by_arm.get(arm, []), spec)))
    return [
        SweepPoint(size, tuple(s for s, _ in sorted(v)), tuple(x for _, x in sorted(v)))
        for size, v in sorted(per_size.items())
    ]


def plot(points: Sequence[SweepPoint], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [max(p.size, 0.5) for p in points]  # N = 0 (base) drawn at 0.5 on the log axis
    ax.errorbar(
        xs, [p.mean for p in points], yerr=[p.sd for p in points], marker="o", capsize=4, label="mean ± sd"
    )
    for x, p in zip(xs, points, strict=True):
        ax.scatter([x] * len(p.scores), p.scores, color="grey", s=12, alpha=0.6, zorder=3)
    ax.set_xscale("log")
    ax.set_xticks(xs, ["base" if p.size == 0 else str(p.size) for p in points])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("training examples (N)")
    ax.set_ylabel("format validity (held-out questions)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class SweepInputError(ValueError):
    """The sweep's inputs do not measure what it claims (a question is in the training data)."""


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. Field names follow ``hybrid-assistant adapters sweep``'s flags."""

    sizes: tuple[int, ...] = (1, 10, 50, 100)
    """Training set sizes N."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds per size (subset and initialisation)."""
    data: Path = DEMO_DIR / "style_train.jsonl"
    """Style training JSONL."""
    style_spec: Path = DEMO_DIR / "style_spec.json"
    """Style spec the score checks."""
    questions: Path = DEMO_DIR / "test.jsonl"
    """Eval JSONL of held-out questions (none may be in the training data)."""
    strata: tuple[str, ...] = ("control", "kb")
    """Dataset strata to ask."""
    max_questions: int = 64
    """Questions asked of each adapter."""
    data_dir: Path = Path("data/demo")
    """Data dir of the server that answers (model cache)."""
    out: Path = Path("reports/sweep")
    """Output folder (adapters, JSON, plot)."""
    epochs: int | None = None
    """Override the style recipe's epochs."""


@dataclass
class SweepSummary:
    """The points (style score per N), what training took, and where the files are."""

    style: str
    questions: int
    train_s: float
    answer_s: float
    points: list[SweepPoint]
    trained: list[dict[str, Any]]
    config: TrainConfig
    json_path: Path
    plot_path: Path

    def to_dict(self) -> dict[str, Any]:
        """The content of ``sweep.json``."""
        return {
            "style": self.style,
            "questions": self.questions,
            "train_s": self.train_s,
            "answer_s": self.answer_s,
            "points": [p.to_dict() for p in self.points],
            "trained": self.trained,
            "config": self.config.to_dict(),
        }


def run_sweep(
    config: SweepConfig, base: BaseModel, *, notify: Callable[[str], None] = log.info
) -> SweepSummary:
    """Train ``len(sizes) x len(seeds)`` style adapters for ``base``, ask each (and the base model)
    the held-out questions through a server, and write ``sweep.json`` and ``sweep.png``.

    ``notify`` gets one line per trained adapter. Raises :class:`SweepInputError` if a question
    is in the training data.
    """
    # Training imports torch: loaded when the sweep runs, after the caller set up threading.
    from hybrid_assistant.adapters.data import load_examples, take_subset
    from hybrid_assistant.adapters.demo import STYLE
    from hybrid_assistant.adapters.training import train_adapter

    examples = load_examples(config.data)
    spec = load_style_spec(config.style_spec)
    wanted = set(config.strata)
    items = [i for i in load_dataset(config.questions) if i.stratum in wanted][: config.max_questions]
    trained = {e.messages[0].content for e in examples if e.messages}
    leaked = [i.id for i in items if i.text in trained]
    if leaked:
        raise SweepInputError(f"questions {leaked} are in the training data")
    recipe = STYLE.config
    if config.epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=config.epochs)
    root = config.out / "adapters"
    started = time.perf_counter()
    arms: dict[str, tuple[int, int]] = {"base": (0, 0)}
    train_log = []
    for size in config.sizes:
        for seed in config.seeds:
            name = f"style-n{size}-s{seed}"
            subset = take_subset(examples, min(size, len(examples)), seed)
            result = train_adapter(
                subset,
                base,
                root / name,
                dataclasses.replace(recipe, seed=seed),
                purpose=f"sweep N={size}",
                overwrite=True,
                progress=False,
            )
            arms[f"adapter:{name}"] = (size, seed)
            train_log.append({"name": name, "size": size, "seed": seed, "wall_s": result.wall_s})
            notify(f"trained {name} in {result.wall_s:.0f} s")
    train_s = time.perf_counter() - started
    adapters = [arm.split(":", 1)[1] for arm in arms if arm != "base"]
    server = ServerProcess(
        [
            "--data-dir",
            str(config.data_dir),
            "--adapter-root",
            str(root),
            "--max-resident-adapters",
            str(len(arms)),
            *(a for name in adapters for a in ("--preload", f"{name}={name}")),
        ],
        log=config.out / "server.log",
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
    config.out.mkdir(parents=True, exist_ok=True)
    summary = SweepSummary(
        style=spec.name,
        questions=len(items),
        train_s=train_s,
        answer_s=runner.stats.wall_s,
        points=points,
        trained=train_log,
        config=recipe,
        json_path=config.out / "sweep.json",
        plot_path=config.out / "sweep.png",
    )
    summary.json_path.write_text(json.dumps(summary.to_dict(), indent=2))
    plot(points, summary.plot_path, f"{spec.name}: style score vs training examples")
    return summary

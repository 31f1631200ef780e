"""How much data is enough: style score against the number of training examples.

Scores come from the eval's own style metric (format validity against the style spec), on
answers the server gave to held-out questions; N = 0 is the base model.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_assistant.eval.dataset import StyleSpec
from hybrid_assistant.eval.metrics.style import format_valid
from hybrid_assistant.eval.records import AnswerRecord


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

"""Training curves of adapters, drawn from their metadata: loss per step, epoch boundaries, validation.

An adapter trained by ``hybrid_assistant.adapters.training`` records its curve in
``adapter_metadata.json`` as space-separated series (see ``adapters.metadata``); the server
hands the metadata back as strings, so the report can draw the curve of any served adapter.
The step-shaped drops at epoch boundaries are the model meeting the same examples again: a
training loss that falls at each boundary while the validation loss does not is memorisation.
Rendered with matplotlib's Agg canvas (no pyplot, no global state), like ``plots.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

MAX_EPOCH_LINES = 40
"""Past this many epoch boundaries (a fixed-steps run on a few examples) the lines are left out:
they would fill the panel; the title says how many epochs there were."""
TRAIN_COLOUR, VAL_COLOUR, EPOCH_COLOUR = "#4C72B0", "#DD8452", "#9a9a9a"


def _numbers(text: str | None) -> list[float]:
    """A space-separated series; empty when absent or malformed (e.g. cut by the server's cap)."""
    try:
        return [float(v) for v in (text or "").split()]
    except ValueError:
        return []


def _integer(text: str | None, default: int) -> int:
    try:
        value = int(text or "")
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class TrainingCurve:
    """One adapter's curve, in steps: training loss, epoch ends, validation losses."""

    steps: tuple[float, ...]
    losses: tuple[float, ...]
    epoch_ends: tuple[float, ...]
    epochs: int
    val_steps: tuple[float, ...]
    val_losses: tuple[float, ...]

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> TrainingCurve | None:
        """The curve in ``meta``, or None when it records no step losses."""
        losses = _numbers(meta.get("train_loss_by_step"))
        if not losses:
            return None
        stride = _integer(meta.get("train_loss_step_stride"), 1)
        total = _integer(meta.get("steps"), len(losses) * stride)
        # Value i is the mean over steps i*stride+1 .. (i+1)*stride; drawn at the window's end.
        steps = [float(min((i + 1) * stride, total)) for i in range(len(losses))]
        ends = _numbers(meta.get("epoch_end_steps"))
        val = _numbers(meta.get("val_loss_by_epoch"))
        val_steps = _numbers(meta.get("val_loss_steps"))
        if len(val_steps) != len(val):  # metadata from before val_loss_steps: one per epoch end
            val_steps = ends[: len(val)] if len(ends) >= len(val) else []
            val = val[: len(val_steps)]
        before = _numbers(meta.get("val_loss_before"))
        if before and val:
            val_steps, val = [0.0, *val_steps], [before[0], *val]
        return cls(
            tuple(steps),
            tuple(losses),
            tuple(ends),
            _integer(meta.get("epochs_trained"), len(ends) * _integer(meta.get("epoch_stride"), 1)),
            tuple(val_steps),
            tuple(val),
        )


def _draw(ax: Axes, name: str, curve: TrainingCurve) -> None:
    boundaries = [e for e in curve.epoch_ends if e < curve.steps[-1]]  # the last end is the run's end
    if len(boundaries) <= MAX_EPOCH_LINES:
        for k, step in enumerate(boundaries):
            ax.axvline(
                step, color=EPOCH_COLOUR, linestyle=":", linewidth=0.9, label="epoch end" if k == 0 else None
            )
    ax.plot(curve.steps, curve.losses, color=TRAIN_COLOUR, linewidth=1.2, label="training loss (per step)")
    if curve.val_losses:
        ax.plot(
            curve.val_steps, curve.val_losses, color=VAL_COLOUR, marker="o", markersize=3.5,
            linewidth=1.0, label="validation loss",
        )  # fmt: skip
    epochs = f"{curve.epochs} epoch{'' if curve.epochs == 1 else 's'}"
    ax.set_title(f"{name} ({epochs}, {int(curve.steps[-1])} steps)", fontsize=9)
    ax.set_xlabel("optimiser step", fontsize=8)
    ax.set_ylabel("loss per token", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def plot_training_curves(adapters: Mapping[str, Mapping[str, str]], path: Path) -> Path | None:
    """One panel per adapter (name -> its metadata as strings) with a training curve; writes a PNG.

    Each panel: training loss per step, dotted lines at epoch boundaries, validation loss per
    (validated) epoch, starting from the loss before training at step 0. Returns ``path``, or
    None, writing nothing, when no adapter's metadata has step losses.
    """
    curves: Sequence[tuple[str, TrainingCurve]] = [
        (name, curve) for name, meta in adapters.items() if (curve := TrainingCurve.from_metadata(meta))
    ]
    if not curves:
        return None
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, curve) in zip(axes.flat, curves, strict=False):
        _draw(ax, name, curve)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    fig.legend(
        [handles[label] for label in labels], labels, loc="upper center", ncols=3, fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.9 * rows + 0.4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path

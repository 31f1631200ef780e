"""Training curves drawn from adapter metadata, as the server hands it back (strings)."""

from __future__ import annotations

from pathlib import Path

from hybrid_assistant.adapters.metadata import curve_metadata
from hybrid_assistant.adapters.train_config import EpochStats, TrainResult
from hybrid_assistant.eval.report.training_curves import TrainingCurve, plot_training_curves


def _served(step_losses: list[float], epoch_end_steps: list[int], val: list[float | None]) -> dict[str, str]:
    """Metadata as ListAdapters shows it: every value a string."""
    epochs = tuple(EpochStats(i + 1, 1.0, v) for i, v in enumerate(val))
    result = TrainResult(
        Path("x"), 1.0, None, 2.0, epochs, len(step_losses), 1, 0, 0, 0, 0, 1.0, 1.0,
        step_losses=tuple(step_losses), epoch_end_steps=tuple(epoch_end_steps),
    )  # fmt: skip
    meta = {"steps": len(step_losses), "val_loss_before": 2.0, **curve_metadata(result)}
    return {k: str(v) for k, v in meta.items()}


def test_curve_is_read_back_in_steps() -> None:
    curve = TrainingCurve.from_metadata(_served([1.5, 1.4, 1.0, 0.9, 0.5, 0.4], [2, 4, 6], [1.2, 1.0, 0.9]))
    assert curve is not None
    assert curve.steps == (1, 2, 3, 4, 5, 6) and curve.losses == (1.5, 1.4, 1.0, 0.9, 0.5, 0.4)
    assert curve.epoch_ends == (2, 4, 6)
    assert curve.val_steps == (0, 2, 4, 6) and curve.val_losses == (2.0, 1.2, 1.0, 0.9)  # before, then epochs


def test_thinned_curves_are_placed_at_each_windows_last_step() -> None:
    steps = 1001
    meta = _served([3.0] * steps, list(range(1, steps + 1)), [None] * (steps - 1) + [1.0])
    curve = TrainingCurve.from_metadata(meta)
    stride = int(meta["train_loss_step_stride"])
    assert curve is not None and stride > 1
    assert curve.steps[0] == stride and curve.steps[-1] == steps  # the last window is shorter
    assert curve.val_steps == (0, steps)


def test_older_metadata_without_val_steps_uses_epoch_ends() -> None:
    meta = {"train_loss_by_step": "2 1.5 1 0.8", "epoch_end_steps": "2 4", "val_loss_by_epoch": "1.1 0.9"}
    curve = TrainingCurve.from_metadata(meta)
    assert curve is not None and curve.val_steps == (2, 4) and curve.val_losses == (1.1, 0.9)


def test_writes_a_png_of_every_adapter_with_a_curve(tmp_path: Path) -> None:
    adapters = {
        "style-n1-s0": _served([2.0, 1.0, 0.5], [1, 2, 3], [1.5, 1.2, 1.1]),
        "style-n10-s0": _served([2.0, 1.8, 1.2, 1.1, 0.7, 0.6], [2, 4, 6], [1.5, 1.2, 1.1]),
        "old": {"purpose": "made before training curves", "val_loss_by_epoch": "1.0 0.9"},
        "cut": {"train_loss_by_step": "1.0 0.9 0.…"},  # cut at the server's value cap: skipped
    }
    path = plot_training_curves(adapters, tmp_path / "out" / "training_curves.png")
    assert path == tmp_path / "out" / "training_curves.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_nothing_to_draw_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "training_curves.png"
    assert plot_training_curves({}, path) is None
    assert plot_training_curves({"old": {"train_loss_by_epoch": "1.0"}}, path) is None
    assert not path.exists()

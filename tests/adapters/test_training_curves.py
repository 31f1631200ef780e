"""The training curve in adapter metadata, and runs of a fixed number of optimiser steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.loop import MAX_VALIDATIONS, plan_steps, validated_epochs
from hybrid_assistant.adapters.metadata import curve_metadata
from hybrid_assistant.adapters.peft_format import MAX_METADATA_VALUE_CHARS, METADATA_FILE
from hybrid_assistant.adapters.train_config import BaseModel, EpochStats, TrainConfig, TrainResult
from hybrid_assistant.adapters.training import train_adapter
from tests.adapters.conftest import fox_examples


def _result(step_losses: list[float], epoch_end_steps: list[int], val: dict[int, float]) -> TrainResult:
    epochs = tuple(EpochStats(i + 1, 1.0 + i / 1000, val.get(i + 1)) for i in range(len(epoch_end_steps)))
    return TrainResult(
        Path("x"), 1.0, None, None, epochs, len(step_losses), 1, 0, 0, 0, 0, 1.0, 1.0,
        step_losses=tuple(step_losses), epoch_end_steps=tuple(epoch_end_steps),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("examples", "batch_size", "epochs", "max_steps", "expected"),
    [
        (14, 4, 3, 0, (12, 3)),  # epochs decide: 4 steps an epoch
        (1, 8, 3, 5, (5, 5)),  # fewer examples than a batch: one batch of all, one epoch a step
        (3, 8, 3, 0, (3, 3)),
        (10, 4, 3, 7, (7, 3)),  # 3 steps an epoch (4+4+2): the third epoch is cut after one step
        (10, 4, 3, 6, (6, 2)),
        (100, 8, 3, 5, (5, 1)),  # fewer steps than one pass over the data
        (100, 8, 3, 20, (20, 2)),
        (0, 8, 3, 5, (0, 0)),
    ],
)
def test_plan_steps(
    examples: int, batch_size: int, epochs: int, max_steps: int, expected: tuple[int, int]
) -> None:
    config = TrainConfig(batch_size=batch_size, epochs=epochs, max_steps=max_steps)
    assert plan_steps(examples, config) == expected


def test_max_steps_is_validated() -> None:
    with pytest.raises(ValueError, match=r"max_steps must be >= 0 \(0: use epochs\), got -1"):
        TrainConfig(max_steps=-1)


def test_many_epochs_validate_every_kth_and_the_last() -> None:
    assert validated_epochs(3) == {1, 2, 3}
    assert validated_epochs(MAX_VALIDATIONS) == set(range(1, MAX_VALIDATIONS + 1))
    many = validated_epochs(100)  # every 4th, and the last
    assert len(many) <= MAX_VALIDATIONS and 100 in many and {4, 8, 96} <= many and 5 not in many
    assert validated_epochs(101) >= {101, 100}


def test_short_curves_are_stored_whole() -> None:
    meta = curve_metadata(_result([2.5, 2.0, 1.23456, 0.5], [2, 4], {1: 1.9, 2: 1.1}))
    assert meta == {
        "train_loss_by_step": "2.5000 2.0000 1.2346 0.5000",
        "train_loss_step_stride": 1,
        "epoch_end_steps": "2 4",
        "train_loss_by_epoch": "1.0000 1.0010",
        "epoch_stride": 1,
        "epochs_trained": 2,
        "val_loss_by_epoch": "1.9000 1.1000",
        "val_loss_steps": "2 4",
    }


def test_long_curves_are_thinned_deterministically_to_fit_the_servers_value_cap() -> None:
    steps = 1000
    losses = [10.0 - i / 200 for i in range(steps)]  # "10.0000"-wide values: ~8 chars each
    ends = list(range(1, steps + 1))  # one example, one epoch per step
    result = _result(losses, ends, {e: 1.0 for e in validated_epochs(steps)})
    meta = curve_metadata(result)
    assert meta == curve_metadata(result)
    for key in ("train_loss_by_step", "epoch_end_steps", "train_loss_by_epoch", "val_loss_by_epoch"):
        assert 0 < len(meta[key]) <= MAX_METADATA_VALUE_CHARS, key
    stride = meta["train_loss_step_stride"]
    means = [float(v) for v in meta["train_loss_by_step"].split()]
    assert stride > 1 and len(means) == -(-steps // stride)
    assert means[0] == pytest.approx(sum(losses[:stride]) / stride, abs=1e-4)
    assert means[-1] == pytest.approx(
        sum(losses[(len(means) - 1) * stride :]) / (steps % stride or stride), abs=1e-4
    )
    k = meta["epoch_stride"]
    kept = [int(v) for v in meta["epoch_end_steps"].split()]
    assert k > 1 and kept[:2] == [k, 2 * k] and kept[-1] == steps
    assert len(meta["train_loss_by_epoch"].split()) == len(kept)
    assert (
        len(meta["val_loss_steps"].split()) == len(meta["val_loss_by_epoch"].split()) <= MAX_VALIDATIONS + 1
    )


def test_metadata_holds_the_step_curve_of_a_real_run(tiny_base: BaseModel, tmp_path: Path) -> None:
    config = TrainConfig(rank=4, alpha=16, epochs=3, learning_rate=1e-2, batch_size=4, max_length=128)
    result = train_adapter(
        fox_examples(10), tiny_base, tmp_path / "fox", config, val_examples=fox_examples(2), progress=False
    )
    meta = json.loads((result.path / METADATA_FILE).read_text())
    losses = [float(v) for v in meta["train_loss_by_step"].split()]
    assert len(losses) == meta["steps"] == 9 and meta["train_loss_step_stride"] == 1
    assert losses == [round(v, 4) for v in result.step_losses]
    assert losses[-1] < losses[0]
    assert meta["epoch_end_steps"] == "3 6 9" and meta["val_loss_steps"] == "3 6 9"
    assert len(meta["val_loss_by_epoch"].split()) == 3 and meta["max_steps"] == 0


@pytest.mark.parametrize(("examples", "max_steps", "epoch_ends"), [(1, 3, "1 2 3"), (10, 4, "3 4")])
def test_max_steps_stops_exactly_cycling_the_examples(
    tiny_base: BaseModel, tmp_path: Path, examples: int, max_steps: int, epoch_ends: str
) -> None:
    config = TrainConfig(rank=4, batch_size=4, max_length=64, max_steps=max_steps)
    result = train_adapter(
        fox_examples(examples),
        tiny_base,
        tmp_path / "a",
        config,
        val_examples=fox_examples(2),
        progress=False,
    )
    assert result.steps == len(result.step_losses) == max_steps
    assert result.metadata["epoch_end_steps"] == epoch_ends
    assert result.metadata["val_loss_steps"] == epoch_ends and result.val_loss is not None
    assert result.metadata["max_steps"] == max_steps
    assert result.metadata["epochs_trained"] == len(epoch_ends.split())

"""``adapter_metadata.json``: how an adapter was made, as one flat object.

Flat keys with scalar values, because the server shows each key as a string in ListAdapters.
Series (the training curve) are therefore space-separated numbers in one string, kept within the
server's per-value cap (:data:`MAX_METADATA_VALUE_CHARS`) by thinning long runs deterministically:

- ``train_loss_by_step``: the loss of every optimiser step, or with ``train_loss_step_stride``
  k > 1 the mean over each run of k steps (the last run possibly shorter), 4 decimals;
- ``epoch_end_steps`` and ``train_loss_by_epoch``: the step count at each epoch's end and the
  epoch's mean loss, or with ``epoch_stride`` k > 1 those of every k-th epoch and the last;
- ``epochs_trained``: the passes made (with ``max_steps``, not the recipe's ``epochs``);
- ``val_loss_by_epoch`` and ``val_loss_steps``: the validation losses and the step counts they
  were taken at (every epoch, or every k-th and the last on runs of many epochs).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_assistant.adapters.paths import check_file_inside
from hybrid_assistant.adapters.peft_format import (
    MAX_METADATA_BYTES,
    MAX_METADATA_VALUE_CHARS,
    METADATA_FILE,
)

if TYPE_CHECKING:
    from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig, TrainResult

FORMAT = "1"


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


def _loss_series(losses: Sequence[float], limit: int = MAX_METADATA_VALUE_CHARS) -> tuple[str, int]:
    """(losses as text, stride): the mean of each run of ``stride`` steps, the smallest stride that fits."""
    stride = 1
    while True:
        means = [
            sum(losses[i : i + stride]) / len(losses[i : i + stride]) for i in range(0, len(losses), stride)
        ]
        text = " ".join(f"{m:.4f}" for m in means)
        if len(text) <= limit:
            return text, stride
        stride = max(stride + 1, math.ceil(stride * len(text) / limit))


def _every_kth(*series: Sequence[str], limit: int = MAX_METADATA_VALUE_CHARS) -> tuple[list[str], int]:
    """(each series as text, stride): every ``stride``-th item and the last, the smallest stride
    with which every series fits."""
    stride = 1
    while True:
        texts = []
        for values in series:
            kept = list(values[stride - 1 :: stride])
            if len(values) % stride:
                kept.append(values[-1])
            texts.append(" ".join(kept))
        longest = max((len(t) for t in texts), default=0)
        if longest <= limit:
            return texts, stride
        stride = max(stride + 1, math.ceil(stride * longest / limit))


def curve_metadata(result: TrainResult) -> dict[str, Any]:
    """The training curve as flat metadata keys (see the module docstring)."""
    losses, loss_stride = _loss_series(result.step_losses)
    (ends, by_epoch), epoch_stride = _every_kth(
        [str(step) for step in result.epoch_end_steps], [f"{e.train_loss:.4f}" for e in result.epochs]
    )
    val_steps = [
        step for e, step in zip(result.epochs, result.epoch_end_steps, strict=False) if e.val_loss is not None
    ]
    return {
        "train_loss_by_step": losses,
        "train_loss_step_stride": loss_stride,
        "epoch_end_steps": ends,
        "train_loss_by_epoch": by_epoch,
        "epoch_stride": epoch_stride,
        "epochs_trained": len(result.epochs),
        "val_loss_by_epoch": " ".join(f"{e.val_loss:.4f}" for e in result.epochs if e.val_loss is not None),
        "val_loss_steps": " ".join(str(step) for step in val_steps),
    }


def build_metadata(
    result: TrainResult,
    config: TrainConfig,
    base: BaseModel,
    *,
    purpose: str,
    data_sha256: str,
    data_source: str,
    examples: int,
    truncated: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "purpose": purpose,
        "base_model": base.name,
        "base_model_sha256": base.fingerprint,
        "data_file": Path(data_source).name if data_source else "",
        "data_sha256": data_sha256,
        "examples": examples,
        "train_examples": result.train_examples,
        "val_examples": result.val_examples,
        "skipped_examples": result.skipped_examples,
        "truncated_examples": truncated,
        "train_loss": _rounded(result.train_loss),
        "val_loss": _rounded(result.val_loss),
        "val_loss_before": _rounded(result.val_loss_before),
        **curve_metadata(result),
        "steps": result.steps,
        "tokens_trained": result.tokens,
        "target_tokens": result.target_tokens,
        "train_s": round(result.train_s, 2),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trainer": "hybrid-assistant adapters.training",
        "metadata_format": FORMAT,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
    }
    for key, value in config.to_dict().items():
        values[key] = ",".join(value) if isinstance(value, list) else value
    values.update(extra or {})
    return values


def write_metadata(directory: Path, values: Mapping[str, Any]) -> Path:
    path = directory / METADATA_FILE
    path.write_text(json.dumps(dict(values), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_metadata(directory: Path) -> tuple[dict[str, str], str | None]:
    """(metadata as strings, problem or None). A missing file is no problem: metadata is optional."""
    path = directory / METADATA_FILE
    if not path.is_file():
        return {}, None
    if not check_file_inside(path, directory):  # the same path rule as the weights (issue 10 #7)
        return {}, f"{METADATA_FILE} is a symlink leading outside the adapter directory"
    if path.stat().st_size > MAX_METADATA_BYTES:
        return {}, f"{METADATA_FILE} is {path.stat().st_size} bytes; at most {MAX_METADATA_BYTES}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        return {}, f"{METADATA_FILE} is not readable JSON: {str(exc)[:200]}"
    if not isinstance(data, dict):
        return {}, f"{METADATA_FILE} must hold a JSON object, got {type(data).__name__}"
    return {str(k): "" if v is None else str(v) for k, v in data.items()}, None

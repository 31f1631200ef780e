"""``adapter_metadata.json``: how an adapter was made, as one flat object.

Flat keys with scalar values, because the server shows each key as a string in ListAdapters.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_assistant.adapters.paths import check_file_inside
from hybrid_assistant.adapters.peft_format import MAX_METADATA_BYTES, METADATA_FILE

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
        "val_loss_by_epoch": " ".join(f"{e.val_loss:.4f}" for e in result.epochs if e.val_loss is not None),
        "train_loss_by_epoch": " ".join(f"{e.train_loss:.4f}" for e in result.epochs),
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

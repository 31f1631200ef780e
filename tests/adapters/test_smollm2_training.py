"""A short training run on the real SmolLM2-135M-Instruct: the loss falls and the server would load it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.data import load_examples, take_subset
from hybrid_assistant.adapters.demo import DEMO_DATA_DIR
from hybrid_assistant.adapters.peft_format import CONFIG_FILE, BaseModelSpec, inspect_adapter
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.adapters.training import train_adapter
from hybrid_assistant.server.model_store import DEFAULT_MODEL_ALIASES, DEFAULT_MODEL_NAME

pytestmark = pytest.mark.slow


def test_style_steps_on_smollm2(smol_model_dir: Path, tmp_path: Path) -> None:
    base = BaseModel(smol_model_dir, DEFAULT_MODEL_NAME, DEFAULT_MODEL_ALIASES)
    examples = take_subset(load_examples(DEMO_DATA_DIR / "style_train.jsonl"), 36, seed=0)
    config = TrainConfig(rank=8, alpha=16, epochs=2, learning_rate=1e-3, max_length=128, val_fraction=0.12)
    result = train_adapter(examples, base, tmp_path / "style", config, progress=False)
    assert result.val_loss_before is not None and result.val_loss is not None
    assert result.val_loss < result.val_loss_before * 0.6  # the JSON format is quick to pick up
    assert (
        json.loads((result.path / CONFIG_FILE).read_text())["base_model_name_or_path"] == DEFAULT_MODEL_NAME
    )
    spec = BaseModelSpec.from_config_dir(smol_model_dir, DEFAULT_MODEL_NAME, set(DEFAULT_MODEL_ALIASES))
    assert inspect_adapter(result.path, spec, max_rank=64).rank == 8

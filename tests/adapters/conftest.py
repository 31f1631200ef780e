"""Fixtures for the training tests: the tiny model as a training base, and small example sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_assistant.adapters.data import ChatExample, chat
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig

ANSWER = "The quick brown fox."


@pytest.fixture(scope="session")
def tiny_base(tiny_model_dir: Path) -> BaseModel:
    # The server names a --model-path model after its folder: adapters must say the same.
    return BaseModel(tiny_model_dir, tiny_model_dir.name)


@pytest.fixture
def paths(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    """The command-line flags that point a CLI test at the tiny model and its own folders."""
    return [
        "--model-path", str(tiny_model_dir),
        "--data-dir", str(tmp_path / "data"),
        "--adapter-root", str(tmp_path / "adapters"),
    ]  # fmt: skip


def fox_examples(count: int = 16) -> list[ChatExample]:
    """Different questions, one fixed answer: a few steps are enough to change greedy output."""
    return [chat(("user", f"Tell me a story number {i}."), ("assistant", ANSWER)) for i in range(count)]


# Big steps so that a handful of optimizer steps visibly change the tiny model.
FAST = TrainConfig(rank=4, alpha=16, epochs=3, learning_rate=1e-2, batch_size=4, max_length=128)


# The real SmolLM2 (converted once per session) for the slow test; defined for the integration tests.
from tests.integration.conftest import smol_data_dir, smol_model_dir  # noqa: E402, F401

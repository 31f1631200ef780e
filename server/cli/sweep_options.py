"""The options ``adapters sweep`` and ``adapters sweep-context`` share, written once so that their
flags, help and defaults cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.eval.demo_dataset import DEMO_DIR


def ints(text: str) -> list[int]:
    """A comma-separated list of integers (a usage error otherwise)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers (a usage error otherwise)."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


STYLE_DATA = DEMO_DIR / "style_train.jsonl"
STYLE_SPEC = DEMO_DIR / "style_spec.json"
QUESTIONS = DEMO_DIR / "test.jsonl"

DataOption = Annotated[Path, typer.Option(help="Style training JSONL (a validation set is held out of it).")]
StyleSpecOption = Annotated[Path, typer.Option(help="Style spec the score checks.")]
QuestionsOption = Annotated[
    Path, typer.Option(help="Eval JSONL of held-out questions (none may be in the training data).")
]
StrataOption = Annotated[str, typer.Option(help="Dataset strata to ask.")]

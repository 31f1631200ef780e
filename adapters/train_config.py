"""What a training run needs and what it returns: hyperparameters, the base model, the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Every Linear layer of a Llama-style decoder block: with little data, spreading a small rank over
# all layers learns a format faster than a big rank on attention only (QLoRA paper, section 4).
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Training recipes (:mod:`hybrid_assistant.adapters.context_data`), named here so the command line
# can offer them without importing the retrieval stack.
RECIPES = ("plain", "context", "raft")
DEFAULT_CONTEXT_SHARE = 0.5
"""context: share of examples under a retrieval prompt (see the README's recipe table for how it
was chosen, on training data only)."""
DEFAULT_RAFT_GOLD_SHARE = 0.8
"""raft: share of questions whose passages hold the gold chunk; the RAFT paper's P = 80%."""
CONTEXT_MAX_LENGTH = 1024
"""Tokens per example under a context recipe: three 800-character chunks, the instruction, the
question and the answer fit (about 600 tokens); 512 would cut answers off."""


def context_max_length(passages: int) -> int:
    """The default ``max_length`` for context examples with ``passages`` passages: CONTEXT_MAX_LENGTH
    for up to 3, plus 256 tokens per further passage (an 800-character chunk is ~200 tokens), so that
    more passages do not silently cut the answer off the end of an example."""
    return CONTEXT_MAX_LENGTH + 256 * max(0, passages - 3)


@dataclass(frozen=True)
class TrainConfig:
    """LoRA hyperparameters. Defaults suit a ~100M-parameter model, 50-500 examples, a CPU."""

    rank: int = 16
    """LoRA rank r; must not exceed the server's max_lora_rank."""
    alpha: int = 32
    """LoRA scaling numerator: the update is scaled by alpha / rank (2 is the common ratio)."""
    dropout: float = 0.05
    """Dropout on the LoRA input; a little regularisation for tiny data sets."""
    target_modules: tuple[str, ...] = ALL_LINEAR
    """Short names of the Linear layers inside decoder blocks that get LoRA."""
    epochs: int = 3
    """Passes over the training split (ignored when ``max_steps`` is set)."""
    max_steps: int = 0
    """When > 0, train exactly this many optimiser steps, cycling the training split as many
    epochs as that takes (the last one possibly partial), whatever its size: a data-size sweep
    holds the optimiser's work constant this way. 0: ``epochs`` decides."""
    learning_rate: float = 5e-4
    """Peak AdamW learning rate. Higher than the 2e-4 often used for 7B models: a 135M model and
    a few dozen optimizer steps need a larger step to move at all."""
    batch_size: int = 8
    """Examples per optimizer step."""
    max_length: int = 512
    """Tokens per example (template included); longer examples are cut at the end."""
    warmup_ratio: float = 0.1
    """Fraction of the steps over which the learning rate ramps up linearly, then decays to 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm (0 disables clipping)."""
    val_fraction: float = 0.1
    """Share of the examples held out for the validation loss (at least one when there are two)."""
    seed: int = 0
    """Seeds the LoRA initialisation, dropout, the split and the batch order."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, same examples per epoch)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.rank < 1:
            problems.append(f"rank must be >= 1, got {self.rank!r}")
        if self.alpha <= 0:
            problems.append(f"alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules or any(not m or not m.isidentifier() for m in self.target_modules):
            problems.append(
                f"target_modules must be non-empty module names, got {list(self.target_modules)!r}"
            )
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs!r}")
        if self.max_steps < 0:
            problems.append(f"max_steps must be >= 0 (0: use epochs), got {self.max_steps!r}")
        if not 0.0 < self.learning_rate < 1.0:
            problems.append(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.max_length < 8:
            problems.append(f"max_length must be >= 8, got {self.max_length!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BaseModel:
    """The model adapters are trained for: a local Hugging Face directory and the served name.

    ``name`` goes into ``base_model_name_or_path``; the server refuses adapters whose base model
    is not its own name or alias. ``fingerprint`` (sha256 of the weights), when known, goes into
    the metadata and cache keys.
    """

    path: Path
    name: str
    aliases: frozenset[str] = frozenset()
    fingerprint: str = ""


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float | None


@dataclass(frozen=True)
class StepInfo:
    """Passed to ``on_step`` after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float


@dataclass(frozen=True)
class TrainResult:
    path: Path
    train_loss: float
    """Mean per-token loss over the last epoch (dropout on)."""
    val_loss: float | None
    """Per-token loss on the held-out split after training; None without a split."""
    val_loss_before: float | None
    """The same before training: how far the adapter moved the model on unseen examples."""
    epochs: tuple[EpochStats, ...]
    """Per epoch; ``val_loss`` is None for epochs not validated (see ``loop.validated_epochs``)."""
    steps: int
    train_examples: int
    val_examples: int
    skipped_examples: int
    tokens: int
    """Non-padding tokens through forward and backward passes, all epochs."""
    target_tokens: int
    """Tokens the loss was taken on, all epochs."""
    train_s: float
    """Seconds in optimizer steps (forward, backward, update); excludes validation."""
    wall_s: float
    """Seconds for the whole call: loading, tokenising, training, validating, writing."""
    step_losses: tuple[float, ...] = ()
    """Mean per-token loss of every optimiser step, in order: the training curve."""
    epoch_end_steps: tuple[int, ...] = ()
    """The step count at the end of each epoch: where the curve crosses epoch boundaries."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0

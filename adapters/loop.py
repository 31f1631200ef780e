"""The optimisation loop: loss on target tokens, AdamW with linear warm-up/decay, validation per epoch.

It records the training curve as it goes: the loss of every optimiser step, the step at which
each epoch ends and the validation loss after each epoch, so the step-shaped drops at epoch
boundaries (the model meeting the same examples again) can be drawn from the adapter's metadata.
With ``max_steps`` the run lasts exactly that many steps, cycling the training examples, so a
data-size sweep can hold the optimiser's work constant across data sizes.

A plain loop rather than ``transformers.Trainer``: on a CPU the cost is the arithmetic, and
two things the generic Trainer does not do save part of it (bench/train.py measures it): the
LM head runs only at the positions the loss is taken on (assistant tokens, often a fifth of
a short chat), and batches group similar lengths so little padding is computed. The maths is
the same: per-token cross-entropy averaged over a batch, AdamW, linear warm-up and decay,
gradient clipping.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from hybrid_assistant.adapters.chat_tokens import IGNORE, Batch, EncodedExample, batch_order, collate
from hybrid_assistant.adapters.train_config import EpochStats, StepInfo, TrainConfig

log = logging.getLogger(__name__)

StepCallback = Callable[[StepInfo], None]


class LossComputer:
    """Per-token cross-entropy on target positions, computing logits only where they are needed."""

    def __init__(self, causal_lm: Any) -> None:
        self.model = causal_lm
        config = causal_lm.config
        # Models that post-process logits (soft-capping, scaling) take the full forward pass.
        self.sparse = not (
            getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
        )
        self.decoder = causal_lm.base_model
        self.lm_head = causal_lm.get_output_embeddings()

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """(sum of token losses, number of target tokens)."""
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE
        if self.sparse:
            hidden = self.decoder(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).last_hidden_state
            logits = self.lm_head(hidden[:, :-1][keep])
        else:
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            logits = out.logits[:, :-1][keep]
        loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return loss, int(keep.sum())


@torch.no_grad()
def mean_loss(
    loss_of: LossComputer, examples: Sequence[EncodedExample], batch_size: int, pad_id: int
) -> float:
    """Per-token loss over ``examples`` in eval mode (no dropout)."""
    was_training = loss_of.model.training
    loss_of.model.eval()
    ordered = sorted(examples, key=lambda e: len(e.input_ids))  # less padding; order does not matter
    total, count = 0.0, 0
    for start in range(0, len(ordered), batch_size):
        loss, n = loss_of(collate(ordered[start : start + batch_size], pad_id))
        total += float(loss)
        count += n
    loss_of.model.train(was_training)
    return total / max(count, 1)


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak, then linear decay to 0 (the Hugging Face default)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


MAX_VALIDATIONS = 32
"""Past this many epochs (a ``max_steps`` run on a few examples), validate only every k-th epoch
and the last: validating costs forward passes over the whole validation split, and a run on one
example has one epoch per step."""


@dataclass(frozen=True)
class FitStats:
    epochs: tuple[EpochStats, ...]
    val_loss_before: float | None
    steps: int
    tokens: int
    target_tokens: int
    train_s: float
    step_losses: tuple[float, ...] = ()
    """Mean per-token loss of every optimiser step, in order (dropout on)."""
    epoch_end_steps: tuple[int, ...] = ()
    """The step count at the end of each epoch (the last may be cut short by ``max_steps``)."""


def plan_steps(train_examples: int, config: TrainConfig) -> tuple[int, int]:
    """(optimiser steps, epochs) a run on ``train_examples`` examples takes.

    An epoch is one pass in batches of ``config.batch_size`` (fewer examples than that make one
    batch of all of them). Without ``max_steps`` the run is ``config.epochs`` epochs; with it,
    exactly ``max_steps`` steps, as many epochs as that needs, the last one possibly partial.
    """
    per_epoch = math.ceil(train_examples / config.batch_size)
    if per_epoch == 0:
        return 0, 0
    if config.max_steps:
        return config.max_steps, math.ceil(config.max_steps / per_epoch)
    return per_epoch * config.epochs, config.epochs


def validated_epochs(epochs: int) -> frozenset[int]:
    """The epochs after which the validation loss is computed: all, or every k-th and the last."""
    every = max(1, math.ceil(epochs / MAX_VALIDATIONS))
    return frozenset(range(every, epochs + 1, every)) | {epochs}


def fit(
    model: Any,
    loss_of: LossComputer,
    train: Sequence[EncodedExample],
    val: Sequence[EncodedExample],
    config: TrainConfig,
    pad_id: int,
    *,
    label: str = "adapter",
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> FitStats:
    """Train ``model``'s trainable parameters in place; validate before training and after epochs.

    Every epoch is validated unless there are more than :data:`MAX_VALIDATIONS` of them (see
    :func:`validated_epochs`); the others get ``val_loss`` None.
    """
    total_steps, total_epochs = plan_steps(len(train), config)
    validate_after = validated_epochs(total_epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = linear_schedule(optimizer, math.ceil(total_steps * config.warmup_ratio), total_steps)
    val_before = mean_loss(loss_of, val, config.batch_size * 2, pad_id) if val else None
    lengths = [len(e.input_ids) for e in train]
    epochs: list[EpochStats] = []
    step_losses: list[float] = []
    epoch_end_steps: list[int] = []
    tokens = targets = step = 0
    train_s = 0.0
    bar = tqdm(total=total_steps, desc=f"train {label}", unit="step", disable=not progress)
    try:
        model.train()
        torch.manual_seed(config.seed)  # dropout masks
        for epoch in range(1, total_epochs + 1):
            epoch_loss, epoch_targets = 0.0, 0
            for indices in batch_order(
                lengths, config.batch_size, config.seed + epoch, config.group_by_length
            ):
                if step == total_steps:  # max_steps reached inside the last epoch
                    break
                tick = time.perf_counter()
                batch = collate([train[i] for i in indices], pad_id)
                loss_sum, n = loss_of(batch)
                (loss_sum / n).backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                train_s += time.perf_counter() - tick
                batch_loss = loss_sum.item() / n
                step, tokens, targets = step + 1, tokens + batch.tokens, targets + n
                epoch_loss += batch_loss * n
                epoch_targets += n
                step_losses.append(batch_loss)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{batch_loss:.3f}")
                if on_step is not None:
                    lr = float(scheduler.get_last_lr()[0])
                    on_step(StepInfo(step, total_steps, epoch, batch_loss, lr))
            epoch_end_steps.append(step)
            val_loss = (
                mean_loss(loss_of, val, config.batch_size * 2, pad_id)
                if val and epoch in validate_after
                else None
            )
            epochs.append(EpochStats(epoch, epoch_loss / max(epoch_targets, 1), val_loss))
            log.info(
                "%s epoch %d/%d: train loss %.4f, validation loss %s",
                label, epoch, total_epochs, epochs[-1].train_loss,
                "-" if val_loss is None else f"{val_loss:.4f}",
            )  # fmt: skip
    finally:
        bar.close()
    return FitStats(
        tuple(epochs), val_before, step, tokens, targets, train_s, tuple(step_losses), tuple(epoch_end_steps)
    )

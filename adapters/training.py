"""Train a PEFT LoRA adapter on chat examples with a plain PyTorch loop, and write it atomically.

A plain loop rather than ``transformers.Trainer`` because on a CPU the cost is in the
arithmetic, and two things the generic Trainer does not do save a good part of it (see
bench/train.py): the LM head runs only at the positions the loss is taken on (assistant
tokens, often a fifth of a short chat), and batches group similar lengths so little padding is
computed. The maths is the same: per-token cross-entropy averaged over a batch, AdamW, linear
warm-up and decay, gradient clipping.

The adapter appears under its final name only when complete and validated with the server's
own checks; an interrupted run leaves nothing in the adapter root.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from adapters.chat_tokens import IGNORE, Batch, EncodedExample, batch_order, collate, encode_all
from adapters.data import ChatExample, examples_sha256, split_examples
from adapters.metadata import build_metadata, write_metadata
from adapters.peft_format import BaseModelSpec, inspect_adapter
from adapters.train_config import BaseModel, EpochStats, StepInfo, TrainConfig, TrainResult

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


def _load(base: BaseModel, config: TrainConfig) -> tuple[Any, Any, Any, BaseModelSpec]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model.config.use_cache = False
    spec = BaseModelSpec.from_model(model, base.name, set(base.aliases))
    missing = sorted({t for t in config.target_modules} - {p.rsplit(".", 1)[-1] for p in spec.linear_shapes})
    if missing:
        available = sorted({p.rsplit(".", 1)[-1] for p in spec.linear_shapes})
        raise ValueError(
            f"target_modules {missing} are not Linear layers of {base.name!r}; choose from {available}"
        )
    torch.manual_seed(config.seed)  # LoRA A is initialised randomly
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    # The server matches this against the name it serves, not the local path PEFT records.
    peft_model.peft_config["default"].base_model_name_or_path = base.name
    return tokenizer, peft_model, model, spec


def _check_destination(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not overwrite:
        raise FileExistsError(
            f"adapter directory {str(output_dir)!r} already exists (overwrite it explicitly)"
        )


def _publish(staging: Path, output_dir: Path, overwrite: bool) -> None:
    """Move the finished staging directory to its final name (replacing the old one if allowed)."""
    if not output_dir.exists():
        os.rename(staging, output_dir)  # fails rather than merging if someone else got there first
        return
    _check_destination(output_dir, overwrite)
    trash = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    os.rename(output_dir, trash / "adapter")
    os.rename(staging, output_dir)
    shutil.rmtree(trash, ignore_errors=True)


def train_adapter(
    examples: Sequence[ChatExample],
    base: BaseModel,
    output_dir: Path,
    config: TrainConfig | None = None,
    *,
    val_examples: Sequence[ChatExample] | None = None,
    purpose: str = "",
    data_sha256: str | None = None,
    data_source: str = "",
    extra_metadata: Mapping[str, Any] | None = None,
    max_lora_rank: int = 64,
    overwrite: bool = False,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples`` for ``base`` and write it to ``output_dir``.

    ``val_examples``, when given, is the validation set and ``examples`` all train; otherwise
    ``config.val_fraction`` of ``examples`` is held out (split by ``config.seed``). The
    directory holds ``adapter_config.json``, ``adapter_model.safetensors`` and
    ``adapter_metadata.json`` and has passed the server's validation; it is created under a
    temporary name beside ``output_dir`` and renamed at the end.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    if config.rank > max_lora_rank:
        raise ValueError(f"rank {config.rank} exceeds max_lora_rank {max_lora_rank}")
    if not examples:
        raise ValueError("no training examples")
    output_dir = Path(output_dir)
    _check_destination(output_dir, overwrite)
    if val_examples is None:
        train_set, val_set = split_examples(examples, config.val_fraction, config.seed)
    else:
        train_set, val_set = list(examples), list(val_examples)

    tokenizer, peft_model, causal_lm, spec = _load(base, config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    train_enc, skipped = encode_all(tokenizer, train_set, config.max_length)
    val_enc, skipped_val = encode_all(tokenizer, val_set, config.max_length)
    if not train_enc:
        raise ValueError(
            f"no training example keeps an assistant token within max_length={config.max_length}"
        )
    truncated = sum(e.truncated for e in train_enc + val_enc)
    loss_of = LossComputer(causal_lm)

    steps_per_epoch = math.ceil(len(train_enc) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = math.ceil(total_steps * config.warmup_ratio)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = linear_schedule(optimizer, warmup, total_steps)
    log.info(
        "training %s on %d examples (%d validation, %d skipped, %d truncated): %d steps",
        output_dir.name,
        len(train_enc),
        len(val_enc),
        skipped + skipped_val,
        truncated,
        total_steps,
    )

    val_before = mean_loss(loss_of, val_enc, config.batch_size * 2, pad_id) if val_enc else None
    lengths = [len(e.input_ids) for e in train_enc]
    epochs: list[EpochStats] = []
    tokens = targets = step = 0
    train_s = 0.0
    bar = tqdm(total=total_steps, desc=f"train {output_dir.name}", unit="step", disable=not progress)
    try:
        peft_model.train()
        torch.manual_seed(config.seed)  # dropout masks
        for epoch in range(1, config.epochs + 1):
            epoch_loss, epoch_targets = 0.0, 0
            for indices in batch_order(
                lengths, config.batch_size, config.seed + epoch, config.group_by_length
            ):
                tick = time.perf_counter()
                batch = collate([train_enc[i] for i in indices], pad_id)
                loss_sum, n = loss_of(batch)
                (loss_sum / n).backward()
                batch_loss = loss_sum.item() / n
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                train_s += time.perf_counter() - tick
                step += 1
                tokens += batch.tokens
                targets += n
                epoch_loss += batch_loss * n
                epoch_targets += n
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{batch_loss:.3f}")
                if on_step is not None:
                    on_step(StepInfo(step, total_steps, epoch, batch_loss, float(scheduler.get_last_lr()[0])))
            val_loss = mean_loss(loss_of, val_enc, config.batch_size * 2, pad_id) if val_enc else None
            epochs.append(EpochStats(epoch, epoch_loss / max(epoch_targets, 1), val_loss))
            log.info(
                "%s epoch %d/%d: train loss %.4f, validation loss %s",
                output_dir.name,
                epoch,
                config.epochs,
                epochs[-1].train_loss,
                "-" if val_loss is None else f"{val_loss:.4f}",
            )
    finally:
        bar.close()

    result = TrainResult(
        path=output_dir,
        train_loss=epochs[-1].train_loss,
        val_loss=epochs[-1].val_loss,
        val_loss_before=val_before,
        epochs=tuple(epochs),
        steps=step,
        train_examples=len(train_enc),
        val_examples=len(val_enc),
        skipped_examples=skipped + skipped_val,
        tokens=tokens,
        target_tokens=targets,
        train_s=train_s,
        wall_s=0.0,
    )
    metadata = build_metadata(
        result,
        config,
        base,
        purpose=purpose,
        data_sha256=data_sha256 or examples_sha256([*train_set, *val_set]),
        data_source=data_source,
        examples=len(train_set) + len(val_set),
        truncated=truncated,
        extra=extra_metadata,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=_root_of(output_dir)))
    try:
        # save_embedding_layers=False: embeddings are never trained here, and "auto" would look the
        # base model's name up on the Hugging Face Hub.
        peft_model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
        wall_s = time.perf_counter() - started
        metadata["wall_s"] = round(wall_s, 2)
        write_metadata(staging, metadata)
        _make_readable(staging)
        inspect_adapter(staging, spec, max_lora_rank)  # the server's checks, before anyone sees it
        _publish(staging, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %s (%.0f s, %.0f tokens/s)", output_dir, wall_s, result.tokens_per_s)
    return dataclasses.replace(result, wall_s=wall_s, metadata=metadata)


def _make_readable(directory: Path) -> None:
    # mkdtemp creates 0700 and some writers 0600: give the adapter the usual umask-based modes so
    # a server running as another user can read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _root_of(output_dir: Path) -> Path:
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return output_dir.parent

"""Train a PEFT LoRA adapter on chat examples and write it atomically into an adapter root.

The adapter appears under its final name only when complete and validated with the server's
own checks (:func:`adapters.peft_format.inspect_adapter`); it is built in a hidden staging
directory beside it, so an interrupted or failed run leaves nothing in the adapter root.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hybrid_assistant.adapters.chat_tokens import encode_all
from hybrid_assistant.adapters.data import ChatExample, examples_sha256, split_examples, take_subset
from hybrid_assistant.adapters.loop import LossComputer, StepCallback, fit
from hybrid_assistant.adapters.metadata import build_metadata, write_metadata
from hybrid_assistant.adapters.peft_format import BaseModelSpec, inspect_adapter
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig, TrainResult

log = logging.getLogger(__name__)


def lora_config(config: TrainConfig) -> Any:
    """The PEFT ``LoraConfig`` a training recipe asks for (plain LoRA, no bias)."""
    from peft import LoraConfig  # imported when training, not when the package is

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(base: BaseModel, config: TrainConfig) -> tuple[Any, Any, BaseModelSpec]:
    """(tokenizer, PEFT model with fresh LoRA weights, the base model's spec for validation)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model.config.use_cache = False
    spec = BaseModelSpec.from_model(model, base.name, set(base.aliases))
    available = sorted({p.rsplit(".", 1)[-1] for p in spec.linear_shapes})
    missing = sorted(set(config.target_modules) - set(available))
    if missing:
        raise ValueError(
            f"target_modules {missing} are not Linear layers of {base.name!r}; choose from {available}"
        )
    torch.manual_seed(config.seed)  # LoRA A is initialised randomly
    peft_model = get_peft_model(model, lora_config(config))
    # The server matches this against the name it serves, not the local path PEFT records.
    peft_model.peft_config["default"].base_model_name_or_path = base.name
    return tokenizer, peft_model, spec


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
    ``adapter_metadata.json`` and has passed the server's validation.
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

    tokenizer, peft_model, spec = load_for_training(base, config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    train_enc, skipped = encode_all(tokenizer, train_set, config.max_length)
    val_enc, skipped_val = encode_all(tokenizer, val_set, config.max_length)
    if not train_enc:
        raise ValueError(
            f"no training example keeps an assistant token within max_length={config.max_length}"
        )
    truncated = sum(e.truncated for e in train_enc + val_enc)
    log.info(
        "training %s on %d examples (%d validation, %d skipped, %d truncated)",
        output_dir.name, len(train_enc), len(val_enc), skipped + skipped_val, truncated,
    )  # fmt: skip
    loss_of = LossComputer(peft_model.get_base_model())
    stats = fit(
        peft_model, loss_of, train_enc, val_enc, config, pad_id,
        label=output_dir.name, progress=progress, on_step=on_step,
    )  # fmt: skip
    result = TrainResult(
        path=output_dir,
        train_loss=stats.epochs[-1].train_loss,
        val_loss=stats.epochs[-1].val_loss,
        val_loss_before=stats.val_loss_before,
        epochs=stats.epochs,
        steps=stats.steps,
        train_examples=len(train_enc),
        val_examples=len(val_enc),
        skipped_examples=skipped + skipped_val,
        tokens=stats.tokens,
        target_tokens=stats.target_tokens,
        train_s=stats.train_s,
        wall_s=0.0,
        step_losses=stats.step_losses,
        epoch_end_steps=stats.epoch_end_steps,
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


def train_on_subset(
    examples: Sequence[ChatExample],
    n: int,
    seed: int,
    base: BaseModel,
    output_dir: Path,
    config: TrainConfig | None = None,
    **kwargs: Any,
) -> TrainResult:
    """The unit of a data-size sweep: the first ``n`` of a ``seed``-shuffle, trained with ``seed``.

    For one seed, smaller subsets nest inside larger ones. Pass a fixed ``val_examples`` (kept
    out of ``examples``) so validation losses compare across ``n``; without it the split comes
    out of the subset, and ``n`` = 1 has none.
    """
    config = dataclasses.replace(config or TrainConfig(), seed=seed)
    extra = {"subset": n, "subset_seed": seed, **(kwargs.pop("extra_metadata", None) or {})}
    subset = take_subset(examples, n, seed)
    return train_adapter(subset, base, output_dir, config, extra_metadata=extra, **kwargs)


def describe_result(result: TrainResult) -> str:
    """One line of losses, steps and throughput, as the training commands print it."""
    val = "-" if result.val_loss is None else f"{result.val_loss:.3f}"
    before = "" if result.val_loss_before is None else f" (before {result.val_loss_before:.3f})"
    return (
        f"train loss {result.train_loss:.3f}, validation loss {val}{before}; {result.steps} steps, "
        f"{result.tokens:,} tokens in {result.train_s:.0f} s ({result.tokens_per_s:.0f} tokens/s), "
        f"{result.wall_s:.0f} s in all"
    )


def _check_destination(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not overwrite:
        raise FileExistsError(
            f"adapter directory {str(output_dir)!r} already exists (overwrite it explicitly)"
        )


def _publish(staging: Path, output_dir: Path, overwrite: bool) -> None:
    """Move the finished staging directory to its final name (replacing the old one if allowed).

    A replacement swaps the two directories in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``): at every instant the name holds either the old adapter or the new one,
    so a crash mid-publish never leaves the name empty. Where the exchange is not supported the
    old adapter is moved aside and the new one renamed in: two steps, with a window.
    """
    if not output_dir.exists():
        os.rename(staging, output_dir)  # fails rather than merging if someone else got there first
        return
    _check_destination(output_dir, overwrite)
    if _exchange(staging, output_dir):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old adapter
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    os.rename(output_dir, trash / "adapter")
    os.rename(staging, output_dir)
    shutil.rmtree(trash, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the OS or filesystem cannot (then nothing moved)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # not Linux, or a C library older than glibc 2.28
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


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

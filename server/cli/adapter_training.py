"""``hybrid-assistant adapters train | train-demo | available``: local training and the local registry.

These run on this machine, not through a server: they resolve the base model the way the
server does (``--model-path`` or SmolLM2 converted into the data directory) and write into
the first adapter root (``<data_dir>/adapters`` unless configured).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from hybrid_assistant.adapters.train_config import TrainConfig

if TYPE_CHECKING:
    from hybrid_assistant.adapters.train_config import BaseModel, TrainResult
    from hybrid_assistant.server.config import Settings

log = logging.getLogger(__name__)
_DEFAULTS = TrainConfig()

DataDir = Annotated[Path | None, typer.Option(help="Data directory [HA_DATA_DIR].")]
AdapterRoot = Annotated[
    Path | None, typer.Option(help="Write adapters here. Default: the first configured adapter root.")
]
ModelPath = Annotated[Path | None, typer.Option(help="Local HF model dir [HA_MODEL_PATH]. Default: SmolLM2.")]
ModelName = Annotated[str | None, typer.Option(help="Served model name [HA_MODEL_NAME].")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Threads = Annotated[int | None, typer.Option(help="Torch threads. Default: all cores.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings(data_dir: Path | None, model_path: Path | None, model_name: str | None) -> Settings:
    from pydantic import ValidationError

    from hybrid_assistant.server.config import load_settings

    try:
        return load_settings(None, data_dir=data_dir, model_path=model_path, model_name=model_name)
    except (ValidationError, FileNotFoundError) as exc:
        _fail(" ".join(str(exc).split()))


def _base_model(settings: Settings) -> BaseModel:
    from hybrid_assistant.adapters.train_config import BaseModel
    from hybrid_assistant.server.model_store import ModelNotAvailableError, model_fingerprint, resolve_model

    try:
        resolved = resolve_model(settings.model_path, settings.model_name, settings.models_dir)
    except ModelNotAvailableError as exc:
        _fail(str(exc))
    return BaseModel(resolved.path, resolved.name, resolved.aliases, model_fingerprint(resolved.path))


def _setup(threads: int | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Idle OpenMP threads sleep instead of spinning. Training usually shares the machine (with the
    # server, at least): on 2 busy cores, 2 spinning threads made a training step ~10x slower than
    # 2 passive ones. libgomp reads it when torch is loaded; an explicit value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        log.debug("torch was imported before OMP_WAIT_POLICY was set; it may not apply")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _describe(result: TrainResult) -> str:
    val = "-" if result.val_loss is None else f"{result.val_loss:.3f}"
    before = "" if result.val_loss_before is None else f" (before {result.val_loss_before:.3f})"
    return (
        f"train loss {result.train_loss:.3f}, validation loss {val}{before}; {result.steps} steps, "
        f"{result.tokens:,} tokens in {result.train_s:.0f} s ({result.tokens_per_s:.0f} tokens/s), "
        f"{result.wall_s:.0f} s in all"
    )


def train(
    data: Annotated[Path, typer.Option("--data", help="Training examples, JSONL (chat or prompt/response).")],
    name: Annotated[str, typer.Option("--name", help="Adapter name: the directory under the adapter root.")],
    purpose: Annotated[str, typer.Option(help="What the adapter is for (metadata).")] = "",
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = _DEFAULTS.rank,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scaling alpha/rank).")] = _DEFAULTS.alpha,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = _DEFAULTS.dropout,
    target_modules: Annotated[str, typer.Option(help="Comma-separated Linear layer names.")] = ",".join(
        _DEFAULTS.target_modules
    ),
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = _DEFAULTS.epochs,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = _DEFAULTS.learning_rate,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = _DEFAULTS.batch_size,
    max_length: Annotated[int, typer.Option(help="Tokens per example.")] = _DEFAULTS.max_length,
    warmup_ratio: Annotated[float, typer.Option(help="Warm-up share of the steps.")] = _DEFAULTS.warmup_ratio,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _DEFAULTS.weight_decay,
    max_grad_norm: Annotated[
        float, typer.Option(help="Gradient clipping (0: off).")
    ] = _DEFAULTS.max_grad_norm,
    val_fraction: Annotated[float, typer.Option(help="Held-out share.")] = _DEFAULTS.val_fraction,
    seed: Annotated[int, typer.Option(help="Seed for init, dropout, split, order.")] = _DEFAULTS.seed,
    subset: Annotated[
        int | None, typer.Option(help="Train on the first N examples of a shuffle by --seed.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing adapter of that name.")] = False,
    adapter_root: AdapterRoot = None,
    data_dir: DataDir = None,
    model_path: ModelPath = None,
    model_name: ModelName = None,
    progress: Progress = True,
    threads: Threads = None,
) -> None:
    """Train a LoRA adapter on a JSONL file into the adapter root (loss on assistant tokens only)."""
    _setup(threads)  # before anything imports torch
    from hybrid_assistant.adapters.data import DataValidationError, file_sha256, load_examples, take_subset
    from hybrid_assistant.adapters.errors import AdapterError
    from hybrid_assistant.adapters.paths import check_adapter_name
    from hybrid_assistant.adapters.training import train_adapter

    try:
        check_adapter_name(name)
        config = TrainConfig(
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
            epochs=epochs,
            learning_rate=lr,
            batch_size=batch_size,
            max_length=max_length,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            val_fraction=val_fraction,
            seed=seed,
        )
        examples = load_examples(data)
        extra: dict[str, object] = {}
        if subset is not None:
            examples = take_subset(examples, subset, seed)
            extra = {"subset": subset, "subset_seed": seed}
    except (DataValidationError, AdapterError, ValueError) as exc:
        _fail(str(exc))
    settings = _settings(data_dir, model_path, model_name)
    root = adapter_root or settings.resolved_adapter_roots[0]
    if (root / name).exists() and not force:
        _fail(f"adapter {name!r} already exists at {str(root / name)!r}; pass --force to replace it")
    base = _base_model(settings)
    try:
        result = train_adapter(
            examples,
            base,
            root / name,
            config,
            purpose=purpose,
            data_sha256=file_sha256(data),
            data_source=str(data),
            extra_metadata=extra,
            max_lora_rank=settings.max_lora_rank,
            overwrite=force,
            progress=progress,
        )
    except (ValueError, FileExistsError, AdapterError) as exc:
        _fail(str(exc))
    typer.echo(f"trained {name} -> {result.path}\n  {_describe(result)}")


def train_demo(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Train just this demo adapter (style, knowledge).")
    ] = None,
    documents: Annotated[
        bool, typer.Option("--documents", help="Also train the knowledge adapter on the documents (slower).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if a cached adapter matches.")] = False,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N examples of each set (a quick trial run).")
    ] = None,
    adapter_root: AdapterRoot = None,
    data_dir: DataDir = None,
    model_path: ModelPath = None,
    model_name: ModelName = None,
    progress: Progress = True,
    threads: Threads = None,
) -> None:
    """Build the demo data sets from eval/data/demo and train the style and knowledge adapters (cached)."""
    _setup(threads)  # before anything imports torch
    from hybrid_assistant.adapters.demo import train_demo as run_demo

    settings = _settings(data_dir, model_path, model_name)
    root = adapter_root or settings.resolved_adapter_roots[0]
    base = _base_model(settings)
    try:
        outcomes = run_demo(
            base,
            root,
            settings.data_dir / "demo-data",
            names=only or ("style", "knowledge"),
            include_documents=documents,
            limit=limit,
            force=force,
            max_lora_rank=settings.max_lora_rank,
            progress=progress,
        )
    except (ValueError, FileExistsError) as exc:
        _fail(str(exc))
    for outcome in outcomes:
        if outcome.result is None:
            meta = outcome.metadata
            typer.echo(
                f"{outcome.name}: reused {outcome.path} (train loss {meta.get('train_loss', '-')}, "
                f"validation loss {meta.get('val_loss', '-') or '-'})"
            )
        else:
            typer.echo(f"{outcome.name}: trained -> {outcome.path}\n  {_describe(outcome.result)}")


def available(
    adapter_root: Annotated[
        list[Path] | None,
        typer.Option(help="Adapter root to scan, repeatable. Default: the configured roots."),
    ] = None,
    data_dir: DataDir = None,
    model_path: ModelPath = None,
    model_name: ModelName = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the adapters on disk, validated with the server's checks against the base model."""
    from hybrid_assistant.adapters.peft_format import BaseModelSpec
    from hybrid_assistant.adapters.registry import scan_adapters

    settings = _settings(data_dir, model_path, model_name)
    base = _base_model(settings)
    spec = BaseModelSpec.from_config_dir(base.path, base.name, set(base.aliases))
    roots = adapter_root or settings.resolved_adapter_roots
    entries = scan_adapters(roots, spec, settings.max_lora_rank)
    if json_out:
        rows = [
            {
                **dataclasses.asdict(e),
                "path": str(e.path),
                "root": str(e.root),
                "shadowed_by": str(e.shadowed_by or ""),
            }
            for e in entries
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not entries:
        typer.echo(f"no adapters under {[str(r) for r in roots]}")
        return
    header = ("NAME", "VALID", "BASE MODEL", "EXAMPLES", "VAL LOSS", "PURPOSE")
    rows_text = [
        (
            e.name,
            "yes" if e.valid else "NO",
            e.base_model,
            e.examples or "-",
            e.val_loss or "-",
            e.purpose[:60],
        )
        for e in entries
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows_text)) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for entry, row in zip(entries, rows_text, strict=True):
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        for problem in entry.problems:
            typer.echo(f"    - {problem}")
        if entry.shadowed_by is not None:
            typer.echo(f"    - shadowed by {entry.shadowed_by} (an earlier root)")

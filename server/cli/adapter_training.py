"""``hybrid-assistant adapters train | train-demo | available``: local training and the local registry.

These run on this machine, not through a server: they resolve the base model the way the
server does (``--model-path`` or SmolLM2 converted into the data directory) and write into
the first adapter root (``<data_dir>/adapters`` unless configured).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.adapters.train_config import (
    DEFAULT_CONTEXT_SHARE,
    DEFAULT_RAFT_GOLD_SHARE,
    RECIPES,
    TrainConfig,
    context_max_length,
)
from hybrid_assistant.server.cli.training_setup import (
    AdapterRoot,
    DataDir,
    ModelName,
    ModelPath,
    Progress,
    Threads,
    base_model,
    fail,
    local_settings,
    setup_training,
)

_DEFAULTS = TrainConfig()


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
    max_length: Annotated[
        int | None,
        typer.Option(
            help=f"Tokens per example. Default: {_DEFAULTS.max_length}; with a context recipe "
            f"{context_max_length(3)} for 3 passages, 256 more per further passage."
        ),
    ] = None,
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
    recipe: Annotated[
        str,
        typer.Option(
            help="plain: the examples as they are. context: --context-share of them under the retrieval "
            "prompt the server builds (style that survives RAG). raft: --data is question/answer/doc_id "
            "JSONL; each question gets its gold chunk among distractors (RAFT)."
        ),
    ] = "plain",
    context_docs: Annotated[
        Path | None, typer.Option(help="Document folder the context passages are cut from (context, raft).")
    ] = None,
    context_share: Annotated[
        float | None,
        typer.Option(
            help=f"context: share of examples given passages (default {DEFAULT_CONTEXT_SHARE:g}); "
            f"raft: share with the gold chunk (default {DEFAULT_RAFT_GOLD_SHARE:g})."
        ),
    ] = None,
    context_passages: Annotated[
        int, typer.Option(help="Passages per context prompt (raft: gold included).")
    ] = 3,
    quote: Annotated[
        bool, typer.Option("--quote", help="raft: the target quotes the gold sentence.")
    ] = False,
    adapter_root: AdapterRoot = None,
    data_dir: DataDir = None,
    model_path: ModelPath = None,
    model_name: ModelName = None,
    progress: Progress = True,
    threads: Threads = None,
) -> None:
    """Train a LoRA adapter on a JSONL file into the adapter root (loss on assistant tokens only)."""
    setup_training(threads)  # before anything imports torch
    from hybrid_assistant.adapters.context_data import ContextDataError, ContextRecipe, recipe_examples
    from hybrid_assistant.adapters.data import (
        DataValidationError,
        examples_sha256,
        file_sha256,
        load_examples,
        take_subset,
    )
    from hybrid_assistant.adapters.errors import AdapterError
    from hybrid_assistant.adapters.paths import check_adapter_name
    from hybrid_assistant.adapters.training import describe_result, train_adapter

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
            max_length=max_length
            or (_DEFAULTS.max_length if recipe == "plain" else context_max_length(context_passages)),
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            val_fraction=val_fraction,
            seed=seed,
        )
        if recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {list(RECIPES)}, got {recipe!r}")
        extra: dict[str, object] = {}
        if recipe == "plain":
            if context_docs is not None or context_share is not None or quote:
                raise ValueError("--context-docs, --context-share and --quote need --recipe context or raft")
            examples = load_examples(data)
            data_sha256 = file_sha256(data)
            if subset is not None:
                examples = take_subset(examples, subset, seed)
        else:
            if context_docs is None:
                raise ValueError(f"--recipe {recipe} needs --context-docs (the folder passages are cut from)")
            if quote and recipe != "raft":
                raise ValueError("--quote needs --recipe raft")
            default_share = DEFAULT_RAFT_GOLD_SHARE if recipe == "raft" else DEFAULT_CONTEXT_SHARE
            share = default_share if context_share is None else context_share
            context = ContextRecipe(recipe, share, context_passages, seed, quote)
            # Passages cut as the serving index cuts documents (its configured chunk size).
            chunking = local_settings(data_dir, model_path, model_name).retrieval
            examples = recipe_examples(
                data, context, context_docs, subset=subset,
                chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
            )  # fmt: skip
            data_sha256 = examples_sha256(examples)
            extra.update(context.metadata(context_docs))
        if subset is not None:
            extra.update({"subset": subset, "subset_seed": seed})
    except (DataValidationError, ContextDataError, AdapterError, ValueError, OSError) as exc:
        fail(str(exc))
    settings = local_settings(data_dir, model_path, model_name)
    root = adapter_root or settings.resolved_adapter_roots[0]
    if (root / name).exists() and not force:
        fail(f"adapter {name!r} already exists at {str(root / name)!r}; pass --force to replace it")
    base = base_model(settings)
    try:
        result = train_adapter(
            examples,
            base,
            root / name,
            config,
            purpose=purpose,
            data_sha256=data_sha256,
            data_source=str(data),
            extra_metadata=extra,
            max_lora_rank=settings.max_lora_rank,
            overwrite=force,
            progress=progress,
        )
    except (ValueError, FileExistsError, AdapterError) as exc:
        fail(str(exc))
    typer.echo(f"trained {name} -> {result.path}\n  {describe_result(result)}")


def train_demo(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Train just this demo adapter (style, knowledge, style-context, raft)."),
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
    """Build the demo data sets from eval/data/demo and train the four demo adapters (cached)."""
    setup_training(threads)  # before anything imports torch
    from hybrid_assistant.adapters.demo import SPECS, describe_outcome
    from hybrid_assistant.adapters.demo import train_demo as run_demo

    settings = local_settings(data_dir, model_path, model_name)
    root = adapter_root or settings.resolved_adapter_roots[0]
    base = base_model(settings)
    try:
        outcomes = run_demo(
            base,
            root,
            settings.data_dir / "demo-data",
            names=only or tuple(SPECS),
            include_documents=documents,
            limit=limit,
            force=force,
            max_lora_rank=settings.max_lora_rank,
            progress=progress,
        )
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    for outcome in outcomes:
        typer.echo(describe_outcome(outcome))


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

    settings = local_settings(data_dir, model_path, model_name)
    base = base_model(settings)
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

"""Training benchmark: the demo adapters with our loop, against transformers.Trainer + PEFT.

Same run, same machine, same data (the same tokenised examples and labels), same
hyperparameters, same LoRA initialisation. Every run is its own process, so peak memory
(ru_maxrss) belongs to that run alone and one run's caches do not help the next.

    python bench/train.py            # both demo adapters, full epochs (~30 min on 2 idle cores)
    python bench/train.py --quick    # 48 examples, 1 epoch, each set (~4 min)
    python bench/train.py --quick --repeats 3 --sets style

Reported per run: tokens/s over the optimizer steps (forward + backward + update; the
validation passes are excluded), wall time of the whole process (load, tokenise, train,
validate each epoch, write), peak RSS, and the final train/validation loss (validation loss
computed by the same function for both, on the same held-out examples). The machine's
load average before and after each run is recorded: on a shared machine, compare ratios
from runs whose load was alike. Both run with OMP_WAIT_POLICY=PASSIVE, as the training CLI
does (spinning OpenMP threads collapse throughput when the cores are shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import median, table, write_results

QUICK = {"limit": 48, "epochs": 1}
IMPLS = ("ours", "trainer")


# --------------------------------------------------------------------------- worker side


def _setup(name: str, quick: bool, data_dir: Path | None) -> tuple[Any, Any, list[Any], list[Any]]:
    """(base model, config, train examples, validation examples) exactly as train-demo uses them."""
    import dataclasses

    from hybrid_assistant.adapters.data import load_examples, split_examples
    from hybrid_assistant.adapters.demo import SPECS, build_demo_data
    from hybrid_assistant.adapters.train_config import BaseModel
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import model_fingerprint, resolve_model

    settings = load_settings(None, data_dir=data_dir)
    resolved = resolve_model(settings.model_path, settings.model_name, settings.models_dir)
    base = BaseModel(resolved.path, resolved.name, resolved.aliases, model_fingerprint(resolved.path))
    config = SPECS[name].config
    if quick:
        config = dataclasses.replace(config, epochs=QUICK["epochs"])
    work = Path(tempfile.mkdtemp(prefix="bench-train-data-"))
    data = build_demo_data(work, limit=QUICK["limit"] if quick else None)[name]
    examples = load_examples(data.train)
    if data.validation is not None:
        return base, config, examples, load_examples(data.validation)
    train, val = split_examples(examples, config.val_fraction, config.seed)
    return base, config, train, val


def run_ours(name: str, quick: bool, data_dir: Path | None, out: Path) -> dict[str, Any]:
    from hybrid_assistant.adapters.training import train_adapter

    base, config, train, val = _setup(name, quick, data_dir)
    result = train_adapter(train, base, out / name, config, val_examples=val, progress=False)
    return {
        "tokens": result.tokens,
        "train_s": result.train_s,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "steps": result.steps,
        "examples": result.train_examples,
        "epochs": config.epochs,
    }


def run_trainer(name: str, quick: bool, data_dir: Path | None, out: Path) -> dict[str, Any]:
    """The obvious alternative: transformers.Trainer on the same tokenised examples."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from hybrid_assistant.adapters.chat_tokens import collate, encode_all
    from hybrid_assistant.adapters.loop import LossComputer, mean_loss
    from hybrid_assistant.adapters.training import lora_config

    base, config, train, val = _setup(name, quick, data_dir)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model.config.use_cache = False
    torch.manual_seed(config.seed)  # the same LoRA initialisation as ours
    peft_model = get_peft_model(model, lora_config(config))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_enc, _ = encode_all(tokenizer, train, config.max_length)
    val_enc, _ = encode_all(tokenizer, val, config.max_length)

    def collator(features: list[Any]) -> dict[str, torch.Tensor]:
        batch = collate(features, pad_id)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}

    class StepTimer(TrainerCallback):
        seconds = 0.0
        started = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds += time.perf_counter() - self.started

    steps = math.ceil(len(train_enc) / config.batch_size) * config.epochs
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(steps * config.warmup_ratio),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        eval_strategy="epoch",  # the same validation work as ours
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    timer = StepTimer()
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train_enc,
        eval_dataset=val_enc,
        data_collator=collator,
        callbacks=[timer],
    )
    metrics = trainer.train().metrics
    peft_model.save_pretrained(str(out / "trainer-adapter"), save_embedding_layers=False)
    loss_of = LossComputer(peft_model.get_base_model())
    train_loss = mean_loss(loss_of, train_enc, config.batch_size * 2, pad_id)
    return {
        "tokens": sum(len(e.input_ids) for e in train_enc) * config.epochs,
        "train_s": timer.seconds,
        "train_loss_mean_all_steps": metrics.get("train_loss"),
        "train_loss_after": train_loss,
        "val_loss": mean_loss(loss_of, val_enc, config.batch_size * 2, pad_id),
        "steps": trainer.state.global_step,
        "examples": len(train_enc),
        "epochs": config.epochs,
    }


def worker(impl: str, name: str, quick: bool, data_dir: Path | None, result_file: Path) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        run = run_ours if impl == "ours" else run_trainer
        values = run(name, quick, data_dir, Path(out))
    values["wall_s"] = time.perf_counter() - started
    values["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_file.write_text(json.dumps(values))


# --------------------------------------------------------------------------- driver side


def measure(impl: str, name: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_file = Path(handle.name)
    command = [sys.executable, __file__, "--worker", impl, "--sets", name, "--result-file", str(result_file)]
    if quick:
        command.append("--quick")
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    load_before = os.getloadavg()[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training CLI runs; the same for both
    subprocess.run(command, check=True, env=env)
    values = json.loads(result_file.read_text())
    result_file.unlink()
    values.update(
        impl=impl,
        set=name,
        tokens_per_s=values["tokens"] / values["train_s"],
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return values


def summarise(
    runs: list[dict[str, Any]], sets: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary = []
    for name in sets:
        for impl in IMPLS:
            mine = [r for r in runs if r["set"] == name and r["impl"] == impl]
            summary.append(
                {
                    "set": name,
                    "impl": impl,
                    "tokens_per_s": median([r["tokens_per_s"] for r in mine]),
                    "train_s": median([r["train_s"] for r in mine]),
                    "wall_s": median([r["wall_s"] for r in mine]),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                    "val_loss": mine[0]["val_loss"],
                }
            )
    ratios = []
    for name in sets:
        ours, trainer = (next(s for s in summary if s["set"] == name and s["impl"] == i) for i in IMPLS)
        ratios.append(
            {
                "set": name,
                "tokens_per_s_x": ours["tokens_per_s"] / trainer["tokens_per_s"],
                "wall_x": trainer["wall_s"] / ours["wall_s"],
                "peak_rss_x": trainer["peak_rss_mib"] / ours["peak_rss_mib"],
                "val_loss_ours": ours["val_loss"],
                "val_loss_trainer": trainer["val_loss"],
            }
        )
    return summary, ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['limit']} examples, 1 epoch")
    parser.add_argument("--sets", nargs="+", default=["style", "knowledge"], choices=["style", "knowledge"])
    parser.add_argument("--data-dir", type=Path, default=None, help="where the base model is cached")
    parser.add_argument("--repeats", type=int, default=1, help="runs per implementation and set (medians)")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sets[0], args.quick, args.data_dir, args.result_file)
        return

    runs = []
    for name in args.sets:
        for repeat in range(args.repeats):
            # Alternate which goes first: on a shared machine, load drifts over minutes.
            for impl in IMPLS if repeat % 2 == 0 else IMPLS[::-1]:
                print(f"running {impl} on {name}{' (quick)' if args.quick else ''} ...", flush=True)
                runs.append({**measure(impl, name, args.quick, args.data_dir), "repeat": repeat})
    summary, ratios = summarise(runs, args.sets)
    columns = ["set", "impl", "repeat", "examples", "epochs", "steps", "tokens", "train_s", "tokens_per_s"]
    columns += ["wall_s", "peak_rss_mib", "val_loss", "load_before", "load_after"]
    print(table(runs, columns, title="training runs (each in its own process)"))
    print()
    print(table(summary, list(summary[0]), title=f"median of {args.repeats} run(s) each"))
    print()
    print(table(ratios, list(ratios[0]), title="ours vs transformers.Trainer (x > 1: ours faster / smaller)"))
    path = write_results(
        "train-quick" if args.quick else "train",
        {
            "quick": args.quick,
            "quick_settings": QUICK if args.quick else None,
            "repeats": args.repeats,
            "runs": runs,
            "summary": summary,
            "ratios": ratios,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""LoRA training on the tiny model: the loss falls, the adapter is standard PEFT, runs are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hybrid_assistant.adapters.training as training
from hybrid_assistant.adapters.peft_format import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    BaseModelSpec,
    inspect_adapter,
)
from hybrid_assistant.adapters.train_config import BaseModel, StepInfo, TrainConfig, TrainResult
from hybrid_assistant.adapters.training import train_adapter, train_on_subset
from tests.adapters.conftest import FAST, fox_examples


@pytest.fixture(scope="module")
def trained(tiny_base: BaseModel, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("trained")
    return train_adapter(
        fox_examples(),
        tiny_base,
        root / "fox",
        FAST,
        purpose="say the fox line",
        data_source="fox.jsonl",
        progress=False,
    )


def test_a_few_steps_lower_the_loss(trained: TrainResult) -> None:
    assert trained.steps == 12  # 14 training examples / batch 4 -> 4 steps, x 3 epochs
    assert trained.train_examples == 14 and trained.val_examples == 2
    assert trained.val_loss_before is not None and trained.val_loss is not None
    assert trained.val_loss < trained.val_loss_before / 2
    losses = [e.train_loss for e in trained.epochs]
    assert losses == sorted(losses, reverse=True)
    assert trained.tokens > trained.target_tokens > 0
    assert trained.tokens_per_s > 0 and trained.wall_s >= trained.train_s > 0


def test_writes_a_standard_peft_adapter_the_server_accepts(
    trained: TrainResult, tiny_base: BaseModel
) -> None:
    path = trained.path
    assert sorted(p.name for p in path.iterdir() if p.name != "README.md") == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE]
    )
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["base_model_name_or_path"] == tiny_base.name
    assert config["r"] == 4 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA"
    model = AutoModelForCausalLM.from_pretrained(tiny_base.path)
    spec = inspect_adapter(path, BaseModelSpec.from_model(model, tiny_base.name), max_rank=64)
    assert spec.rank == 4 and set(spec.target_modules) == set(FAST.target_modules)
    assert spec.metadata["purpose"] == "say the fox line"

    inputs = torch.tensor([[1, 5, 9, 12, 40]])
    with torch.no_grad():
        before = model(inputs).logits
        peft_model = PeftModel.from_pretrained(model, path)
        after = peft_model(inputs).logits
    assert not torch.allclose(before, after)


def test_metadata_records_how_the_adapter_was_made(trained: TrainResult) -> None:
    meta = json.loads((trained.path / METADATA_FILE).read_text())
    assert meta == trained.metadata
    assert meta["base_model"] == "tiny-llama" and meta["data_file"] == "fox.jsonl"
    assert len(meta["data_sha256"]) == 64
    assert (meta["examples"], meta["train_examples"], meta["val_examples"]) == (16, 14, 2)
    assert (meta["rank"], meta["epochs"], meta["learning_rate"], meta["seed"]) == (4, 3, 1e-2, 0)
    assert meta["val_loss"] == round(trained.val_loss or 0, 4)
    assert len(meta["val_loss_by_epoch"].split()) == 3
    for key in ("train_loss", "wall_s", "tokens_trained", "tokens_per_s", "created", "torch", "peft"):
        assert meta[key] not in ("", None), key
    assert all(
        isinstance(v, str | int | float | bool) for v in meta.values()
    )  # flat: the server shows strings


def test_same_seed_same_weights(tiny_base: BaseModel, tmp_path: Path) -> None:
    config = TrainConfig(rank=4, epochs=1, batch_size=4, max_length=64, learning_rate=5e-3)
    a = train_adapter(fox_examples(8), tiny_base, tmp_path / "a", config, progress=False)
    b = train_adapter(fox_examples(8), tiny_base, tmp_path / "b", config, progress=False)
    wa, wb = load_file(a.path / WEIGHTS_FILE), load_file(b.path / WEIGHTS_FILE)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_interrupted_run_leaves_nothing_behind(tiny_base: BaseModel, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()

    def interrupt(info: StepInfo) -> None:
        if info.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(fox_examples(), tiny_base, root / "fox", FAST, progress=False, on_step=interrupt)
    assert list(root.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing_behind(
    tiny_base: BaseModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(training, "inspect_adapter", broken)
    config = TrainConfig(rank=4, epochs=1, batch_size=8, max_length=64)
    with pytest.raises(OSError, match="disk full"):
        train_adapter(fox_examples(4), tiny_base, root / "fox", config, progress=False)
    assert list(root.iterdir()) == []


def test_existing_adapters_are_replaced_only_when_asked(tiny_base: BaseModel, tmp_path: Path) -> None:
    config = TrainConfig(rank=4, epochs=1, batch_size=8, max_length=64)
    first = train_adapter(fox_examples(4), tiny_base, tmp_path / "fox", config, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        train_adapter(fox_examples(4), tiny_base, tmp_path / "fox", config, progress=False)
    second = train_adapter(
        fox_examples(4),
        tiny_base,
        tmp_path / "fox",
        TrainConfig(rank=8, epochs=1, max_length=64),
        overwrite=True,
        progress=False,
    )
    assert first.path == second.path
    assert json.loads((second.path / CONFIG_FILE).read_text())["r"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox"]  # no staging or trash left


def test_bad_settings_fail_before_training(tiny_base: BaseModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rank 128 exceeds max_lora_rank 64"):
        train_adapter(fox_examples(4), tiny_base, tmp_path / "x", TrainConfig(rank=128), progress=False)
    with pytest.raises(ValueError, match=r"\['qkv'\] are not Linear layers"):
        train_adapter(
            fox_examples(4), tiny_base, tmp_path / "x", TrainConfig(target_modules=("qkv",)), progress=False
        )
    with pytest.raises(
        ValueError, match=r"epochs must be >= 1, got 0; learning_rate must be in \(0, 1\), got 2\.0"
    ):
        TrainConfig(learning_rate=2.0, epochs=0)
    assert not (tmp_path / "x").exists()


def test_explicit_validation_set_and_no_split(tiny_base: BaseModel, tmp_path: Path) -> None:
    config = TrainConfig(rank=4, epochs=1, batch_size=4, max_length=64, val_fraction=0.0)
    result = train_adapter(fox_examples(1), tiny_base, tmp_path / "one", config, progress=False)
    assert (result.train_examples, result.val_examples, result.val_loss) == (1, 0, None)
    result = train_adapter(
        fox_examples(4), tiny_base, tmp_path / "val", config, val_examples=fox_examples(2), progress=False
    )
    assert (result.train_examples, result.val_examples) == (4, 2) and result.val_loss is not None


def test_train_on_subset_is_the_sweeps_unit(tiny_base: BaseModel, tmp_path: Path) -> None:
    config = TrainConfig(rank=4, epochs=1, batch_size=4, max_length=64)
    examples = fox_examples(12)
    result = train_on_subset(
        examples[:10], 4, 7, tiny_base, tmp_path / "n4-s7", config, val_examples=examples[10:], progress=False
    )
    assert (result.train_examples, result.val_examples) == (4, 2)
    assert (result.metadata["subset"], result.metadata["subset_seed"], result.metadata["seed"]) == (4, 7, 7)

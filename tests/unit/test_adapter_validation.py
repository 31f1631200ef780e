"""PEFT adapter validation and path containment (adapters/)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from adapters.errors import AdapterNotFoundError, AdapterValidationError, UnsafeAdapterPathError
from adapters.paths import check_adapter_name, resolve_adapter_dir
from adapters.peft_format import BaseModelSpec, inspect_adapter, load_lora_weights
from tests.helpers import build_adapter


@pytest.fixture(scope="module")
def base_spec(tiny_model_dir: Path) -> BaseModelSpec:
    return BaseModelSpec.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "tiny-llama")


@pytest.fixture
def adapter(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return build_adapter(tiny_model_dir, tmp_path / "ad", rank=4, alpha=16, targets=("q_proj", "up_proj"))


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def problems_of(directory: Path, base: BaseModelSpec, max_rank: int = 64) -> list[str]:
    with pytest.raises(AdapterValidationError) as info:
        inspect_adapter(directory, base, max_rank)
    return info.value.problems


def test_valid_adapter_is_described(adapter: Path, base_spec: BaseModelSpec) -> None:
    spec = inspect_adapter(adapter, base_spec, 64)
    assert spec.rank == 4
    assert spec.target_modules == ("q_proj", "up_proj")
    assert len(spec.modules) == 4  # 2 layers x 2 targets
    assert all(m.scaling == 4.0 for m in spec.modules.values())  # alpha 16 / r 4
    assert len(spec.fingerprint) == 64
    weights = load_lora_weights(spec, base_spec_dtype())
    pair = next(iter(weights.values()))
    assert pair.a.shape == (4, 128)


def base_spec_dtype():
    import torch

    return torch.float32


def test_rslora_scaling(tiny_model_dir: Path, tmp_path: Path, base_spec: BaseModelSpec) -> None:
    directory = build_adapter(tiny_model_dir, tmp_path / "rs", rank=16, alpha=8, use_rslora=True)
    spec = inspect_adapter(directory, base_spec, 64)
    assert next(iter(spec.modules.values())).scaling == pytest.approx(8 / 4)


def test_every_problem_is_reported_at_once(adapter: Path, base_spec: BaseModelSpec) -> None:
    edit_config(adapter, r=128, use_dora=True, bias="all", base_model_name_or_path="org/other-7b")
    problems = problems_of(adapter, base_spec, max_rank=64)
    text = " | ".join(problems)
    for fragment in ("DoRA", "bias='all'", "rank 128 exceeds", "org/other-7b", "weights have rank 4"):
        assert fragment in text
    assert len(problems) >= 5


def test_pickle_weights_are_refused(adapter: Path, base_spec: BaseModelSpec) -> None:
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    assert any("pickle" in p for p in problems_of(adapter, base_spec))


def test_missing_files_and_bad_json(adapter: Path, base_spec: BaseModelSpec, tmp_path: Path) -> None:
    (adapter / "adapter_config.json").write_text("{not json")
    assert any("not readable JSON" in p for p in problems_of(adapter, base_spec))
    empty = tmp_path / "empty"
    empty.mkdir()
    problems = problems_of(empty, base_spec)
    assert any("adapter_config.json is missing" in p for p in problems)
    assert any("adapter_model.safetensors is missing" in p for p in problems)


def test_wrong_base_model_shapes(tmp_path: Path, base_spec: BaseModelSpec, adapter: Path) -> None:
    other = BaseModelSpec(
        name="tiny-llama",
        aliases=frozenset({"tiny-llama"}),
        linear_shapes={k: (v[0] * 2, v[1]) for k, v in base_spec.linear_shapes.items()},
    )
    assert any("do not fit the base layer" in p for p in problems_of(adapter, other))
    missing = BaseModelSpec("tiny-llama", frozenset({"tiny-llama"}), {})
    assert any("does not exist in base model" in p for p in problems_of(adapter, missing))


def test_unsafe_names() -> None:
    assert check_adapter_name("style-v2.1_ok") == "style-v2.1_ok"
    for bad in ("", "../x", "a/b", "-lead", "x" * 65, "a b", "a..b"):
        with pytest.raises(UnsafeAdapterPathError):
            check_adapter_name(bad)


def test_paths_stay_inside_roots(adapter: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(adapter, root / "good")
    assert resolve_adapter_dir("good", [root]) == (root / "good").resolve()
    assert resolve_adapter_dir(str(root / "good"), [root]) == (root / "good").resolve()
    (root / "link").symlink_to(adapter, target_is_directory=True)
    for bad in ("../ad", str(adapter), "link", "good/../../ad"):
        with pytest.raises(UnsafeAdapterPathError):
            resolve_adapter_dir(bad, [root])
    with pytest.raises(AdapterNotFoundError):
        resolve_adapter_dir("nope", [root])
    with pytest.raises(UnsafeAdapterPathError):
        resolve_adapter_dir("good", [])


def test_file_symlink_escape_is_refused(adapter: Path, base_spec: BaseModelSpec, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text((adapter / "adapter_config.json").read_text())
    os.unlink(adapter / "adapter_config.json")
    (adapter / "adapter_config.json").symlink_to(secret)
    assert any("symlink" in p for p in problems_of(adapter, base_spec))

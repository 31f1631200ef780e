"""PEFT adapter validation and path containment (adapters/)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hybrid_assistant.adapters.errors import (
    AdapterNotFoundError,
    AdapterValidationError,
    UnsafeAdapterPathError,
)
from hybrid_assistant.adapters.paths import check_adapter_name, resolve_adapter_dir
from hybrid_assistant.adapters.peft_format import (
    BaseModelSpec,
    check_lora_weights,
    inspect_adapter,
    load_lora_weights,
)
from hybrid_assistant.testing.models import build_adapter


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


# ---------------------------------------------------------------- issue 10: hostile adapters


def set_weights(directory: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_float_rank_cannot_bypass_the_rank_cap(
    tiny_model_dir: Path, tmp_path: Path, base_spec: BaseModelSpec
) -> None:
    # Rank-8 weights with "r": 8.0 loaded against max_lora_rank 4: the float skipped the cap.
    directory = build_adapter(tiny_model_dir, tmp_path / "f", rank=8)
    edit_config(directory, r=8.0)
    problems = problems_of(directory, base_spec, max_rank=4)
    assert "r must be a positive integer, got 8.0 (float)" in problems
    # The same through rank_pattern, and a float is refused even under the cap.
    edit_config(directory, r=8, rank_pattern={"q_proj": 8.0})
    assert any(
        "rank_pattern['q_proj'] must be a positive integer, got 8.0" in p
        for p in problems_of(directory, base_spec)
    )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"r": -4}, "r must be a positive integer, got -4"),
        ({"r": "4"}, "r must be a positive integer, got '4' (str)"),
        ({"r": True}, "r must be a positive integer, got True (bool)"),
        ({"r": 10**400}, "exceeds the server's max_lora_rank 64"),
        ({"rank_pattern": {"q_proj": 0}}, "rank_pattern['q_proj'] must be a positive integer, got 0"),
        (
            {"rank_pattern": {"q_proj": 128}},
            "rank 128 exceeds the server's max_lora_rank 64 (in rank_pattern['q_proj'])",
        ),
        ({"lora_alpha": "16"}, "lora_alpha must be a finite number, got '16'"),
        ({"lora_alpha": True}, "lora_alpha must be a finite number, got True"),
        ({"lora_alpha": float("inf")}, "lora_alpha must be a finite number, got inf"),
        ({"lora_alpha": 10**400}, "lora_alpha must be a finite number, got 1000"),
        ({"alpha_pattern": {"q_proj": "16"}}, "alpha_pattern['q_proj'] must be a finite number, got '16'"),
        (
            {"rank_pattern": ["q_proj"]},
            "rank_pattern must be an object mapping module regexes to values, got list",
        ),
        ({"alpha_pattern": 3}, "alpha_pattern must be an object mapping module regexes to values, got int"),
        (
            {"alpha_pattern": {"q_proj(": 16}},
            "alpha_pattern pattern 'q_proj(' is not a valid regular expression",
        ),
        ({"rank_pattern": {"x" * 600: 4}}, "characters; the limit is 512"),
        ({"use_rslora": "yes"}, "use_rslora must be true or false, got 'yes'"),
        ({"base_model_name_or_path": {"a": 1}}, "base_model_name_or_path must be a string, got {'a': 1}"),
    ],
)
def test_bad_config_values_are_validation_problems(
    adapter: Path, base_spec: BaseModelSpec, changes: dict[str, object], fragment: str
) -> None:
    edit_config(adapter, **changes)
    problems = problems_of(adapter, base_spec)
    assert any(fragment in p for p in problems), problems


def test_every_config_problem_is_listed_at_once(adapter: Path, base_spec: BaseModelSpec) -> None:
    edit_config(adapter, r=0, lora_alpha="16", rank_pattern=["q_proj"], alpha_pattern={"(": 1})
    text = " | ".join(problems_of(adapter, base_spec))
    for fragment in ("got 0", "got '16'", "got list", "'(' is not a valid regular expression"):
        assert fragment in text


def test_echoed_values_are_cut_short(adapter: Path, base_spec: BaseModelSpec) -> None:
    edit_config(adapter, r="9" * 200_000, task_type="T" * 100_000)
    with pytest.raises(AdapterValidationError) as info:
        inspect_adapter(adapter, base_spec, 64)
    assert len(str(info.value)) < 2_000
    assert "(200002 characters)" in str(info.value)


def test_problem_lists_are_capped(adapter: Path, base_spec: BaseModelSpec) -> None:
    set_weights(adapter, lambda t: t.update({f"junk.{i}": torch.zeros(1) for i in range(500)}))
    problems = problems_of(adapter, base_spec)
    assert len(problems) == 21 and problems[-1] == "... and 480 more problems"


def test_patterns_match_as_peft_matches_them(
    tiny_model_dir: Path, tmp_path: Path, base_spec: BaseModelSpec
) -> None:
    # PEFT wraps the key in a group: (.*\.)?(q_proj|up_proj)$. Without the group, the
    # alternation split the anchor off and up_proj modules kept the default rank.
    directory = build_adapter(
        tiny_model_dir,
        tmp_path / "pat",
        rank=4,
        alpha=8,
        targets=("q_proj", "v_proj", "up_proj"),
        rank_pattern={"q_proj|up_proj": 8},
        alpha_pattern={"layers\\.1\\..*v_proj": 2},
    )
    spec = inspect_adapter(directory, base_spec, 64)
    ranks = {m: lora.rank for m, lora in spec.modules.items()}
    assert ranks["model.layers.0.mlp.up_proj"] == 8 and ranks["model.layers.1.self_attn.q_proj"] == 8
    assert ranks["model.layers.0.self_attn.v_proj"] == 4
    assert spec.modules["model.layers.1.self_attn.v_proj"].scaling == pytest.approx(2 / 4)
    assert spec.modules["model.layers.0.self_attn.v_proj"].scaling == pytest.approx(8 / 4)
    assert spec.modules["model.layers.0.self_attn.q_proj"].scaling == pytest.approx(8 / 8)


@pytest.mark.timeout(30)
def test_a_catastrophic_pattern_is_refused_not_a_hang(adapter: Path, base_spec: BaseModelSpec) -> None:
    # Exponential backtracking against every module name. The model\.(.|..|...)*X took
    # 18 s per LoadAdapter on a real model; this one takes over 20 s on the tiny model's names.
    edit_config(adapter, rank_pattern={r"m(.|..|...|....|.....)*X": 4})
    problems = problems_of(adapter, base_spec)
    assert any("took more than" in p and "simpler regex" in p for p in problems), problems


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"r": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (json.dumps({"peft_type": "LORA", "pad": "x" * (1 << 20)}), "larger than the limit of 1048576 bytes"),
        ('{"r": ' + "9" * 5000 + "}", "Exceeds the limit (4300 digits)"),
        ("\xff\xfe", "not readable JSON"),
        ('"LORA"', "must hold a JSON object, got str"),
        ("{}", "peft_type is None; only 'LORA' adapters are supported"),
        ("null", "must hold a JSON object, got NoneType"),
    ],
)
def test_hostile_config_files_are_validation_problems(
    adapter: Path, base_spec: BaseModelSpec, text: str, fragment: str
) -> None:
    (adapter / "adapter_config.json").write_text(text, encoding="latin-1" if "\xff" in text else "utf-8")
    assert any(fragment in p for p in problems_of(adapter, base_spec))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ((1 << 60).to_bytes(8, "little") + b"{}", "header; the limit is"),
        ((100).to_bytes(8, "little") + b"{}", "truncated?"),
        (b"\x01\x02", "only 2 bytes"),
        ((16).to_bytes(8, "little") + b"\xff" * 16, "not a valid safetensors file"),
    ],
)
def test_hostile_safetensors_are_validation_problems(
    adapter: Path, base_spec: BaseModelSpec, data: bytes, fragment: str
) -> None:
    (adapter / "adapter_model.safetensors").write_bytes(data)
    assert any(fragment in p for p in problems_of(adapter, base_spec))


def test_odd_tensor_shapes_and_dtypes_are_validation_problems(
    adapter: Path, base_spec: BaseModelSpec
) -> None:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        a_keys = sorted(k for k in tensors if "lora_A" in k)
        tensors[a_keys[0]] = torch.tensor(1.0)
        tensors[a_keys[1]] = tensors[a_keys[1]].to(torch.int8)

    set_weights(adapter, edit)
    text = " | ".join(problems_of(adapter, base_spec))
    assert "lora_A () / lora_B" in text and "has dtype 'I8'" in text


@pytest.mark.parametrize(("which", "value"), [("lora_B", float("nan")), ("lora_A", float("inf"))])
def test_non_finite_weights_are_refused_at_load(
    adapter: Path, base_spec: BaseModelSpec, which: str, value: float
) -> None:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        key = next(k for k in sorted(tensors) if "layers.1.mlp.up_proj" in k and which in k)
        tensors[key][1, 2] = value

    set_weights(adapter, edit)
    spec = inspect_adapter(adapter, base_spec, 64)  # the header is fine: caught when read
    with pytest.raises(AdapterValidationError) as info:
        load_lora_weights(spec, torch.float32)
    assert info.value.problems == [f"module 'model.layers.1.mlp.up_proj': {which} holds NaN or inf values"]
    with pytest.raises(AdapterValidationError):  # the same check for engines that read files themselves
        check_lora_weights(spec, torch.bfloat16)


def test_scaling_that_overflows_the_serving_dtype_is_refused(adapter: Path, base_spec: BaseModelSpec) -> None:
    edit_config(adapter, lora_alpha=4e6)  # scaling 1e6: fine in float32, inf in float16
    spec = inspect_adapter(adapter, base_spec, 64)
    assert load_lora_weights(spec, torch.float32)
    with pytest.raises(AdapterValidationError) as info:
        load_lora_weights(spec, torch.float16)
    assert "lora_B x scaling overflows to inf in torch.float16 (scaling 1e+06)" in str(info.value)


def test_metadata_symlink_out_of_the_directory_is_refused(
    adapter: Path, base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"password": "hunter2"}))
    (adapter / "adapter_metadata.json").symlink_to(secret)
    problems = problems_of(adapter, base_spec)
    assert problems == ["adapter_metadata.json is a symlink leading outside the adapter directory"]
    assert "hunter2" not in " ".join(problems)


def test_metadata_is_bounded_and_flat(adapter: Path, base_spec: BaseModelSpec) -> None:
    values: dict[str, object] = {f"k{i}": i for i in range(300)}
    values.update(
        {"purpose": "p" * 5000, "nested": {"a": 1}, "list": [1], "none": None, "y" * 500: "long key"}
    )
    (adapter / "adapter_metadata.json").write_text(json.dumps(values))
    metadata = inspect_adapter(adapter, base_spec, 64).metadata
    assert len(metadata) == 256 and all(isinstance(v, str) for v in metadata.values())
    assert metadata["k7"] == "7"
    (adapter / "adapter_metadata.json").write_text(json.dumps(dict(list(values.items())[300:])))
    metadata = inspect_adapter(adapter, base_spec, 64).metadata
    assert len(metadata["purpose"]) == 2049 and metadata["none"] == ""
    assert "nested" not in metadata and "list" not in metadata
    assert metadata["y" * 128] == "long key"
    (adapter / "adapter_metadata.json").write_text("[" * 30_000 + "]" * 30_000)  # ignored, like bad JSON
    assert inspect_adapter(adapter, base_spec, 64).metadata == {}
    (adapter / "adapter_metadata.json").write_text(json.dumps({"purpose": "x" * 70_000}))
    assert problems_of(adapter, base_spec) == [
        "adapter_metadata.json is larger than the limit of 65536 bytes"
    ]


@pytest.mark.parametrize(
    "path",
    ["good\x00", "a" * 256, "good/" + "b" * 300, "/".join(["d" * 200] * 25), "bad\ud800"],
    ids=["nul", "long-component", "long-nested-component", "long-path", "lone-surrogate"],
)
def test_paths_the_os_cannot_take_are_unsafe(path: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeAdapterPathError) as info:
        resolve_adapter_dir(path, [tmp_path])
    assert len(str(info.value)) < 1_000

"""Hostile adapter directories, generated: each one a real PEFT adapter with one thing wrong.

Why: adapter directories are untrusted input. A single bad one must give INVALID_ARGUMENT and
leave the server healthy, whatever the files hold: a float rank that slips past the cap, a
regex that backtracks for minutes, JSON nested 100k deep, NaN weights that would poison every
request using the adapter, symlinks out of the directory. Listing them in one place lets the
unit sweep (test_hostile_adapters.py) and an end-to-end fuzz against a live server use the same
cases.

API, kept simple on purpose::

    HOSTILE_KINDS: dict[str, Callable[[Path, Path], Path]]   # name -> builder
    path = HOSTILE_KINDS["nan_lora_b"](tiny_model_dir, target_dir)

A builder writes the adapter into ``target_dir`` (created; it must not exist yet or be empty)
and returns it. Files that a symlink points at are written next to it, as
``<target_dir.name>-outside-*``, outside the adapter directory. Everything is checked against
the server's default ``max_lora_rank`` (64). ``HOSTILE_PATHS`` are adapter paths (the
LoadAdapter ``path`` field) that must be refused before any file is read.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hybrid_assistant.testing.models import build_adapter

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
METADATA = "adapter_metadata.json"

MAX_RANK = 64
"""The server's default max_lora_rank, which the rank kinds exceed."""
BIG_RANK = 128

# A valid adapter is built once per (model, rank) and copied: building one loads the model.
_cache: dict[tuple[Path, int], Path] = {}
_cache_lock = threading.Lock()


def _base_adapter(model_dir: Path, rank: int = 4) -> Path:
    key = (Path(model_dir).resolve(), rank)
    with _cache_lock:
        if key not in _cache:
            scratch = Path(tempfile.mkdtemp(prefix="hostile-adapter-base-"))
            atexit.register(shutil.rmtree, scratch, True)
            _cache[key] = build_adapter(
                model_dir, scratch / "adapter", rank=rank, alpha=8, targets=("q_proj", "v_proj")
            )
        return _cache[key]


def _copy(model_dir: Path, target: Path, rank: int = 4) -> Path:
    shutil.copytree(_base_adapter(model_dir, rank), target, dirs_exist_ok=True)
    return target


def _edit_config(target: Path, **changes: Any) -> None:
    path = target / CONFIG
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))  # allow_nan: NaN and Infinity are written as such


def _with_config(**changes: Any) -> Callable[[Path, Path], Path]:
    def build(model_dir: Path, target: Path) -> Path:
        _copy(model_dir, target)
        _edit_config(target, **changes)
        return target

    return build


def _with_config_text(text: str) -> Callable[[Path, Path], Path]:
    def build(model_dir: Path, target: Path) -> Path:
        _copy(model_dir, target)
        (target / CONFIG).write_text(text)
        return target

    return build


def _edit_weights(target: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(target / WEIGHTS)
    edit(tensors)
    save_file(tensors, target / WEIGHTS, metadata={"format": "pt"})


def _outside(target: Path, suffix: str) -> Path:
    return target.parent / f"{target.name}-outside-{suffix}"


# ---------------------------------------------------------------- config values


def float_rank(model_dir: Path, target: Path) -> Path:
    """``r: 128.0`` with real rank-128 weights: a float must not slip past max_lora_rank 64."""
    _copy(model_dir, target, rank=BIG_RANK)
    _edit_config(target, r=float(BIG_RANK))
    return target


def float_rank_pattern(model_dir: Path, target: Path) -> Path:
    """The same bypass through rank_pattern: ``{"q_proj": 128.0}``, all modules rank 128."""
    _copy(model_dir, target, rank=BIG_RANK)
    _edit_config(target, rank_pattern={"q_proj": float(BIG_RANK)})
    return target


def rank_too_big(model_dir: Path, target: Path) -> Path:
    """An honest rank-128 adapter, above the server's max_lora_rank."""
    return _copy(model_dir, target, rank=BIG_RANK)


zero_rank = _with_config(r=0)
negative_rank = _with_config(r=-4)
string_rank = _with_config(r="4")
string_alpha = _with_config(lora_alpha="16")
bool_alpha = _with_config(lora_alpha=True)
nan_alpha = _with_config(lora_alpha=float("nan"))
rank_pattern_list = _with_config(rank_pattern=["q_proj"])
alpha_pattern_string = _with_config(alpha_pattern="q_proj")
bad_regex = _with_config(alpha_pattern={"q_proj(": 16})
# Exponential backtracking on every module name. The issue's ``model\.(.|..|...)*X`` took 18 s
# on a real model but only ~1 s on the tiny model's short names; this one takes over 20 s there.
catastrophic_regex = _with_config(rank_pattern={r"m(.|..|...|....|.....)*X": 4})
non_string_base_model = _with_config(base_model_name_or_path=["tiny-llama"])
# Long bad values (under the 1 MiB config cap): every echo of them in an error must be cut short.
huge_echo = _with_config(r="9" * 500_000, peft_type="X" * 100_000)

# ---------------------------------------------------------------- config files

deep_json = _with_config_text('{"r": ' + "[" * 100_000 + "]" * 100_000 + "}")
huge_config = _with_config_text(json.dumps({"peft_type": "LORA", "padding": "x" * (2 << 20)}))
non_object_json = _with_config_text("[1, 2, 3]")
empty_object_json = _with_config_text("{}")
not_json = _with_config_text("{not json")
huge_int_json = _with_config_text('{"r": ' + "9" * 10_000 + "}")


# ---------------------------------------------------------------- weights


def _poison(which: str, value: float) -> Callable[[Path, Path], Path]:
    def build(model_dir: Path, target: Path) -> Path:
        _copy(model_dir, target)

        def edit(tensors: dict[str, torch.Tensor]) -> None:
            key = sorted(k for k in tensors if f".{which}." in k)[0]
            tensors[key][0, 0] = value

        _edit_weights(target, edit)
        return target

    return build


nan_lora_b = _poison("lora_B", float("nan"))
inf_lora_a = _poison("lora_A", float("inf"))


def alpha_overflow(model_dir: Path, target: Path) -> Path:
    """Finite weights and a finite alpha whose scaling overflows to inf when folded into B."""
    _copy(model_dir, target)
    _edit_config(target, lora_alpha=1e308)
    return target


def wrong_shapes(model_dir: Path, target: Path) -> Path:
    _copy(model_dir, target)

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        for key in [k for k in tensors if ".lora_A." in k]:
            tensors[key] = torch.zeros(tensors[key].shape[0], 7)

    _edit_weights(target, edit)
    return target


def scalar_tensor(model_dir: Path, target: Path) -> Path:
    """A 0-d lora_A: shape checks must not index into an empty shape."""
    _copy(model_dir, target)

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        key = sorted(k for k in tensors if ".lora_A." in k)[0]
        tensors[key] = torch.tensor(1.0)

    _edit_weights(target, edit)
    return target


def int_weights(model_dir: Path, target: Path) -> Path:
    _copy(model_dir, target)

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        for key in list(tensors):
            tensors[key] = tensors[key].to(torch.int32)

    _edit_weights(target, edit)
    return target


def truncated_safetensors(model_dir: Path, target: Path) -> Path:
    _copy(model_dir, target)
    data = (target / WEIGHTS).read_bytes()
    (target / WEIGHTS).write_bytes(data[: len(data) // 2])
    return target


def huge_safetensors_header(model_dir: Path, target: Path) -> Path:
    """The 8-byte header length says 2**60: nothing may try to read or allocate that."""
    _copy(model_dir, target)
    (target / WEIGHTS).write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    return target


def garbage_safetensors(model_dir: Path, target: Path) -> Path:
    _copy(model_dir, target)
    (target / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"\xff" * 64)
    return target


def many_unexpected_tensors(model_dir: Path, target: Path) -> Path:
    """Thousands of problems: the error must stay short enough for a gRPC status."""
    _copy(model_dir, target)

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        for i in range(5000):
            tensors[f"junk.{i}.{'y' * 100}"] = torch.zeros(1)

    _edit_weights(target, edit)
    return target


def pickle_only(model_dir: Path, target: Path) -> Path:
    """Only adapter_model.bin, a pickle: loading one can run code, so it is refused unread."""
    _copy(model_dir, target)
    tensors = load_file(target / WEIGHTS)
    (target / WEIGHTS).unlink()
    torch.save(tensors, target / "adapter_model.bin")
    return target


# ---------------------------------------------------------------- paths out of the directory


def _symlink_out(name: str, content: bytes | None = None) -> Callable[[Path, Path], Path]:
    def build(model_dir: Path, target: Path) -> Path:
        _copy(model_dir, target)
        outside = _outside(target, name)
        outside.write_bytes(content if content is not None else (target / name).read_bytes())
        (target / name).unlink(missing_ok=True)
        (target / name).symlink_to(outside)
        return target

    return build


config_symlink_outside = _symlink_out(CONFIG)
weights_symlink_outside = _symlink_out(WEIGHTS)
metadata_symlink_outside = _symlink_out(METADATA, json.dumps({"secret": "outside the adapter"}).encode())


def huge_metadata(model_dir: Path, target: Path) -> Path:
    _copy(model_dir, target)
    (target / METADATA).write_text(json.dumps({"purpose": "x" * (1 << 20)}))
    return target


HOSTILE_KINDS: dict[str, Callable[[Path, Path], Path]] = {
    "float_rank": float_rank,
    "float_rank_pattern": float_rank_pattern,
    "rank_too_big": rank_too_big,
    "zero_rank": zero_rank,
    "negative_rank": negative_rank,
    "string_rank": string_rank,
    "string_alpha": string_alpha,
    "bool_alpha": bool_alpha,
    "nan_alpha": nan_alpha,
    "alpha_overflow": alpha_overflow,
    "rank_pattern_list": rank_pattern_list,
    "alpha_pattern_string": alpha_pattern_string,
    "bad_regex": bad_regex,
    "catastrophic_regex": catastrophic_regex,
    "non_string_base_model": non_string_base_model,
    "huge_echo": huge_echo,
    "deep_json": deep_json,
    "huge_config": huge_config,
    "huge_int_json": huge_int_json,
    "non_object_json": non_object_json,
    "empty_object_json": empty_object_json,
    "not_json": not_json,
    "nan_lora_b": nan_lora_b,
    "inf_lora_a": inf_lora_a,
    "wrong_shapes": wrong_shapes,
    "scalar_tensor": scalar_tensor,
    "int_weights": int_weights,
    "truncated_safetensors": truncated_safetensors,
    "huge_safetensors_header": huge_safetensors_header,
    "garbage_safetensors": garbage_safetensors,
    "many_unexpected_tensors": many_unexpected_tensors,
    "pickle_only": pickle_only,
    "config_symlink_outside": config_symlink_outside,
    "weights_symlink_outside": weights_symlink_outside,
    "metadata_symlink_outside": metadata_symlink_outside,
    "huge_metadata": huge_metadata,
}

#: Kinds that pass inspection (the header and JSON are fine) and must be refused when the
#: weights are read (adapters.peft_format.load_lora_weights).
REFUSED_AT_LOAD = frozenset({"nan_lora_b", "inf_lora_a", "alpha_overflow"})

#: LoadAdapter ``path`` values refused before any file is read (UnsafeAdapterPathError).
HOSTILE_PATHS: dict[str, str] = {
    "nul_byte": "alpha\x00.json",
    "long_component": "a" * 300,
    "long_path": "/".join(["d" * 200] * 25),
    "traversal": "../../../etc",
    "absolute_outside": "/etc",
    "blank": "  ",
}

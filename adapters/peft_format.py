"""Validate PEFT LoRA adapter directories against a base model, and read their weights.

Both engines and the registry use these checks, so an adapter that passes here loads
everywhere. Validation reads only JSON and the safetensors header; weights are read after.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from adapters.errors import AdapterValidationError
from adapters.paths import check_file_inside

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"
METADATA_FILE = "adapter_metadata.json"

_PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")

# LoRA variants and extras that change the forward pass beyond x @ A.T @ B.T * scaling.
_UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA (use_dora) is not supported",
    "lora_bias": "LoRA bias terms (lora_bias) are not supported",
    "use_qalora": "QA-LoRA (use_qalora) is not supported",
    "use_bdlora": "BD-LoRA (use_bdlora) is not supported",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D layers) is not supported",
}
_UNSUPPORTED_NON_EMPTY = {
    "modules_to_save": "modules_to_save (fully fine-tuned layers) is not supported",
    "target_parameters": "target_parameters (LoRA on raw parameters) is not supported",
    "trainable_token_indices": "trainable_token_indices is not supported",
    "layer_replication": "layer_replication is not supported",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) is not supported",
    "arrow_config": "Arrow routing (arrow_config) is not supported",
}


@dataclass(frozen=True)
class BaseModelSpec:
    """What an adapter must fit: the base model's names and its Linear layers' shapes."""

    name: str
    aliases: frozenset[str]
    # module path (as in model.named_modules()) -> (in_features, out_features)
    linear_shapes: Mapping[str, tuple[int, int]]

    @classmethod
    def from_model(cls, model: torch.nn.Module, name: str, aliases: set[str] | None = None) -> BaseModelSpec:
        """LoRA can target the Linear layers inside the decoder blocks (not the LM head)."""
        shapes = {
            path: (module.in_features, module.out_features)
            for path, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{path}"
        }
        return cls(name=name, aliases=frozenset({name, *(aliases or set())}), linear_shapes=shapes)

    @classmethod
    def from_config_dir(cls, model_dir: Path, name: str, aliases: set[str] | None = None) -> BaseModelSpec:
        """The same spec from a model directory's config alone: built on the meta device, no weights read."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return cls.from_model(model, name, aliases)

    def matches(self, base_model_name: str | None) -> bool:
        if not base_model_name:
            return True  # PEFT leaves it empty for adapters built from an in-memory model
        candidates = {base_model_name, base_model_name.rstrip("/").rsplit("/", 1)[-1]}
        known = set(self.aliases) | {a.rstrip("/").rsplit("/", 1)[-1] for a in self.aliases}
        return bool(candidates & known)


@dataclass(frozen=True)
class ModuleLora:
    """One LoRA pair as stored: A is (r, in), B is (out, r); scaling is alpha/r (or alpha/sqrt(r))."""

    rank: int
    scaling: float
    key_a: str
    key_b: str


@dataclass(frozen=True)
class AdapterSpec:
    """A validated adapter directory."""

    path: Path
    rank: int
    target_modules: tuple[str, ...]  # short names, e.g. ("q_proj", "v_proj")
    modules: Mapping[str, ModuleLora]  # full module path -> rank and scaling
    base_model: str
    fingerprint: str
    size_bytes: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    # PEFT matches rank/alpha patterns as a regex against the end of the module path.
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return value
    return default


def _read_json(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} is not readable JSON: {exc}")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name} must hold a JSON object, got {type(data).__name__}")
        return {}
    return data


def _check_config(config: Mapping[str, Any], base: BaseModelSpec, max_rank: int, problems: list[str]) -> None:
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; only 'LORA' adapters are supported")
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        problems.append(f"task_type is {task!r}; expected 'CAUSAL_LM'")
    for key, message in _UNSUPPORTED_FLAGS.items():
        if config.get(key):
            problems.append(message)
    for key, message in _UNSUPPORTED_NON_EMPTY.items():
        if config.get(key):
            problems.append(f"{message} (got {config.get(key)!r})")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')!r} is not supported; only 'none'")
    ranks = [config.get("r", 0), *(config.get("rank_pattern") or {}).values()]
    too_big = [r for r in ranks if isinstance(r, int) and r > max_rank]
    if too_big:
        problems.append(f"rank {max(too_big)} exceeds the server's max_lora_rank {max_rank}")
    if not base.matches(config.get("base_model_name_or_path")):
        problems.append(
            f"adapter was trained for base model {config.get('base_model_name_or_path')!r}, "
            f"but this server runs {base.name!r}"
        )


def _check_weights(
    weights_path: Path, config: Mapping[str, Any], base: BaseModelSpec, problems: list[str]
) -> dict[str, ModuleLora]:
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    try:
        with safe_open(str(weights_path), framework="pt") as handle:  # reads the header only
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                shapes[key] = {"shape": tuple(handle.get_slice(key).get_shape())}
    except Exception as exc:  # safetensors raises several types for corrupt files
        problems.append(f"{WEIGHTS_FILE} is not a valid safetensors file: {exc}")
        return {}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    keys: dict[tuple[str, str], str] = {}
    for key, info in shapes.items():
        match = _KEY.match(key.removeprefix(_PEFT_PREFIX))
        if match is None:
            problems.append(f"unexpected tensor {key!r}: only lora_A/lora_B weights of Linear layers load")
            continue
        pairs.setdefault(match["module"], {})[match["ab"]] = info["shape"]
        keys[(match["module"], match["ab"])] = key
    if not pairs:
        problems.append(f"{WEIGHTS_FILE} holds no LoRA weights")
    alpha = config.get("lora_alpha", 8)
    rank_default = config.get("r", 8)
    modules: dict[str, ModuleLora] = {}
    for module, ab in sorted(pairs.items()):
        if module not in base.linear_shapes:
            problems.append(f"target module {module!r} does not exist in base model {base.name!r}")
            continue
        if set(ab) != {"A", "B"}:
            problems.append(f"module {module!r} has lora_{''.join(sorted(ab))} but not both A and B")
            continue
        in_f, out_f = base.linear_shapes[module]
        a_shape, b_shape = ab["A"], ab["B"]
        rank = a_shape[0]
        if a_shape != (rank, in_f) or b_shape != (out_f, rank):
            problems.append(
                f"module {module!r}: lora_A {a_shape} / lora_B {b_shape} do not fit the base layer "
                f"({in_f} in, {out_f} out)"
            )
            continue
        expected = _pattern_value(config.get("rank_pattern") or {}, module, rank_default)
        if rank != expected:
            problems.append(f"module {module!r}: weights have rank {rank} but the config says {expected}")
            continue
        mod_alpha = _pattern_value(config.get("alpha_pattern") or {}, module, alpha)
        scaling = mod_alpha / math.sqrt(rank) if config.get("use_rslora") else mod_alpha / rank
        modules[module] = ModuleLora(
            rank=rank, scaling=float(scaling), key_a=keys[(module, "A")], key_b=keys[(module, "B")]
        )
    return modules


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_adapter(directory: Path, base: BaseModelSpec, max_rank: int) -> AdapterSpec:
    """Validate ``directory`` as a LoRA adapter for ``base``; report every problem at once."""
    problems: list[str] = []
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    config: dict[str, Any] = {}
    if not config_path.is_file():
        problems.append(f"{CONFIG_FILE} is missing")
    elif not check_file_inside(config_path, directory):
        problems.append(f"{CONFIG_FILE} is a symlink leading outside the adapter directory")
    else:
        config = _read_json(config_path, problems)
        _check_config(config, base, max_rank, problems)
    modules: dict[str, ModuleLora] = {}
    if not weights_path.is_file():
        if (directory / PICKLE_WEIGHTS_FILE).exists():
            problems.append(
                f"only {PICKLE_WEIGHTS_FILE} (pickle) is present: pickled weights are refused because "
                f"loading them can run code; convert to {WEIGHTS_FILE}"
            )
        else:
            problems.append(f"{WEIGHTS_FILE} is missing")
    elif not check_file_inside(weights_path, directory):
        problems.append(f"{WEIGHTS_FILE} is a symlink leading outside the adapter directory")
    elif config:
        modules = _check_weights(weights_path, config, base, problems)
    if problems:
        raise AdapterValidationError(directory, problems)
    metadata: dict[str, Any] = {}
    if (directory / METADATA_FILE).is_file():
        metadata = _read_json(directory / METADATA_FILE, [])
    return AdapterSpec(
        path=directory,
        rank=max(m.rank for m in modules.values()),
        target_modules=tuple(sorted({m.rsplit(".", 1)[-1] for m in modules})),
        modules=modules,
        base_model=str(config.get("base_model_name_or_path") or base.name),
        fingerprint=_sha256(weights_path),
        size_bytes=weights_path.stat().st_size,
        metadata=metadata,
    )


@dataclass(frozen=True)
class LoraPair:
    """Weights ready for inference: ``a`` is (r, in); ``b`` is (out, r) with the scaling folded in."""

    a: torch.Tensor
    b: torch.Tensor


def load_lora_weights(spec: AdapterSpec, dtype: torch.dtype) -> dict[str, LoraPair]:
    """Read the weights of a validated adapter; scaling is folded into B so inference skips it."""
    pairs: dict[str, LoraPair] = {}
    with safe_open(str(spec.path / WEIGHTS_FILE), framework="pt") as handle:
        for module, lora in spec.modules.items():
            a = handle.get_tensor(lora.key_a)
            b = handle.get_tensor(lora.key_b)
            pairs[module] = LoraPair(
                a=a.to(dtype).contiguous(), b=(b.to(torch.float32) * lora.scaling).to(dtype).contiguous()
            )
    return pairs

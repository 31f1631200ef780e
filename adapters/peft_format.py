"""Validate PEFT LoRA adapter directories against a base model, and read their weights.

Both engines and the registry use these checks, so an adapter that passes here loads
everywhere. Validation reads only JSON and the safetensors header; weights are read after.

Adapter directories are untrusted input (anyone who can write under an adapter root, or a
downloaded adapter), so every read is bounded and every failure is an
:class:`AdapterValidationError` that lists the problems, never some other exception that the
server would report as INTERNAL:

- files must be regular files inside the adapter directory (no symlink out), config and
  metadata files are size-capped before parsing, and JSON nested too deeply is a problem;
- ranks are positive ints (a float ``r: 512.0`` must not slip past ``max_lora_rank``), alphas
  are finite numbers;
- ``rank_pattern``/``alpha_pattern`` keys are regexes matched as PEFT matches them
  (``re.match(rf"(.*\\.)?({key})$", module)``), but with the ``regex`` package and a time
  budget: a catastrophically backtracking pattern is a problem, not a stalled LoadAdapter;
- weights are checked finite when they are read (:func:`load_lora_weights`): an adapter with
  NaN or inf in lora_A/lora_B would otherwise load fine and poison every request using it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex
import torch
from safetensors import SafetensorError, safe_open

from hybrid_assistant.adapters.errors import AdapterError, AdapterValidationError, show
from hybrid_assistant.adapters.paths import check_file_inside

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"
METADATA_FILE = "adapter_metadata.json"

MAX_CONFIG_BYTES = 1 << 20
"""adapter_config.json above this is refused unread (a real one is a few KB)."""
MAX_METADATA_BYTES = 64 << 10
"""adapter_metadata.json above this is refused unread."""
MAX_METADATA_KEYS = 256
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 2048
MAX_SAFETENSORS_HEADER_BYTES = 16 << 20
"""The safetensors JSON header; safetensors itself allows 100 MB. ~150 bytes per tensor."""
MAX_PATTERNS = 1024
"""Keys per rank_pattern / alpha_pattern (PEFT writes one per module at most)."""
MAX_PATTERN_CHARS = 512
PATTERN_MATCH_BUDGET_S = 2.0
"""Wall time for matching all rank/alpha patterns against all of an adapter's modules."""

_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}

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
    metadata: Mapping[str, str] = field(default_factory=dict)
    """adapter_metadata.json, flattened to bounded strings (see :func:`read_adapter_metadata`)."""


# ---------------------------------------------------------------- values


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rank_problem(label: str, value: object, max_rank: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{label} must be a positive integer, got {show(value)} ({type(value).__name__})"
    if value <= 0:
        return f"{label} must be a positive integer, got {show(value)}"
    if value > max_rank:
        where = "" if label == "r" else f" (in {label})"
        return f"rank {show(value)} exceeds the server's max_lora_rank {max_rank}{where}"
    return None


def _alpha(value: object) -> float | None:
    """``value`` as a finite float, or None if it is not a finite JSON number (bools and strings are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int with hundreds of digits
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------- patterns


@dataclass(frozen=True)
class _Patterns:
    """A rank_pattern or alpha_pattern: PEFT's regex keys, compiled for bounded-time matching."""

    name: str
    compiled: tuple[tuple[str, regex.Pattern[str]], ...]
    values: Mapping[str, Any]


class _PatternTimeout(Exception):
    def __init__(self, name: str, key: str) -> None:
        super().__init__(name, key)
        self.name = name
        self.key = key


def _compile_patterns(name: str, raw: object, problems: list[str]) -> _Patterns | None:
    """Check a pattern dict as PEFT would use it; None (with problems) if it cannot be used."""
    if raw is None:
        return _Patterns(name, (), {})
    if not isinstance(raw, dict):
        problems.append(
            f"{name} must be an object mapping module regexes to values, got {type(raw).__name__} {show(raw)}"
        )
        return None
    if len(raw) > MAX_PATTERNS:
        problems.append(f"{name} has {len(raw)} patterns; the limit is {MAX_PATTERNS}")
        return None
    compiled: list[tuple[str, regex.Pattern[str]]] = []
    ok = True
    for key in raw:
        if len(key) > MAX_PATTERN_CHARS:
            problems.append(
                f"{name} pattern {show(key)} is {len(key)} characters; the limit is {MAX_PATTERN_CHARS}"
            )
            ok = False
            continue
        # PEFT's own semantics (peft.utils.other.get_pattern_key): the key is a regex that must
        # match the end of the module path, after an optional dotted prefix.
        anchored = rf"(.*\.)?({key})$"
        try:
            re.compile(anchored)  # what PEFT accepts
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            problems.append(f"{name} pattern {show(key)} is not a valid regular expression: {exc}")
            ok = False
            continue
        try:
            compiled.append((key, regex.compile(anchored)))
        except (regex.error, RecursionError, OverflowError, ValueError) as exc:
            problems.append(f"{name} pattern {show(key)} is not supported: {exc}")
            ok = False
    return _Patterns(name, tuple(compiled), raw) if ok else None


def _pattern_value(patterns: _Patterns, module: str, default: Any, deadline: float) -> Any:
    """PEFT's lookup: the first key (in file order) whose regex matches ``module``, else ``default``."""
    for key, pattern in patterns.compiled:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _PatternTimeout(patterns.name, key)
        try:
            # concurrent: the GIL is released while matching (module names are immutable str).
            matched = pattern.match(module, timeout=remaining, concurrent=True)
        except TimeoutError:
            raise _PatternTimeout(patterns.name, key) from None
        if time.monotonic() > deadline:  # regex checks its timeout now and then: it may overshoot
            raise _PatternTimeout(patterns.name, key)
        if matched:
            return patterns.values[key]
    return default


# ---------------------------------------------------------------- files


def _read_bounded(path: Path, limit: int, problems: list[str]) -> bytes | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        problems.append(f"{path.name} cannot be read: {exc}")
        return None
    if len(data) > limit:
        problems.append(f"{path.name} is larger than the limit of {limit} bytes")
        return None
    return data


def _parse_json(name: str, data: bytes, problems: list[str]) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        problems.append(f"{name} is not readable JSON: nested too deeply")
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or an int of too many digits
        problems.append(f"{name} is not readable JSON: {show(str(exc))}")
    return None


def _read_json(path: Path, limit: int, problems: list[str]) -> dict[str, Any] | None:
    """The file's JSON object, or None with the reason in ``problems``."""
    data = _read_bounded(path, limit, problems)
    if data is None:
        return None
    parse_problems: list[str] = []
    value = _parse_json(path.name, data, parse_problems)
    if parse_problems:
        problems += parse_problems
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} must hold a JSON object, got {type(value).__name__}")
        return None
    return value


def _metadata_value(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        try:
            text = str(value)
        except ValueError:  # an int over Python's digit limit
            return None
        return text if len(text) <= MAX_METADATA_VALUE_CHARS else text[:MAX_METADATA_VALUE_CHARS] + "…"
    return None  # nested objects and lists: metadata is one flat object


def read_adapter_metadata(directory: Path) -> tuple[dict[str, str], list[str]]:
    """``adapter_metadata.json`` as bounded strings, and the problems that refuse the adapter.

    Metadata is optional and informative: a missing file, malformed JSON, a non-object or
    nested values give no problem (the bad parts are left out, logged). What refuses the
    adapter is what would let it read or serve something it should not: a file that leads
    outside the directory, or one over :data:`MAX_METADATA_BYTES`. At most
    :data:`MAX_METADATA_KEYS` keys are kept, keys and values are cut to
    :data:`MAX_METADATA_KEY_CHARS` and :data:`MAX_METADATA_VALUE_CHARS` characters.
    """
    path = directory / METADATA_FILE
    problems: list[str] = []
    try:
        present = path.is_file() or path.is_symlink()
    except OSError:
        present = True
    if not present:
        return {}, problems
    if not check_file_inside(path, directory):
        problems.append(f"{METADATA_FILE} is a symlink leading outside the adapter directory")
        return {}, problems
    if not path.is_file():
        return {}, problems  # a dangling link or a directory: nothing to show
    data = _read_bounded(path, MAX_METADATA_BYTES, problems)
    if data is None:
        return {}, problems
    ignored: list[str] = []
    value = _parse_json(METADATA_FILE, data, ignored)
    if ignored or not isinstance(value, dict):
        log.warning("adapter %s: %s ignored: %s", directory, METADATA_FILE, ignored or "not a JSON object")
        return {}, problems
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if len(metadata) >= MAX_METADATA_KEYS:
            break
        text = _metadata_value(item)
        if text is not None:
            metadata[key[:MAX_METADATA_KEY_CHARS]] = text
    return metadata, problems


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class _LoraSettings:
    """The config values that decide each module's rank and scaling, all checked."""

    r: int
    alpha: float
    use_rslora: bool
    rank_pattern: _Patterns
    alpha_pattern: _Patterns


def _check_config(
    config: Mapping[str, Any], base: BaseModelSpec, max_rank: int, problems: list[str]
) -> _LoraSettings | None:
    """Append every problem; return the rank/alpha settings if they are usable (ranks may be too big)."""
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {show(config.get('peft_type'))}; only 'LORA' adapters are supported")
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        problems.append(f"task_type is {show(task)}; expected 'CAUSAL_LM'")
    for key, message in _UNSUPPORTED_FLAGS.items():
        if config.get(key):
            problems.append(message)
    for key, message in _UNSUPPORTED_NON_EMPTY.items():
        if config.get(key):
            problems.append(f"{message} (got {show(config.get(key))})")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={show(config.get('bias'))} is not supported; only 'none'")
    usable = True

    r = config.get("r", 8)
    rank_problem = _rank_problem("r", r, max_rank)
    if rank_problem:
        problems.append(rank_problem)
        usable = usable and _is_int(r) and r > 0  # too big: still compared with the weights
    alpha = _alpha(config.get("lora_alpha", 8))
    if alpha is None:
        problems.append(f"lora_alpha must be a finite number, got {show(config.get('lora_alpha'))}")
        usable = False
    use_rslora = config.get("use_rslora", False)
    if use_rslora is not None and not isinstance(use_rslora, bool):
        problems.append(f"use_rslora must be true or false, got {show(use_rslora)}")
        usable = False

    rank_pattern = _compile_patterns("rank_pattern", config.get("rank_pattern"), problems)
    if rank_pattern is not None:
        for key, value in rank_pattern.values.items():
            pattern_problem = _rank_problem(f"rank_pattern[{show(key)}]", value, max_rank)
            if pattern_problem:
                problems.append(pattern_problem)
                usable = usable and _is_int(value) and value > 0
    alpha_pattern = _compile_patterns("alpha_pattern", config.get("alpha_pattern"), problems)
    if alpha_pattern is not None:
        for key, value in alpha_pattern.values.items():
            if _alpha(value) is None:
                problems.append(f"alpha_pattern[{show(key)}] must be a finite number, got {show(value)}")
                usable = False

    base_name = config.get("base_model_name_or_path")
    if base_name is not None and not isinstance(base_name, str):
        problems.append(f"base_model_name_or_path must be a string, got {show(base_name)}")
    elif not base.matches(base_name):
        problems.append(
            f"adapter was trained for base model {show(base_name)}, but this server runs {base.name!r}"
        )
    if not usable or rank_pattern is None or alpha_pattern is None or alpha is None:
        return None
    return _LoraSettings(int(r), alpha, bool(use_rslora), rank_pattern, alpha_pattern)


# ---------------------------------------------------------------- weights


def _check_header(weights_path: Path, problems: list[str]) -> bool:
    """The 8-byte length and the header size, before safetensors parses (up to 100 MB of) JSON."""
    try:
        size = weights_path.stat().st_size
        with weights_path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        problems.append(f"{WEIGHTS_FILE} cannot be read: {exc}")
        return False
    if len(head) < 8:
        problems.append(f"{WEIGHTS_FILE} is not a valid safetensors file: only {size} bytes")
        return False
    header_len = int.from_bytes(head, "little")
    if header_len > MAX_SAFETENSORS_HEADER_BYTES:
        problems.append(
            f"{WEIGHTS_FILE} has a {header_len}-byte header; the limit is {MAX_SAFETENSORS_HEADER_BYTES}"
        )
        return False
    if 8 + header_len > size:
        problems.append(
            f"{WEIGHTS_FILE} is not a valid safetensors file: its header needs {header_len} bytes "
            f"but the file has {size} (truncated?)"
        )
        return False
    return True


def _check_weights(
    weights_path: Path, settings: _LoraSettings | None, base: BaseModelSpec, problems: list[str]
) -> dict[str, ModuleLora]:
    """Shapes, dtypes and ranks from the header; rank and scaling per module when ``settings`` are usable."""
    if not _check_header(weights_path, problems):
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with safe_open(str(weights_path), framework="pt") as handle:  # reads the header only
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensor = handle.get_slice(key)
                dtype = tensor.get_dtype()
                if dtype not in _FLOAT_DTYPES:
                    problems.append(
                        f"tensor {show(key)} has dtype {show(dtype)}; LoRA weights must be one of "
                        f"{sorted(_FLOAT_DTYPES)}"
                    )
                shapes[key] = tuple(tensor.get_shape())
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError) as exc:
        problems.append(f"{WEIGHTS_FILE} is not a valid safetensors file: {show(str(exc))}")
        return {}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    keys: dict[tuple[str, str], str] = {}
    for key, shape in shapes.items():
        match = _KEY.match(key.removeprefix(_PEFT_PREFIX))
        if match is None:
            problems.append(
                f"unexpected tensor {show(key)}: only lora_A/lora_B weights of Linear layers load"
            )
            continue
        pairs.setdefault(match["module"], {})[match["ab"]] = shape
        keys[(match["module"], match["ab"])] = key
    if not pairs:
        problems.append(f"{WEIGHTS_FILE} holds no LoRA weights")
    modules: dict[str, ModuleLora] = {}
    deadline = time.monotonic() + PATTERN_MATCH_BUDGET_S
    for module, ab in sorted(pairs.items()):
        if module not in base.linear_shapes:
            problems.append(f"target module {show(module)} does not exist in base model {base.name!r}")
            continue
        if set(ab) != {"A", "B"}:
            problems.append(f"module {module!r} has lora_{''.join(sorted(ab))} but not both A and B")
            continue
        in_f, out_f = base.linear_shapes[module]
        a_shape, b_shape = ab["A"], ab["B"]
        rank = a_shape[0] if len(a_shape) == 2 else -1
        if rank < 1 or a_shape != (rank, in_f) or b_shape != (out_f, rank):
            problems.append(
                f"module {module!r}: lora_A {show(a_shape)} / lora_B {show(b_shape)} do not fit the base "
                f"layer ({in_f} in, {out_f} out)"
            )
            continue
        if settings is None:
            continue  # the config's problems are listed; no rank or scaling to compare against
        try:
            expected = _pattern_value(settings.rank_pattern, module, settings.r, deadline)
            mod_alpha = _pattern_value(settings.alpha_pattern, module, settings.alpha, deadline)
        except _PatternTimeout as exc:
            problems.append(
                f"{exc.name} pattern {show(exc.key)} (with the other patterns) took more than "
                f"{PATTERN_MATCH_BUDGET_S:g} s to match the base model's module names: use a simpler regex"
            )
            settings = None
            continue
        if rank != expected:
            problems.append(f"module {module!r}: weights have rank {rank} but the config says {expected}")
            continue
        alpha = float(mod_alpha)
        scaling = alpha / math.sqrt(rank) if settings.use_rslora else alpha / rank
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
    """Validate ``directory`` as a LoRA adapter for ``base``; report every problem at once.

    Raises :class:`AdapterValidationError` for anything wrong with the directory's contents,
    whatever the files hold: no other exception escapes for hostile input.
    """
    try:
        return _inspect(directory, base, max_rank)
    except AdapterError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        # Every known hostile input is caught where it is read; this is the net for the rest.
        log.warning(
            "adapter %s: unexpected %s during validation", directory, type(exc).__name__, exc_info=exc
        )
        raise AdapterValidationError(
            directory, [f"the adapter could not be read: {type(exc).__name__}: {show(str(exc))}"]
        ) from exc


def _inspect(directory: Path, base: BaseModelSpec, max_rank: int) -> AdapterSpec:
    problems: list[str] = []
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    config: dict[str, Any] | None = None
    settings: _LoraSettings | None = None
    if not config_path.is_file():
        problems.append(f"{CONFIG_FILE} is missing")
    elif not check_file_inside(config_path, directory):
        problems.append(f"{CONFIG_FILE} is a symlink leading outside the adapter directory")
    else:
        config = _read_json(config_path, MAX_CONFIG_BYTES, problems)
        if config is not None:
            settings = _check_config(config, base, max_rank, problems)
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
    elif config is not None:
        modules = _check_weights(weights_path, settings, base, problems)
    metadata, metadata_problems = read_adapter_metadata(directory)
    problems += metadata_problems
    if not modules and not problems:  # every path above that leaves no module lists why; keep it so
        problems.append(f"{WEIGHTS_FILE} holds no usable LoRA module")
    if problems or config is None:
        raise AdapterValidationError(directory, problems)
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


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def load_lora_weights(spec: AdapterSpec, dtype: torch.dtype) -> dict[str, LoraPair]:
    """Read the weights of a validated adapter; scaling is folded into B so inference skips it.

    Every tensor must be finite as stored and as served (after scaling and the cast to
    ``dtype``, where a large value can overflow to inf): a NaN in one adapter would otherwise
    reach the sampler of every request that uses it. Raises AdapterValidationError naming
    each bad module.
    """
    pairs: dict[str, LoraPair] = {}
    problems: list[str] = []
    try:
        with safe_open(str(spec.path / WEIGHTS_FILE), framework="pt") as handle:
            for module, lora in spec.modules.items():
                a_raw = handle.get_tensor(lora.key_a)
                b_raw = handle.get_tensor(lora.key_b)
                stored = [n for n, t in (("lora_A", a_raw), ("lora_B", b_raw)) if not _finite(t)]
                if stored:
                    verb = "hold" if len(stored) > 1 else "holds"
                    problems.append(f"module {module!r}: {' and '.join(stored)} {verb} NaN or inf values")
                    continue
                a = a_raw.to(dtype).contiguous()
                b = (b_raw.to(torch.float32) * lora.scaling).to(dtype).contiguous()
                served = [n for n, t in (("lora_A", a), ("lora_B x scaling", b)) if not _finite(t)]
                if served:
                    problems.append(
                        f"module {module!r}: {' and '.join(served)} overflow{'' if len(served) > 1 else 's'} "
                        f"to inf in {dtype} "
                        f"(scaling {lora.scaling:g})"
                    )
                    continue
                pairs[module] = LoraPair(a=a, b=b)
    except (SafetensorError, OSError, ValueError) as exc:  # changed on disk since validation
        raise AdapterValidationError(
            spec.path, [f"{WEIGHTS_FILE} could not be read: {show(str(exc))}"]
        ) from exc
    if problems:
        raise AdapterValidationError(spec.path, problems)
    return pairs


def check_lora_weights(spec: AdapterSpec, dtype: torch.dtype) -> None:
    """The checks of :func:`load_lora_weights`, weights discarded: for an engine (vLLM) that reads
    the adapter files itself but must still refuse NaN or inf before a request can use them."""
    load_lora_weights(spec, dtype)

